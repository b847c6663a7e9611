//! Enrichment at ingest, between validation and encoding: where each address is and who owns its network,
//! stored in typed columns beside the addresses (`src_country`, `src_city`, `src_asn`, `src_as_org`, and the
//! same for `dst_`), so that every question can group or filter by them. Existing rows are not rewritten:
//! enrichment applies from when it is turned on.

pub mod geo;
pub mod redact;
pub mod threat;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use geo::{Geo, GeoFiles, Place};
pub use redact::{RedactRules, Redactor};
pub use threat::{ThreatFile, Threats};

/// What enrichment found for one event: its addresses' places and the threat list it matched.
#[derive(Debug, Clone, Copy, Default)]
pub struct Enriched<'a> {
    pub src: Option<&'a Place>,
    pub dst: Option<&'a Place>,
    /// The first list holding the source address, else the destination's.
    pub threat: Option<&'a str>,
}

/// A file's modification time and size, to notice that it changed (`None` when it cannot be read).
pub(crate) type Stamp = Option<(SystemTime, u64)>;

pub(crate) fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Runs `reload(false)` every `every` and `reload(true)` on SIGHUP, off the async workers, until cancelled.
async fn watch(
    every: Duration,
    shutdown: CancellationToken,
    reload: impl Fn(bool) + Send + Sync + 'static,
) {
    let reload = Arc::new(reload);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let all = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let reload = reload.clone();
        let _ = tokio::task::spawn_blocking(move || reload(all)).await;
    }
}
