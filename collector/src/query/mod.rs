//! The read side: parameters shared by every query endpoint and the CLI, and the logs cursor.

pub mod api;
pub mod cursor;
pub mod filters;
pub mod latency;
pub mod metrics;
