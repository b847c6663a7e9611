//! From validated events to committed rows: batch → queue → writer → COPY (+ rollup deltas) → compaction.

pub mod batch;
pub mod compact;
pub mod copy;
pub mod queue;
pub mod rollup;
pub mod writer;
