pub mod db;
pub mod fleet;
pub mod many;
pub mod moto;
pub mod nm;
pub mod s3;
pub mod sim;
pub mod yard;
