//! BENCHMARKS.md: its header, the ingest tables, and the sections a run keeps from the previous report.

use std::fmt::Write as _;

use collector::config::ServeConfig;

use crate::args::BenchArgs;

pub(crate) struct Measured {
    pub(crate) label: String,
    /// Whether the row is a rate of the real schema, comparable to the limit.
    pub(crate) comparable: bool,
    pub(crate) events: usize,
    pub(crate) secs: f64,
    pub(crate) ack_p50_ms: Option<f64>,
    pub(crate) ack_p99_ms: Option<f64>,
    /// The same p99 inside the collector (its `collector_ingest_duration_seconds`), as the bound of the histogram
    /// bucket holding it.
    pub(crate) collector_p99_ms: Option<f64>,
}

impl Measured {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

/// A report section between markers: the new text, or what the previous report had there.
pub(crate) fn section(previous: &str, name: &str, new: Option<String>) -> String {
    let (open, close) = (format!("<!-- {name} -->\n"), format!("<!-- /{name} -->\n"));
    let body = new.or_else(|| {
        let start = previous.find(&open)? + open.len();
        let end = previous[start..].find(&close)? + start;
        Some(previous[start..end].to_string())
    });
    body.map_or_else(String::new, |b| format!("{open}{b}{close}"))
}

/// The upper bound of the bucket holding quantile `q` of histogram `name` in a Prometheus text exposition.
pub(crate) fn histogram_quantile(exposition: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = exposition
        .lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= q * total)
        .map(|(le, _)| *le)
}

/// A histogram bucket's upper bound in milliseconds, as "≤ bound".
pub(crate) fn bucket_bound_ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.is_infinite() => "above the last bucket".into(),
        Some(v) => format!("≤ {v:.1}"),
    }
}

/// Title, how to regenerate, and the machine.
pub(crate) fn header(cfg: &ServeConfig, pg_version: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    // The defaults, whatever this run was given.
    let defaults = <BenchArgs as clap::Parser>::parse_from(["bench"]);
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Regenerate with `scripts/bench.sh` (`bench/`; defaults: ingest of {} events in batches of {} \
         from {} clients, then queries at 10000000 rows; `--full`: 100000000 rows and 1000000 events per matrix \
         cell; `--suite ingest|queries|enrich|alerts|citus` runs one section and keeps the others). \
         Every figure of a section comes from one run; the raw COPY rows are the limit for the same rows into the \
         same schema on the same server.\n",
        defaults.events, defaults.batch_size, defaults.clients
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "- {cores} cores ({cpu}), {mem_gib:.1} GiB memory");
    let _ = writeln!(s, "- PostgreSQL {pg_version}, private server started by the collector with its durable settings (fsync on, synchronous_commit on)");
    let _ = writeln!(s, "- Schema: `comm_logs` partitioned daily, BRIN(ts) + btree(src_ip, ts) (see db/migrations/0001_core.sql)");
    let _ = writeln!(
        s,
        "- Collector: `collector serve` with defaults ({} writers, {} rows or {} ms per COPY), a child process of the benchmark, whose HTTP clients share the same 2 cores",
        cfg.writers, cfg.flush_rows, cfg.flush_interval_ms
    );
    let _ = writeln!(
        s,
        "- Date: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    s
}

pub(crate) fn render_ingest(results: &[Measured], limit: f64, full: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Ingest\n");
    let _ = writeln!(s, "| measurement | events | seconds | events/s | × raw COPY limit | ack p50 ms | ack p99 ms | ack p99 inside the collector, ms |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in results {
        let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} |",
            m.label,
            m.events,
            m.secs,
            m.rate(),
            if !m.comparable {
                "–".to_string()
            } else {
                format!("{:.2}", m.rate() / limit)
            },
            ms(m.ack_p50_ms),
            ms(m.ack_p99_ms),
            bucket_bound_ms(m.collector_p99_ms)
        );
    }
    let rate_of = |needle: &str| {
        results
            .iter()
            .find(|m| m.label.contains(needle))
            .map(Measured::rate)
    };
    if let (Some(brin), Some(decode)) = (rate_of("BRIN(ts) only"), rate_of("decode + validate")) {
        let _ = writeln!(s, "\n## Reading the figures\n");
        let _ = writeln!(
            s,
            "- The ceiling is PostgreSQL's work per row, and most of it is the one btree: without `(src_ip, ts)` the \
             same COPY runs at {brin:.0} rows/s, {:.1}× the limit with it. BRIN(ts) costs almost nothing because rows \
             arrive in time order.",
            brin / limit
        );
        let _ = writeln!(
            s,
            "- The collector's own work (decode, validate, encode a COPY row) costs {:.2} µs per event on one core \
             ({decode:.0} events/s), so at the full-speed rate it needs {:.2} of the 2 cores; HTTP on both sides and \
             the load-generating clients, which run on the same 2 cores here, take more.",
            1e6 / decode,
            full / decode
        );
        let _ = writeln!(
            s,
            "- The collector's rows also pay for the rollups: each COPY's transaction appends the flush's rollup \
             deltas (per minute by producer/service/protocol/host/port/status and by service, per 5 minutes by \
             source address, source network and destination address), and the compactor merges them into the keyed \
             rollup rows every second (and lists the largest sources of buckets that have closed). The raw COPY \
             limit pays for none of it."
        );
        let _ = writeln!(
            s,
            "- Everything shares 2 cores: PostgreSQL's backends, the collector, and the clients. On a machine where \
             the database and the producers are elsewhere, the collector's share of the cores is free for it, and \
             the raw COPY limit is the database's alone."
        );
        let _ = writeln!(
            s,
            "- The ack columns are the clients' own clock, from sending a batch to reading its answer. The last \
             column is the collector's histogram `collector_ingest_duration_seconds` (GET /metrics) over the same \
             run, from the request head to the answer. The difference is spent outside the collector's handling of \
             the request: sending and reading on loopback, and each side waiting to be scheduled on the 2 shared \
             cores."
        );
        let _ = writeln!(
            s,
            "- On this shared machine repeated runs of this command differ by up to ~20% (the raw limit included); \
             compare the rows of one run, not runs."
        );
    }
    let _ = writeln!(
        s,
        "\nTargets: end to end ≥ 0.8× the raw COPY limit ({}: {:.2}×); ack p99 < 5 ms at half load ({}).",
        if full / limit >= 0.8 { "met" } else { "not met" },
        full / limit,
        match results.iter().find(|m| m.label.contains("half")) {
            Some(Measured {
                ack_p99_ms: Some(p),
                collector_p99_ms,
                ..
            }) => format!(
                "{}: {p:.2} ms as the clients saw it; inside the collector {} ms",
                if *p < 5.0 { "met" } else { "not met" },
                bucket_bound_ms(*collector_p99_ms)
            ),
            _ => "not measured".into(),
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_read_as_the_bound_of_their_bucket() {
        let text = "# TYPE h histogram\nh_bucket{le=\"0.001\"} 50\nh_bucket{le=\"0.002\"} 98\n\
                    h_bucket{le=\"0.005\"} 99\nh_bucket{le=\"+Inf\"} 100\nh_sum 0.2\nh_count 100\n\
                    other_bucket{le=\"1\"} 100\n";
        assert_eq!(histogram_quantile(text, "h", 0.5), Some(0.001));
        assert_eq!(histogram_quantile(text, "h", 0.99), Some(0.005));
        assert_eq!(histogram_quantile(text, "h", 1.0), Some(f64::INFINITY));
        assert_eq!(histogram_quantile(text, "missing", 0.5), None);
        assert_eq!(bucket_bound_ms(Some(0.003 * 1000.0)), "≤ 3.0");
    }
}
