//! Logging set-up and the collector's own counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: human-readable by default, one JSON object per line with `json`.
/// The level comes from `RUST_LOG` (default `info`).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // A second init (tests, benchmark) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters shared by handlers and writers.
#[derive(Debug, Default)]
pub struct Stats {
    pub events_accepted: Counter,
    pub events_rejected: Counter,
    pub batches: Counter,
    pub bodies_undecodable: Counter,
    pub overload_responses: Counter,
    pub rows_written: Counter,
    pub dead_letters: Counter,
    pub flushes: Counter,
    pub flush_micros: Counter,
    pub write_retries: Counter,
}

impl Stats {
    pub fn record_flush(&self, _rows: usize, took: Duration) {
        self.flushes.add(1);
        self.flush_micros.add(took.as_micros() as u64);
    }
}
