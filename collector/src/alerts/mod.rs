//! Alerts: rules watched from the rollups through the read API, a state per rule and group, incidents, and
//! signed webhook notifications kept in an outbox.
//!
//! - [`rules`]: what a rule is, its validation and its SQL.
//! - [`anomaly`]: the robust score `anomaly` rules compare.
//! - [`state`]: the steps of one group (ok → pending → firing → resolving → ok).
//! - [`evaluate`]: the cycle, once at a time across collectors, recording steps, incidents and notifications.
//! - [`incidents`]: listing, acknowledging, resolving and commenting on incidents.
//! - [`notify`]: delivering the outbox (signatures, retries, giving up).

pub mod anomaly;
pub mod evaluate;
pub mod incidents;
pub mod notify;
pub mod rules;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What evaluation and delivery cost and did, for /metrics.
#[derive(Debug, Default)]
pub struct AlertStats {
    cycles: AtomicU64,
    cycle_us_total: AtomicU64,
    last_cycle_us: AtomicU64,
    rules: AtomicU64,
    rule_us_total: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

impl AlertStats {
    fn cycle(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.cycles.fetch_add(1, Ordering::Relaxed);
        self.cycle_us_total.fetch_add(us, Ordering::Relaxed);
        self.last_cycle_us.store(us, Ordering::Relaxed);
    }

    fn rule(&self, took: Duration) {
        self.rules.fetch_add(1, Ordering::Relaxed);
        self.rule_us_total
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, dead: bool) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if dead {
            self.dead.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "collector_alert_cycles_total",
                "counter",
                "Alert evaluation cycles this collector ran.",
                n(&self.cycles) as f64,
            ),
            (
                "collector_alert_cycle_seconds_total",
                "counter",
                "Time spent in those cycles.",
                secs(&self.cycle_us_total),
            ),
            (
                "collector_alert_last_cycle_seconds",
                "gauge",
                "How long the last cycle took.",
                secs(&self.last_cycle_us),
            ),
            (
                "collector_alert_rule_evaluations_total",
                "counter",
                "Rules evaluated (one per rule per cycle).",
                n(&self.rules) as f64,
            ),
            (
                "collector_alert_rule_seconds_total",
                "counter",
                "Time spent evaluating rules: divided by the evaluations, the cost of a rule.",
                secs(&self.rule_us_total),
            ),
            (
                "collector_alert_notifications_delivered_total",
                "counter",
                "Notifications a webhook accepted (2xx).",
                n(&self.delivered) as f64,
            ),
            (
                "collector_alert_notification_failures_total",
                "counter",
                "Attempts that failed (not 2xx, or not reached); retried.",
                n(&self.failed) as f64,
            ),
            (
                "collector_alert_notifications_dead_total",
                "counter",
                "Notifications given up after COLLECTOR_ALERT_MAX_ATTEMPTS.",
                n(&self.dead) as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}
