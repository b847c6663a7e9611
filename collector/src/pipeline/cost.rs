//! What the write side's statements cost the database, by the table they serve and the step: the time from
//! sending each statement to its answer, summed, on GET /metrics as `collector_db_seconds_total{table, step}`.
//! It is wall time seen from the collector, not the server's CPU: on a server with cores to spare they are
//! close, on a saturated one every statement's time includes its wait for a core. It shows how the database's
//! work divides among the rollup families, so a new family shows its price beside the others. The cells are
//! the process's: collectors sharing a process (tests) add to the same ones.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::rollup::catalog::{self, Shape, SHAPES};

/// A step of the write side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The writers' COPY of events into `comm_logs`.
    Copy,
    /// The writers' commit (the flush's WAL written and flushed).
    Commit,
    /// The seal's BRIN summary of new `comm_logs` pages.
    Summarize,
    /// A writer's rollup deltas, appended in its transaction.
    Append,
    /// The compactor taking deltas (`DELETE … RETURNING`).
    Take,
    /// The compactor adding deltas into the keyed rows (percentiles included).
    Merge,
    /// The seal rolling a span of `comm_logs` up into a sealed family.
    Seal,
    /// Top lists voided and made.
    TopLists,
}

const STEPS: [Step; 8] = [
    Step::Copy,
    Step::Commit,
    Step::Summarize,
    Step::Append,
    Step::Take,
    Step::Merge,
    Step::Seal,
    Step::TopLists,
];

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Copy => "copy",
            Step::Commit => "commit",
            Step::Summarize => "summarize",
            Step::Append => "append",
            Step::Take => "take",
            Step::Merge => "merge",
            Step::Seal => "seal",
            Step::TopLists => "top_lists",
        }
    }
}

/// One cell per (table, step): the shapes in catalog order, then `comm_logs`. Fixed and static, so recording
/// costs one atomic add and no lookup.
const TABLES: usize = SHAPES.len() + 1;
static NANOS: [[AtomicU64; STEPS.len()]; TABLES] =
    [const { [const { AtomicU64::new(0) }; STEPS.len()] }; TABLES];

/// Adds the time since `started` to `step` of `shape`'s family, or of `comm_logs` for `None`.
pub fn record(shape: Option<&Shape>, step: Step, started: Instant) {
    let table = shape.map_or(SHAPES.len(), catalog::index_of);
    let step = STEPS.iter().position(|s| *s == step).unwrap_or(0);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(cell) = NANOS.get(table).and_then(|t| t.get(step)) {
        cell.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The cells that have counted, in the Prometheus text format.
pub fn render(out: &mut String) {
    let name = "collector_db_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time the write side's statements took, from sending to answer, by the table they serve and \
         the step.\n# TYPE {name} counter"
    );
    for (t, cells) in NANOS.iter().enumerate() {
        let table = SHAPES.get(t).map_or("comm_logs", |s| s.table);
        for (step, cell) in STEPS.iter().zip(cells) {
            let nanos = cell.load(Ordering::Relaxed);
            if nanos > 0 {
                let _ = writeln!(
                    out,
                    "{name}{{table=\"{table}\",step=\"{}\"}} {:.6}",
                    step.name(),
                    nanos as f64 / 1e9
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_step_is_rendered_under_its_table() {
        let started = Instant::now() - std::time::Duration::from_millis(5);
        record(Some(&catalog::PAIR), Step::Seal, started);
        let mut out = String::new();
        render(&mut out);
        let line = out
            .lines()
            .find(|l| {
                l.starts_with(
                    "collector_db_seconds_total{table=\"comm_rollup_pair\",step=\"seal\"}",
                )
            })
            .unwrap_or_else(|| panic!("no pair seal line in {out}"));
        let secs: f64 = line.rsplit(' ').next().unwrap_or("").parse().unwrap_or(0.0);
        assert!(secs >= 0.005, "{line}");
    }
}
