//! From validated events to committed rows: batch → queue → writer → COPY.

pub mod batch;
pub mod copy;
pub mod queue;
pub mod rollup;
pub mod writer;
