pub mod db;
pub mod fleet;
pub mod moto;
pub mod nm;
pub mod s3;
pub mod sim;
pub mod wan;
pub mod yard;
