//! From validated events to committed rows: batch → queue → writer → COPY (+ rollup deltas) → compaction.

pub mod batch;
pub mod compact;
pub mod copy;
pub mod queue;
pub mod rollup;
pub mod writer;

/// Runs CPU-heavy work (tens of milliseconds) without stalling the other tasks on this runtime thread, such as
/// the HTTP handlers whose acknowledgement latency is measured: on a multi-threaded runtime the thread's other
/// tasks move elsewhere meanwhile. (A current-thread runtime, as in single-threaded tests, just runs it.)
pub fn cpu_bound<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
