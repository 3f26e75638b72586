pub mod fleet;
pub mod moto;
pub mod s3;
pub mod sim;
pub mod yard;
