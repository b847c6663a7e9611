//! The free-space guard of the private PostgreSQL's disk: below `COLLECTOR_DB_MIN_FREE_BYTES`, ingest is
//! answered 503 before the database fills its disk (PostgreSQL stops, and may not start again, on a full one).
//! Measured every second by a task, so a request only reads a number.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Free bytes on the disk of `path`, against a floor.
#[derive(Debug)]
pub struct DiskGuard {
    path: PathBuf,
    min_free: u64,
    free: AtomicU64,
}

/// The database's disk is short of room: the request is refused (503), not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the private PostgreSQL's disk has {free} bytes free, under the {min} it keeps free \
     (COLLECTOR_DB_MIN_FREE_BYTES); retry when space is freed"
)]
pub struct DiskLow {
    pub free: u64,
    pub min: u64,
}

impl DiskGuard {
    pub fn new(path: PathBuf, min_free: u64) -> Arc<DiskGuard> {
        let guard = Arc::new(DiskGuard {
            path,
            min_free,
            free: AtomicU64::new(u64::MAX),
        });
        guard.measure();
        guard
    }

    pub fn check(&self) -> Result<(), DiskLow> {
        let free = self.free.load(Ordering::Relaxed);
        if free < self.min_free {
            return Err(DiskLow {
                free,
                min: self.min_free,
            });
        }
        Ok(())
    }

    fn measure(&self) {
        if let Ok(st) = rustix::fs::statvfs(&self.path) {
            self.free
                .store(st.f_bavail.saturating_mul(st.f_frsize), Ordering::Relaxed);
        }
    }

    /// Measures every second until `stop`; says so once when the floor is crossed either way.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut low = false;
        loop {
            self.measure();
            match (self.check(), low) {
                (Err(e), false) => {
                    tracing::error!(path = %self.path.display(), "{e}: ingest is answered 503");
                    low = true;
                }
                (Ok(()), true) => {
                    tracing::info!(path = %self.path.display(), "The database's disk has room again");
                    low = false;
                }
                _ => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
