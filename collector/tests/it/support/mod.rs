pub mod app;
pub mod binary;
pub mod browser;
pub mod citus;
pub mod data;
pub mod pg;

pub use app::{spawn_app, spawn_app_at, spawn_app_with, TestApp};
