//! The write side, from validated events to committed rows, with its own SQL:
//! [`intake`] (a body → a [`batch`]: events → COPY rows, rejects kept raw) → [`spool`] (on disk before the
//! answer) → [`queue`] (bounded hand-off) → [`writer`] (one COPY
//! transaction per flush: [`copy`] the rows, [`deltas`] their rollup contributions written by [`store`], the
//! dead letters and the flush in the [`ledger`]) → [`compact`] (deltas merged into the rollups, [`top_lists`]
//! made) and [`seal`] (source × destination pairs rolled up from the raw events); [`tail`] hands committed
//! events to the live tail's followers; [`cost`] sums what each step's statements took.

pub mod batch;
pub mod budget;
pub mod compact;
pub mod copy;
pub mod cost;
pub mod dedup;
pub mod deltas;
pub mod disk;
pub mod intake;
pub mod ledger;
pub mod queue;
pub mod retention;
pub mod seal;
pub mod spool;
pub mod store;
pub mod tail;
pub mod top_lists;
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
