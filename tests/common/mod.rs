pub mod fleet;
pub mod s3;
pub mod sim;
