//! The query benchmark: loads N events over the last 24 hours into the real schema (COPY plus rollup, in the
//! writers' own transaction, so the rollup is exact), then times each read endpoint over HTTP for a 1-hour and
//! a 24-hour window, next to the same answer computed by plain SQL on comm_logs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use collector::config::ServeConfig;
use collector::decode::{self, Format};
use collector::pipeline::batch::Batch;
use collector::pipeline::queue::Queue;
use collector::pipeline::writer;
use collector::pipeline::{compact, seal};
use collector::telemetry::Stats;

use crate::args::KEY;
/// Events per generated batch and per COPY.
pub(crate) const LOAD_BATCH: usize = 20_000;

/// The time between two loaded events, for `rows` over the day [`load`] fills.
pub(crate) fn load_step_us(rows: usize) -> i64 {
    let span_us: i64 = 24 * 3_600_000_000 + 300_000_000;
    (span_us / rows.max(1) as i64).max(1)
}

/// Loads `rows` events spread evenly over the 24 hours before now; returns the load rate in events/s and the
/// newest event's time (Unix microseconds).
pub async fn load(
    pool: &Pool,
    cfg: &ServeConfig,
    rows: usize,
    seed: u64,
) -> anyhow::Result<(f64, i64)> {
    let end_us = chrono::Utc::now().timestamp_micros() - 60_000_000;
    let step_us = load_step_us(rows);
    let start_us = end_us - step_us * rows as i64;
    let limits = cfg.build_limits();
    // Nothing is stored yet: pairs are sealed from where the data starts (db/migrations/0008_pairs.sql).
    let start = chrono::DateTime::from_timestamp_micros(start_us).unwrap_or_default();
    pool.get()
        .await?
        .execute(
            "UPDATE comm_pair_seal SET sealing_to = $1, sealed_to = $1",
            &[&start],
        )
        .await?;
    let next = Arc::new(AtomicUsize::new(0));
    let batches = rows.div_ceil(LOAD_BATCH);
    let started = Instant::now();
    // The collector's own compactor keeps the rollup deltas small as they are written.
    let compact_stop = tokio_util::sync::CancellationToken::new();
    let compactor = tokio::spawn(compact::run(
        pool.clone(),
        Duration::from_millis(cfg.rollup_compact_ms.max(1)),
        // Pairs are sealed after the load: the events are in the past, and a seal racing ahead of the loaders
        // would leave all of them to the writers as late pairs.
        None,
        compact_stop.clone(),
    ));
    // The collector's own queue and writers: each batch is COPYed with its rollup deltas as in production.
    let (queue, rx) = Queue::new(cfg.queue_capacity);
    let writer_cfg = cfg.writer_config();
    let stats = Arc::new(Stats::default());
    let writers = writer::spawn(cfg.writers, pool, &rx, writer_cfg, &stats);
    drop(rx);
    // A full queue refuses a batch (and drops it): loaders wait for room, one at a time.
    let room = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = Vec::new();
    // Generation and encoding take a core; two loaders keep the database busy meanwhile.
    for _ in 0..2 {
        let (next, limits) = (next.clone(), limits);
        let (queue, room) = (queue.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(());
                }
                let first = b * LOAD_BATCH;
                let n = LOAD_BATCH.min(rows - first);
                let body = crate::data::batch(seed, first, n, Some((start_us, step_us)));
                let batch = tokio::task::spawn_blocking(move || {
                    let text = decode::as_text(&body)?;
                    Batch::build(
                        body.clone(),
                        text,
                        Format::Json,
                        "bench".into(),
                        end_us,
                        &limits,
                    )
                    .map(|(batch, _)| batch)
                    .map_err(anyhow::Error::from)
                })
                .await??;
                let _turn = room.lock().await;
                while queue.capacity() - queue.depth() < batch.weight() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                queue.try_submit(batch)?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    queue.close();
    for w in writers {
        w.await?;
    }
    compact_stop.cancel();
    compactor.await?;
    // Then pairs, an hour of events a step, as a collector catching up would, with the top lists of the buckets
    // they close.
    let lag = Duration::from_millis(cfg.pair_seal_lag_ms);
    let sealed = "SELECT extract(epoch FROM sealed_to)::float8 FROM comm_pair_seal";
    while pool
        .get()
        .await?
        .query_one(sealed, &[])
        .await?
        .get::<_, f64>(0)
        * 1e6
        <= end_us as f64
    {
        seal::seal_pairs(pool, lag).await?;
    }
    let lists_pending = "SELECT (SELECT count(*) FROM comm_rollup_pair_top_pending WHERE bucket + res * interval '1 second' <= (SELECT sealed_to FROM comm_pair_seal))
                              + (SELECT count(*) FROM comm_rollup_src_top_pending WHERE bucket + res * interval '1 second' <= now() - interval '1 minute')";
    while pool
        .get()
        .await?
        .query_one(lists_pending, &[])
        .await?
        .get::<_, i64>(0)
        > 0
    {
        compact::once(pool).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    // Upserts leave a dead version of a rollup row per flush; autovacuum would clear them on a live system.
    pool.get().await?.batch_execute("VACUUM ANALYZE").await?;
    Ok((rows as f64 / secs, end_us))
}

struct Timing {
    p50_ms: f64,
    p99_ms: f64,
}

fn timing(mut ms: Vec<f64>) -> Timing {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    Timing {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// One benchmarked question: the endpoint, and the plain SQL giving the same answer from comm_logs.
struct Case {
    name: &'static str,
    path: &'static str,
    sql: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "volume",
        path: "/metrics/volume?",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), count(*), sum(bytes_in), sum(bytes_out)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 GROUP BY 1",
        ),
    },
    Case {
        name: "volume of web 5xx",
        path: "/metrics/volume?service=web&status_class=5xx&",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), count(*), sum(bytes_in), sum(bytes_out)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 AND service = 'web' AND status BETWEEN 500 AND 599
             GROUP BY 1",
        ),
    },
    Case {
        name: "error-rate",
        path: "/metrics/error-rate?",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), count(*), count(*) FILTER (WHERE status >= 500)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 GROUP BY 1",
        ),
    },
    Case {
        name: "error-rate by service",
        path: "/metrics/error-rate?group_by=service&",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), service, count(*),
                    count(*) FILTER (WHERE status >= 500)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 GROUP BY 1, 2",
        ),
    },
    Case {
        name: "error-rate of sources in 10.20.1.0/24",
        path: "/metrics/error-rate?src=10.20.1.0/24&",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), count(*), count(*) FILTER (WHERE status >= 500)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 AND src_ip <<= '10.20.1.0/24' GROUP BY 1",
        ),
    },
    Case {
        name: "error-rate of web from one source (no rollup has both: raw)",
        path: "/metrics/error-rate?src=10.20.0.5&service=web&",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), count(*), count(*) FILTER (WHERE status >= 500)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 AND src_ip = '10.20.0.5' AND service = 'web'
             GROUP BY 1",
        ),
    },
    Case {
        name: "latency",
        path: "/metrics/latency?",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)),
                    percentile_disc(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms), max(latency_ms)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 GROUP BY 1",
        ),
    },
    Case {
        name: "latency by service",
        path: "/metrics/latency?group_by=service&",
        sql: Some(
            "SELECT date_bin($2::text::interval, ts, to_timestamp(0)), service,
                    percentile_disc(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms), max(latency_ms)
             FROM comm_logs WHERE ts >= $1 AND ts < $3 GROUP BY 1, 2",
        ),
    },
    Case {
        name: "top-talkers by service",
        path: "/metrics/top-talkers?by=service&",
        sql: Some(
            "SELECT service, count(*) AS n FROM comm_logs WHERE ts >= $1 AND ts < $3 AND $2::text::interval IS NOT NULL
             GROUP BY 1 ORDER BY n DESC LIMIT 10",
        ),
    },
    Case {
        name: "top-talkers by dst_port",
        path: "/metrics/top-talkers?by=dst_port&",
        sql: Some(
            "SELECT dst_port, count(*) AS n FROM comm_logs WHERE ts >= $1 AND ts < $3 AND $2::text::interval IS NOT NULL
             GROUP BY 1 ORDER BY n DESC LIMIT 10",
        ),
    },
    Case {
        name: "top-talkers by src_ip",
        path: "/metrics/top-talkers?by=src_ip&",
        sql: Some(
            "SELECT src_ip, count(*) AS n FROM comm_logs WHERE ts >= $1 AND ts < $3 AND $2::text::interval IS NOT NULL
             GROUP BY 1 ORDER BY n DESC LIMIT 10",
        ),
    },
    Case {
        name: "top-talkers by dst_ip, bytes",
        path: "/metrics/top-talkers?by=dst_ip&metric=bytes&",
        sql: Some(
            "SELECT dst_ip, sum(bytes_in) + sum(bytes_out) AS n FROM comm_logs
             WHERE ts >= $1 AND ts < $3 AND $2::text::interval IS NOT NULL
             GROUP BY 1 ORDER BY n DESC LIMIT 10",
        ),
    },
    Case {
        name: "top-talkers by pair",
        path: "/metrics/top-talkers?by=pair&",
        sql: Some(
            "SELECT src_ip, dst_ip, count(*) AS n FROM comm_logs WHERE ts >= $1 AND ts < $3 AND $2::text::interval IS NOT NULL
             GROUP BY 1, 2 ORDER BY n DESC LIMIT 10",
        ),
    },
    Case { name: "logs, newest 100", path: "/api/logs?limit=100&", sql: None },
    Case { name: "logs of one source IP", path: "/api/logs?src=10.20.0.5&limit=100&", sql: None },
];

/// Rows per rollup table and tier, as a sentence.
async fn rollup_sizes(client: &deadpool_postgres::Object) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for table in [
        "comm_rollup",
        "comm_rollup_service",
        "comm_rollup_src",
        "comm_rollup_dst",
        "comm_rollup_src_net",
        "comm_rollup_pair",
    ] {
        let rows = client
            .query(
                &format!("SELECT res, count(*) FROM {table} GROUP BY 1 ORDER BY 1"),
                &[],
            )
            .await?;
        let tiers: Vec<String> = rows
            .iter()
            .map(|r| format!("{} at {} s", r.get::<_, i64>(1), r.get::<_, i32>(0)))
            .collect();
        parts.push(format!("`{table}` {}", tiers.join(", ")));
    }
    Ok(parts.join("; "))
}

/// Loads the data and times every case; returns the markdown section.
pub async fn run(
    pool: &Pool,
    url: &str,
    cfg: &ServeConfig,
    rows: usize,
    seed: u64,
) -> anyhow::Result<String> {
    eprintln!(
        "Loading {rows} events over 24 hours (COPY + rollup deltas, compacted as they come) ..."
    );
    let (load_rate, newest_us) = load(pool, cfg, rows, seed).await?;
    let collector = crate::process::Collector::start(cfg, url).await?;
    let addr = collector.addr;
    let http = reqwest::Client::new();
    let client = pool.get().await?;
    let sizes = rollup_sizes(&client).await?;
    // Windows end at the minute after the newest event, as "the last hour" does on a live system: loading and
    // sealing 100M events takes most of an hour, and windows ending at the call would hold that much less.
    let minute_us = 60_000_000;
    let to_us = newest_us.div_euclid(minute_us) * minute_us + minute_us;
    let to = chrono::DateTime::from_timestamp_micros(to_us).unwrap_or_default();
    let newest_age_min = (chrono::Utc::now().timestamp_micros() - newest_us) as f64 / 60_000_000.0;
    let mut out = String::new();
    let _ = writeln!(out, "## Queries at {rows} rows\n");
    let _ = writeln!(
        out,
        "{rows} events spread evenly over the last 24 hours ({:.0} events/h), loaded with the writers' own COPY + \
         rollup transaction, then source × destination pairs sealed from `comm_logs` an hour a step, at \
         {load_rate:.0} events/s in all. Rollup rows: {sizes}. Windows end at the minute after the newest event \
         (`from=<to - 1h or 24h>&to=<that minute>`, the same bounds in plain SQL), as \"the last hour\" does on a \
         live system; the timings began {newest_age_min:.0} minutes after the newest event. Each endpoint is timed over HTTP on \
         loopback (the whole answer received), with its default bucket (over 1 h: 1 minute, 5 with an address filter; over 24 h: 5 minutes); \
         `source` is the table it read; each endpoint is called once unmeasured, then timed 50 times (or for \
         10 s), before any plain SQL runs. Plain SQL is the same aggregate straight from `comm_logs`.\n",
        rows as f64 / 24.0
    );
    let _ = writeln!(out, "| question | window | endpoint p50 ms | endpoint p99 ms | source | plain SQL p50 ms | plain SQL p99 ms |");
    let _ = writeln!(out, "|---|---|---:|---:|---|---:|---:|");
    for (window, hours, bucket, samples, sql_samples) in [
        ("1 h", 1, "1 minute", 50, 5),
        // Plain SQL over 24 h of a large table takes most of a minute a run.
        (
            "24 h",
            24,
            "5 minutes",
            50,
            if rows > 20_000_000 { 1 } else { 3 },
        ),
    ] {
        let from = to - chrono::Duration::hours(hours);
        let bounds = format!(
            "from={}&to={}",
            from.format("%Y-%m-%dT%H:%M:%SZ"),
            to.format("%Y-%m-%dT%H:%M:%SZ")
        );
        // Every endpoint first, then the plain SQL: a full scan of comm_logs pushes the rollups out of the
        // caches, which no dashboard polling the endpoints would see.
        let mut answers = Vec::new();
        for case in CASES {
            let url = format!("http://{addr}{}{bounds}", case.path);
            let mut ms = Vec::new();
            let mut source = String::from("–");
            let case_started = Instant::now();
            // One unmeasured call first: the measured ones are of a running system, not of its first read.
            for i in 0..=samples {
                // Slow (raw-path) cases stop after ~10 s of samples, with at least three.
                if ms.len() >= 3 && case_started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                let t = Instant::now();
                let resp = http.get(&url).header("x-api-key", KEY).send().await?;
                let status = resp.status();
                anyhow::ensure!(
                    status.is_success() || status == reqwest::StatusCode::GATEWAY_TIMEOUT,
                    "{} answered {status}",
                    case.path,
                );
                let body: serde_json::Value = resp.json().await?;
                if i > 0 {
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                source = match body["source"].as_str() {
                    Some(s) => s.to_string(),
                    None if status.is_success() => "raw (logs)".into(),
                    None => "raw: 504 at COLLECTOR_QUERY_TIMEOUT_MS".into(),
                };
            }
            answers.push((timing(ms), source));
        }
        for (case, (api, source)) in CASES.iter().zip(answers) {
            let sql = match case.sql {
                Some(sql) => {
                    let mut ms = Vec::new();
                    for _ in 0..sql_samples {
                        let t = Instant::now();
                        client.query(sql, &[&from, &bucket, &to]).await?;
                        ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Some(timing(ms))
                }
                None => None,
            };
            let (s50, s99) = sql.map_or(("–".into(), "–".into()), |t| {
                (format!("{:.1}", t.p50_ms), format!("{:.1}", t.p99_ms))
            });
            let _ = writeln!(
                out,
                "| {} | {window} | {:.1} | {:.1} | {source} | {s50} | {s99} |",
                case.name, api.p50_ms, api.p99_ms
            );
        }
    }
    let _ = writeln!(
        out,
        "\nTarget: every `/metrics/*` call < 50 ms p99 at 100M rows for 24 h. An answer from a rollup reads hourly rows \
         for whole hours, 5-minute rows for whole 5-minute spans and minute rows for the rest, so it scales with the \
         distinct keys per bucket (services; sources; pairs; all-dimension combinations), not with events. Answers \
         from `comm_logs` (IP filters combined with other dimensions, latency with an IP filter) scale with the \
         events in the window; the row marked raw measures that cost."
    );
    collector.stop().await?;
    Ok(out)
}
