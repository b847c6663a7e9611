//! What the write side and the read side of the rollups share: the catalog of shapes and the latency
//! histogram. Neither side imports the other; both import this.

pub mod catalog;
pub mod histogram;
