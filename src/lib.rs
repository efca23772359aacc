//! runtally (work in progress)
pub mod config;
pub mod error;
pub mod model;
pub mod rows;
pub mod store;
