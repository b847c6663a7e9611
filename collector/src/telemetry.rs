//! Logging set-up and the collector's own counters.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// A fixed-bucket histogram (Prometheus `le` semantics: each bucket counts observations ≤ its bound).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths, so it can be an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Seconds one spool write and its fsync take (a group commit), from 0.1 ms to 1 s.
pub const SPOOL_SYNC_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Seconds a COPY transaction takes, from 1 ms to 30 s.
const COPY_SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Rows in one COPY, up to well past the default flush size.
const COPY_ROWS: &[f64] = &[
    1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0,
];

/// Seconds from a POST /ingest's request head to its answer, finely from 0.5 to 10 ms where acknowledgements
/// of ordinary batches fall.
const INGEST_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters shared by handlers and writers.
#[derive(Debug)]
pub struct Stats {
    /// Events accepted and rejected per producer: one short lock per batch, not per event.
    pub by_producer: Mutex<HashMap<Arc<str>, (u64, u64)>>,
    /// Responses by HTTP status, every route.
    pub http_responses: Mutex<BTreeMap<u16, u64>>,
    pub copy_seconds: Histogram,
    pub copy_rows: Histogram,
    pub ingest_seconds: Histogram,
    pub events_accepted: Counter,
    pub events_rejected: Counter,
    pub batches: Counter,
    pub bodies_undecodable: Counter,
    pub overload_responses: Counter,
    pub rows_written: Counter,
    pub dead_letters: Counter,
    pub write_retries: Counter,
    /// Batches answered as duplicates of one already accepted.
    pub duplicates: Counter,
    /// Retention: daily partitions dropped, default-partition rows and dead letters deleted.
    pub partitions_dropped: Counter,
    pub retention_rows_deleted: Counter,
    pub dead_letters_pruned: Counter,
    pub rollup_rows_pruned: Counter,
    /// Flushes that have failed three times or more and are being retried now; with the last error.
    pub failing_flushes: Mutex<(u64, Option<String>)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            by_producer: Mutex::default(),
            http_responses: Mutex::default(),
            copy_seconds: Histogram::new(COPY_SECONDS),
            copy_rows: Histogram::new(COPY_ROWS),
            ingest_seconds: Histogram::new(INGEST_SECONDS),
            events_accepted: Counter::default(),
            events_rejected: Counter::default(),
            batches: Counter::default(),
            bodies_undecodable: Counter::default(),
            overload_responses: Counter::default(),
            rows_written: Counter::default(),
            dead_letters: Counter::default(),
            write_retries: Counter::default(),
            duplicates: Counter::default(),
            partitions_dropped: Counter::default(),
            retention_rows_deleted: Counter::default(),
            dead_letters_pruned: Counter::default(),
            rollup_rows_pruned: Counter::default(),
            failing_flushes: Mutex::default(),
        }
    }
}

impl Stats {
    pub fn record_flush(&self, rows: usize, took: Duration) {
        self.copy_seconds.observe(took.as_secs_f64());
        self.copy_rows.observe(rows as f64);
    }

    pub fn record_batch(&self, producer: &Arc<str>, accepted: usize, rejected: usize) {
        self.batches.add(1);
        self.events_accepted.add(accepted as u64);
        self.events_rejected.add(rejected as u64);
        if let Ok(mut map) = self.by_producer.lock() {
            let e = map.entry(producer.clone()).or_default();
            e.0 += accepted as u64;
            e.1 += rejected as u64;
        }
    }

    /// A flush failed again (`new`: for the first time counted here); `error` is its latest failure.
    pub fn flush_failing(&self, new: bool, error: String) {
        if let Ok(mut f) = self.failing_flushes.lock() {
            f.0 += u64::from(new);
            f.1 = Some(error);
        }
    }

    /// A flush counted by [`Stats::flush_failing`] has ended.
    pub fn flush_recovered(&self) {
        if let Ok(mut f) = self.failing_flushes.lock() {
            f.0 = f.0.saturating_sub(1);
            if f.0 == 0 {
                f.1 = None;
            }
        }
    }

    /// Flushes failing repeatedly now, and the latest error.
    pub fn failing(&self) -> (u64, Option<String>) {
        self.failing_flushes
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    pub fn record_response(&self, status: u16) {
        if let Ok(mut map) = self.http_responses.lock() {
            *map.entry(status).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every counter; `queue` is (depth, capacity) in events. The accepted and
    /// rejected events are labelled by producer only `by_producer` (a caller with a key): producer names are not
    /// for anyone who can reach the port.
    pub fn render_prometheus(&self, queue: (usize, usize), by_producer: bool) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        if let Ok(map) = self.by_producer.lock() {
            let mut rows: Vec<_> = map.iter().collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (name, help)) in [
                (
                    "collector_events_accepted_total",
                    "Events accepted (queued for COPY), by producer when asked with an API key.",
                ),
                (
                    "collector_events_rejected_total",
                    "Events rejected and dead-lettered, by producer when asked with an API key.",
                ),
            ]
            .iter()
            .enumerate()
            {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                let value = |(acc, rej): &(u64, u64)| if i == 0 { *acc } else { *rej };
                if by_producer {
                    for (producer, counts) in &rows {
                        let _ = writeln!(
                            out,
                            "{name}{{producer=\"{}\"}} {}",
                            label(producer),
                            value(counts)
                        );
                    }
                } else {
                    let total: u64 = rows.iter().map(|(_, counts)| value(counts)).sum();
                    let _ = writeln!(out, "{name} {total}");
                }
            }
        }
        counter(
            &mut out,
            "collector_batches_total",
            "Request bodies accepted.",
            self.batches.get(),
        );
        counter(
            &mut out,
            "collector_bodies_undecodable_total",
            "Request bodies answered 400/413 and dead-lettered whole.",
            self.bodies_undecodable.get(),
        );
        counter(
            &mut out,
            "collector_overload_responses_total",
            "Batches answered 503 because the queue was full.",
            self.overload_responses.get(),
        );
        counter(
            &mut out,
            "collector_rows_written_total",
            "Rows committed to comm_logs.",
            self.rows_written.get(),
        );
        counter(
            &mut out,
            "collector_dead_letters_total",
            "Rows committed to ingest_rejects.",
            self.dead_letters.get(),
        );
        counter(
            &mut out,
            "collector_duplicate_batches_total",
            "Batches answered 202 duplicate: a retry of one already accepted, stored once.",
            self.duplicates.get(),
        );
        counter(
            &mut out,
            "collector_retention_partitions_dropped_total",
            "Daily partitions of comm_logs dropped past COLLECTOR_RETENTION_DAYS.",
            self.partitions_dropped.get(),
        );
        counter(
            &mut out,
            "collector_retention_rows_deleted_total",
            "Rows of the default partition deleted past COLLECTOR_RETENTION_DAYS.",
            self.retention_rows_deleted.get(),
        );
        counter(
            &mut out,
            "collector_retention_dead_letters_pruned_total",
            "Dead letters deleted past COLLECTOR_RETENTION_DAYS.",
            self.dead_letters_pruned.get(),
        );
        counter(
            &mut out,
            "collector_retention_rollup_rows_deleted_total",
            "Rollup rows deleted past their tier's retention (COLLECTOR_ROLLUP_*_DAYS).",
            self.rollup_rows_pruned.get(),
        );
        counter(
            &mut out,
            "collector_write_retries_total",
            "COPY transactions retried after a failure.",
            self.write_retries.get(),
        );
        let _ = writeln!(
            out,
            "# HELP collector_failing_flushes Flushes that failed three times or more and are being retried.\n\
             # TYPE collector_failing_flushes gauge\ncollector_failing_flushes {}",
            self.failing().0
        );
        let _ = writeln!(
            out,
            "# HELP collector_queue_depth_events Events acknowledged and not yet committed.\n\
             # TYPE collector_queue_depth_events gauge\ncollector_queue_depth_events {}\n\
             # HELP collector_queue_capacity_events Queue capacity.\n\
             # TYPE collector_queue_capacity_events gauge\ncollector_queue_capacity_events {}",
            queue.0, queue.1
        );
        self.copy_seconds.render(
            &mut out,
            "collector_copy_duration_seconds",
            "Duration of one COPY transaction.",
        );
        self.copy_rows.render(
            &mut out,
            "collector_copy_rows",
            "Rows in one COPY transaction.",
        );
        self.ingest_seconds.render(
            &mut out,
            "collector_ingest_duration_seconds",
            "POST /ingest from its request head to its answer (body read, decode, validation, queueing; 401, 429 \
             and 503 answers included), as the collector sees it.",
        );
        if let Ok(map) = self.http_responses.lock() {
            let name = "collector_http_responses_total";
            let _ = writeln!(
                out,
                "# HELP {name} HTTP responses by status code.\n# TYPE {name} counter"
            );
            for (status, n) in map.iter() {
                let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
            }
        }
        out
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
