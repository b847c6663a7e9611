//! The ingest measurements (raw COPY limit, INSERT baseline, the collector end to end, the clients × batch-size
//! matrix) and the report: what `main` runs.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use deadpool_postgres::Pool;
use futures_util::SinkExt;

use collector::config::{Durability as Ack, ServeConfig};
use collector::db::embedded_pg::{Durability, EmbeddedPg};
use collector::db::{self, migrate, partitions};
use collector::decode::{self, Format};
use collector::pipeline::batch::{Batch, BuildLimits};
use collector::pipeline::copy;

use crate::args::{BenchArgs, Suite, KEY};
use crate::data::generate;
use crate::process::Collector;
use crate::process::{peak_rss_mib, pg_cpu_secs, process_cpu_secs};
use crate::report::{
    bucket_bound_ms, header, histogram_quantile, render_ingest, section, Measured,
};
use crate::{baseline, queries};

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.full {
        args.query_rows = args.query_rows.max(100_000_000);
        args.matrix_events = args.matrix_events.max(1_000_000);
    }
    let cfg = ServeConfig::defaults();
    let dir = bench_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pg_dir = dir.join("pg");
    // The same durable settings `collector serve` runs with.
    let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&pg_dir, Durability::Durable))
        .await??;
    let pg_version = pg.version().unwrap_or_else(|| "unknown".into());
    if args.pinned {
        crate::process::pin(&dir.join("pg"))?;
    }
    db::create_database(&pg.connection_string("postgres"), "bench").await?;
    let url = pg.connection_string("bench");
    let pool = db::pool(&url, cfg.writers + 2)?;
    migrate::run(&pool).await?;
    partitions::ensure(&pool, 1).await?;

    let previous = std::fs::read_to_string(&args.output).unwrap_or_default();
    let enrich_section = match args.suite {
        Suite::Enrich => Some(crate::enrich::run(&args, &url, &pool).await?),
        _ => None,
    };
    let alerts_section = match args.suite {
        Suite::Alerts => Some(crate::alerts::run(&args, &url, &pool).await?),
        _ => None,
    };
    let citus_section = match args.suite {
        Suite::Citus => Some(crate::citus::run(&args, &cfg, &url, &pool).await?),
        _ => None,
    };
    let ingest_section = match args.suite {
        Suite::Queries | Suite::Enrich | Suite::Alerts | Suite::Citus => None,
        _ => Some(ingest(&args, &cfg, &pool, &url).await?),
    };
    let queries_section = match args.suite {
        Suite::Ingest | Suite::Enrich | Suite::Alerts | Suite::Citus => None,
        _ => {
            truncate(&pool).await?;
            Some(queries::run(&pool, &url, &cfg, args.query_rows, args.seed).await?)
        }
    };
    pool.close();
    drop(pg);
    if args.keep_data {
        eprintln!("Data directory kept: {}", dir.join("pg").display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }

    // One queries section per data size, so the 10M and the 100M runs are both kept.
    let mut sizes = vec![10_000_000, 100_000_000];
    if !sizes.contains(&args.query_rows) {
        sizes.push(args.query_rows);
    }
    let (ingest_new, pinned_new) = if args.pinned {
        (None, ingest_section)
    } else {
        (ingest_section, None)
    };
    let mut report = header(&cfg, &pg_version)
        + &section(&previous, "ingest", ingest_new)
        + &section(&previous, "ingest-pinned", pinned_new)
        + &section(&previous, "enrich", enrich_section)
        + &section(&previous, "alerts", alerts_section)
        + &section(&previous, "citus", citus_section);
    for rows in sizes {
        let new = (rows == args.query_rows)
            .then(|| queries_section.clone())
            .flatten();
        report += &section(&previous, &format!("queries-{rows}"), new);
    }
    std::fs::write(&args.output, &report)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("{report}");
    Ok(())
}

/// The benchmark's files: PostgreSQL's data directory and the collector's spool, on one disk.
pub(crate) fn bench_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("collector-bench-{}", std::process::id()))
}

/// Raw COPY limit and the collector end to end; returns the report section.
async fn ingest(
    args: &BenchArgs,
    cfg: &ServeConfig,
    pool: &Pool,
    url: &str,
) -> anyhow::Result<String> {
    eprintln!("Generating {} events ...", args.events);
    let batches = generate(args.seed, args.events, args.batch_size);
    let limits = cfg.build_limits();
    let t = Instant::now();
    let rows = encode_all(&batches, &limits)?;
    let encode_secs = t.elapsed().as_secs_f64();
    // The writers' next step on the same rows: their rollup deltas, per flush of `flush_rows`.
    let t = Instant::now();
    let per_flush = (cfg.flush_rows / args.batch_size.max(1)).max(1);
    for flush in rows.chunks(per_flush) {
        let deltas = collector::pipeline::deltas::of_chunks(flush)?;
        std::hint::black_box(&deltas);
    }
    let rollup_secs = t.elapsed().as_secs_f64();

    let mut results = Vec::new();
    let mut conn_counts = vec![1, 2, cfg.writers];
    conn_counts.dedup();
    let pg_data = bench_dir().join("pg");
    let mut raw_pg_cpu_per_row = 0.0;
    for conns in conn_counts {
        truncate(pool).await?;
        eprintln!("Raw COPY with {conns} connection(s) ...");
        let pg_before = pg_cpu_secs(&pg_data);
        let secs = raw_copy(pool, &rows, conns, cfg.flush_rows).await?;
        if conns == cfg.writers {
            raw_pg_cpu_per_row = (pg_cpu_secs(&pg_data) - pg_before) / args.events as f64;
        }
        results.push(Measured {
            label: format!(
                "raw COPY BINARY, {conns} connection(s), {} rows per COPY",
                cfg.flush_rows
            ),
            comparable: true,
            events: args.events,
            secs,
            ack_p50_ms: None,
            ack_p99_ms: None,
            collector_p99_ms: None,
        });
    }
    // What the one btree costs: the same COPY with BRIN(ts) only.
    truncate(pool).await?;
    pool.get()
        .await?
        .batch_execute("DROP INDEX comm_logs_src_ip_ts")
        .await?;
    eprintln!("Raw COPY without the (src_ip, ts) btree ...");
    let secs = raw_copy(pool, &rows, cfg.writers, cfg.flush_rows).await?;
    pool.get()
        .await?
        .batch_execute(
            "TRUNCATE comm_logs; CREATE INDEX comm_logs_src_ip_ts ON comm_logs (src_ip, ts)",
        )
        .await?;
    let brin_only = Measured {
        label: format!(
            "raw COPY BINARY, {} connection(s), BRIN(ts) only (for the index cost; not the schema)",
            cfg.writers
        ),
        comparable: false,
        events: args.events,
        secs,
        ack_p50_ms: None,
        ack_p99_ms: None,
        collector_p99_ms: None,
    };
    // The limit is the best raw rate into the real schema, whatever the number of connections.
    let limit = results.iter().map(Measured::rate).fold(1.0, f64::max);
    results.push(brin_only);
    results.push(Measured {
        label: "decode + validate + encode only (no HTTP, no database), one core".into(),
        comparable: false,
        events: args.events,
        secs: encode_secs,
        ack_p50_ms: None,
        ack_p99_ms: None,
        collector_p99_ms: None,
    });
    results.push(Measured {
        label: format!(
            "rollup deltas of the encoded rows only (a writer's work before its COPY, {} rows a flush), one core",
            cfg.flush_rows
        ),
        comparable: false,
        events: args.events,
        secs: rollup_secs,
        ack_p50_ms: None,
        ack_p99_ms: None,
        collector_p99_ms: None,
    });

    truncate(pool).await?;
    eprintln!("End to end, {} clients at full speed ...", args.clients);
    let pg_before = pg_cpu_secs(&pg_data);
    let (full, resources) = end_to_end_settled(url, pool, &batches, args.clients).await?;
    let full_pg_cpu = pg_cpu_secs(&pg_data) - pg_before;
    let full_rate = full.events as f64 / full.secs;
    results.push(Measured {
        label: format!("collector end to end, {} clients, full speed", args.clients),
        ..full
    });

    // The same full-speed run followed by five live tails and a dashboard refreshing every 10 s.
    truncate(pool).await?;
    eprintln!("End to end, full speed, 5 live tails and a dashboard refreshing ...");
    let (watched, _) =
        end_to_end_watched(&[], url, pool, &batches, args.clients, None, Ack::Spool, 5).await?;
    let watched_rate = watched.rate();
    // Runs here differ by up to ±20%: a second plain and watched pair, alternated, and the ratio of the sums.
    truncate(pool).await?;
    eprintln!("End to end, full speed, plain and watched again ...");
    let pg_before = pg_cpu_secs(&pg_data);
    let (plain2, plain2_resources) = end_to_end_settled(url, pool, &batches, args.clients).await?;
    // PostgreSQL's CPU per event over both plain runs too: pinned, one run's figure moved by half between runs
    // of the same code (its backends contend on one core).
    let collector_pg_cpu_per_event =
        (full_pg_cpu + pg_cpu_secs(&pg_data) - pg_before) / (full.events + plain2.events) as f64;
    // The collector's CPU per event over both plain full-speed runs: one run's figure moved by a tenth between
    // identical runs (the compactor's share depends on where the run ends in its cycle).
    let cpu_per_event =
        (resources.cpu_secs + plain2_resources.cpu_secs) / (full.events + plain2.events) as f64;
    truncate(pool).await?;
    let (watched2, _) =
        end_to_end_watched(&[], url, pool, &batches, args.clients, None, Ack::Spool, 5).await?;
    let (plain2_rate, watched2_rate) = (plain2.rate(), watched2.rate());
    results.push(Measured {
        label: format!(
            "collector end to end, {} clients, full speed, 5 live tails following and the dashboard refreshing",
            args.clients
        ),
        ..watched
    });

    truncate(pool).await?;
    let half_rate = full_rate / 2.0;
    eprintln!("End to end at half load ({half_rate:.0} events/s) ...");
    let (half, half_resources) = end_to_end(
        cfg,
        url,
        pool,
        &batches,
        args.clients,
        Some(half_rate),
        Ack::Spool,
    )
    .await?;
    let half_collector_p50 = half_resources.collector_p50_ms;
    results.push(Measured {
        label: format!(
            "collector end to end, {} clients, paced at half the full-speed rate",
            args.clients
        ),
        ..half
    });
    // The same two runs acknowledging from memory: what the spool's fsync before each 202 costs.
    truncate(pool).await?;
    eprintln!("End to end, memory durability, full speed ...");
    let (mem_full, _) =
        end_to_end(cfg, url, pool, &batches, args.clients, None, Ack::Memory).await?;
    let mem_rate = mem_full.rate();
    results.push(Measured {
        label: format!(
            "collector end to end, {} clients, full speed, `--durability memory`",
            args.clients
        ),
        ..mem_full
    });
    truncate(pool).await?;
    eprintln!("End to end, memory durability, half load ...");
    let (mem_half, mem_half_resources) = end_to_end(
        cfg,
        url,
        pool,
        &batches,
        args.clients,
        Some(half_rate),
        Ack::Memory,
    )
    .await?;
    let durability = format!(
        "\nDurability: with the spool (the default: every batch fsynced before its 202) the collector committed \
         {full_rate:.0} events/s at full speed, {:.2}× the {mem_rate:.0} events/s of `--durability memory` in the \
         same run. Group commit took {:.0} fsyncs/s at full speed, {:.0} events ({:.1} requests) per fsync. At half \
         load the collector's own ack p50/p99 were {}/{} ms with the spool and {}/{} ms from memory (bounds of its \
         histogram buckets); the clients saw p50/p99 {}/{} ms and {}/{} ms. The spool's group commits (write and \
         fsync) took p50 {} / p99 {} ms at half load: its fsyncs wait behind PostgreSQL's WAL flushes and COPY \
         writes on the same disk, and that wait is most of the spool's ack tail.\n",
        full_rate / mem_rate,
        resources.fsyncs as f64 / full.secs,
        resources.spooled_events as f64 / resources.fsyncs.max(1) as f64,
        resources.spooled_records as f64 / resources.fsyncs.max(1) as f64,
        bucket_bound_ms(half_collector_p50),
        bucket_bound_ms(half.collector_p99_ms),
        bucket_bound_ms(mem_half_resources.collector_p50_ms),
        bucket_bound_ms(mem_half.collector_p99_ms),
        fmt_ms(half.ack_p50_ms),
        fmt_ms(half.ack_p99_ms),
        fmt_ms(mem_half.ack_p50_ms),
        fmt_ms(mem_half.ack_p99_ms),
        bucket_bound_ms(half_resources.sync_p50_ms),
        bucket_bound_ms(half_resources.sync_p99_ms),
    );
    results.push(Measured {
        label: format!(
            "collector end to end, {} clients, paced at half the full-speed rate, `--durability memory`",
            args.clients
        ),
        ..mem_half
    });
    // Overload: twice the full-speed rate offered by four times the clients, each retrying a 503 after 50 ms.
    truncate(pool).await?;
    let offered = full_rate * 2.0;
    eprintln!("End to end offered twice the full-speed rate ({offered:.0} events/s) ...");
    let (over, over_resources) = end_to_end(
        cfg,
        url,
        pool,
        &batches,
        args.clients * 4,
        Some(offered),
        Ack::Spool,
    )
    .await?;
    let over_rate = over.events as f64 / over.secs;
    let overload = format!(
        "\nOverload: offered {offered:.0} events/s (twice the full-speed rate) from {} clients, the collector \
         committed {over_rate:.0} events/s ({:.2}× its full-speed rate) and answered {} of {} requests 503 \
         ({:.1}%), each refused before its body was read; it used {:.2} µs of CPU per committed event, against \
         {:.2} µs at full speed.\n",
        args.clients * 4,
        over_rate / full_rate,
        over_resources.refused,
        over_resources.requests,
        100.0 * over_resources.refused as f64 / over_resources.requests.max(1) as f64,
        over_resources.cpu_secs / over.events as f64 * 1e6,
        cpu_per_event * 1e6,
    );
    truncate(pool).await?;
    eprintln!("Baseline: parse + multi-row INSERT ...");
    let secs = baseline::run(pool, &batches, cfg.writers).await?;
    results.push(Measured {
        label: format!(
            "baseline a user would build: parse + one multi-row INSERT per batch, {} connections (deadpool-postgres)",
            cfg.writers
        ),
        comparable: true,
        events: args.events,
        secs,
        ack_p50_ms: None,
        ack_p99_ms: None,
        collector_p99_ms: None,
    });
    let baseline_rate = args.events as f64 / secs;

    let mut matrix = String::new();
    let _ = writeln!(
        matrix,
        "\n### Clients × batch size\n\nCollector end to end at full speed, {} events per cell.\n\n\
         | batch size | clients | events/s | × raw COPY limit | × INSERT baseline | ack p50 ms | ack p99 ms | ack p99 inside the collector, ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|",
        args.matrix_events
    );
    for batch_size in [100, 1_000, 10_000] {
        let cell_batches = generate(args.seed, args.matrix_events, batch_size);
        for clients in [1, 4, 16, 64] {
            truncate(pool).await?;
            eprintln!("Matrix: batches of {batch_size}, {clients} clients ...");
            let (m, _) =
                end_to_end(cfg, url, pool, &cell_batches, clients, None, Ack::Spool).await?;
            let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
            let _ = writeln!(
                matrix,
                "| {batch_size} | {clients} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
                m.rate(),
                m.rate() / limit,
                m.rate() / baseline_rate,
                ms(m.ack_p50_ms),
                ms(m.ack_p99_ms),
                bucket_bound_ms(m.collector_p99_ms)
            );
        }
    }
    let _ = writeln!(
        matrix,
        "\n### Resources\n\nThe collector runs as its own process (`collector serve`, default settings) in every end-to-end \
         row. At full speed (both plain runs) it used {:.2} CPU cores per 100k events/s ({:.2} µs of CPU per event, \
         HTTP included), \
         and its peak RSS was {:.0} MiB.",
        cpu_per_event * 100_000.0,
        cpu_per_event * 1e6,
        resources.peak_rss_mib
    );
    let (decode_us, deltas_us, total_us) = (
        encode_secs / args.events as f64 * 1e6,
        rollup_secs / args.events as f64 * 1e6,
        cpu_per_event * 1e6,
    );
    let _ = writeln!(
        matrix,
        "\nPer stage, in µs of CPU per event: decoding, validating and encoding the rows {decode_us:.2} and the \
         writers' rollup deltas {deltas_us:.2} (each measured alone on one core, above), the rest (HTTP, the \
         spool's writes and fsyncs, the queue, streaming the COPY, the tail) {:.2}, of {total_us:.2} in all. \
         Target: ≤ 1.3 µs in all ({}).",
        (total_us - decode_us - deltas_us).max(0.0),
        if total_us <= 1.3 { "met" } else { "not met" },
    );
    let _ = writeln!(
        matrix,
        "\nPostgreSQL's own CPU (every backend and background process, from /proc) per committed event: \
         {:.2} µs for the raw COPY with {} connections, {:.2} µs for the collector's rows at full speed (both plain \
         runs, each held until the seal had passed its events) ({:.2}×: the rollup deltas written with each COPY, their compaction, the top lists, the pair seals, the \
         flush ledger and the batch identities).",
        raw_pg_cpu_per_row * 1e6,
        cfg.writers,
        collector_pg_cpu_per_event * 1e6,
        collector_pg_cpu_per_event / raw_pg_cpu_per_row.max(1e-12),
    );
    matrix += &db_time_table(
        &[&resources.db_seconds, &plain2_resources.db_seconds],
        full.events + plain2.events,
    );
    let watched = format!(
        "\nWatched: with five live tails following all events (each sent up to COLLECTOR_TAIL_EVENTS_PER_SEC, 200 a \
         second) and a dashboard refreshing every 10 s (status, volume, two error rates, latency, top talkers and a \
         page of events), the collector committed {watched_rate:.0} and {watched2_rate:.0} events/s in two runs, \
         each after a plain full-speed run ({full_rate:.0} and {plain2_rate:.0} events/s): {:.2}× over both pairs \
         ({:.2}× and {:.2}×). Target ≥ 0.95×.\n",
        (watched_rate + watched2_rate) / (full_rate + plain2_rate),
        watched_rate / full_rate,
        watched2_rate / plain2_rate,
    );
    let mut section =
        render_ingest(&results, limit, full_rate) + &durability + &watched + &overload + &matrix;
    if args.pinned {
        section = section.replacen(
            "- Everything shares 2 cores: PostgreSQL's backends, the collector, and the clients. On a machine \
             where the database and the producers are elsewhere, the collector's share of the cores is free for \
             it, and the raw COPY limit is the database's alone.",
            "- Pinned: PostgreSQL alone on core 0 (every backend, compaction and seals), the collector and the \
             load clients together on core 1, so the clients' own work is part of what core 1 spends.",
            1,
        );
        section = section.replacen(
            "## Ingest\n",
            "## Ingest, pinned: PostgreSQL on core 0, the collector and its clients on core 1\n\n\
             The raw COPY limit below is measured pinned the same way: PostgreSQL on one core, the benchmark \
             feeding it from the other.\n",
            1,
        );
    }
    Ok(section)
}

/// The same events through the collector's own decode and encode, done before timing the raw COPY.
pub(crate) fn encode_all(batches: &[Bytes], limits: &BuildLimits) -> anyhow::Result<Vec<Bytes>> {
    let mut rows = Vec::new();
    for b in batches {
        let text = decode::as_text(b)?;
        let (batch, receipt) =
            Batch::build(b.clone(), text, Format::Json, "bench".into(), 0, limits)?;
        anyhow::ensure!(
            receipt.rejected == 0,
            "generated events were rejected: {:?}",
            receipt.errors.first()
        );
        rows.push(batch.rows);
    }
    Ok(rows)
}

/// Empties every table that holds events or what is derived from them (rollups, their deltas and top lists),
/// and puts the pair seal at now: each measurement starts from an empty, consistent database. Rollups left from
/// the ingest runs, without their events, would disagree with comm_logs in the query run, and mislead the
/// answers that use them to narrow a window or to guess top talkers.
pub(crate) async fn truncate(pool: &Pool) -> anyhow::Result<()> {
    pool.get()
        .await?
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE (SELECT 'TRUNCATE ' || string_agg(format('%I', tablename), ', ')
                          FROM pg_tables WHERE schemaname = current_schema()
                          AND tablename NOT IN ('schema_migrations', 'comm_pair_seal'));
             END $$;
             UPDATE comm_pair_seal SET sealing_to = now(), sealed_to = now();
             CHECKPOINT",
        )
        .await?;
    Ok(())
}

/// COPYs `rows` (one buffer per generated batch) over `conns` connections, `per_copy` rows per transaction.
pub(crate) async fn raw_copy(
    pool: &Pool,
    rows: &[Bytes],
    conns: usize,
    per_copy: usize,
) -> anyhow::Result<f64> {
    let batches_per_copy = (per_copy / 1000).max(1);
    let groups: Vec<Vec<Bytes>> = rows
        .chunks(batches_per_copy)
        .map(<[Bytes]>::to_vec)
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let groups = Arc::new(groups);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (pool, next, groups) = (pool.clone(), next.clone(), groups.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = pool.get().await?;
            let sql = copy::copy_statement();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(group) = groups.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let tx = client.transaction().await?;
                let sink = tx.copy_in::<_, Bytes>(&sql).await?;
                futures_util::pin_mut!(sink);
                sink.feed(Bytes::from_static(copy::HEADER)).await?;
                for chunk in group {
                    sink.feed(chunk.clone()).await?;
                }
                sink.feed(Bytes::from_static(copy::TRAILER)).await?;
                sink.as_mut().finish().await?;
                tx.commit().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the collector in this process and sends every batch over HTTP from `clients` tasks, optionally paced
/// to `rate` events/s in total. Time ends when the last row is committed.
async fn end_to_end(
    base: &ServeConfig,
    url: &str,
    pool: &Pool,
    batches: &[Bytes],
    clients: usize,
    rate: Option<f64>,
    durability: Ack,
) -> anyhow::Result<(Measured, Resources)> {
    let _ = base;
    end_to_end_watched(&[], url, pool, batches, clients, rate, durability, 0).await
}

/// [`end_to_end`] at full speed, held once every event has committed until the seal has passed the last of them,
/// before the collector's figures are taken and it stops: the rollup work of the run's events then falls in the
/// run (in a run of seconds, most of it comes after, the seal lagging `COLLECTOR_PAIR_SEAL_LAG_MS` behind), and
/// the caller's PostgreSQL CPU window holds all of it.
async fn end_to_end_settled(
    url: &str,
    pool: &Pool,
    batches: &[Bytes],
    clients: usize,
) -> anyhow::Result<(Measured, Resources)> {
    run_once(&[], url, pool, batches, clients, None, Ack::Spool, 0, true).await
}

/// [`end_to_end`] with `tails` live tails following all events (at their rate) and, when there are any, a dashboard
/// refreshing every 10 s (the reads its page makes).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn end_to_end_watched(
    env: &[(String, String)],
    url: &str,
    pool: &Pool,
    batches: &[Bytes],
    clients: usize,
    rate: Option<f64>,
    durability: Ack,
    tails: usize,
) -> anyhow::Result<(Measured, Resources)> {
    run_once(
        env, url, pool, batches, clients, rate, durability, tails, false,
    )
    .await
}

/// One end-to-end run; `settle` as in [`end_to_end_settled`].
#[allow(clippy::too_many_arguments)]
async fn run_once(
    env: &[(String, String)],
    url: &str,
    pool: &Pool,
    batches: &[Bytes],
    clients: usize,
    rate: Option<f64>,
    durability: Ack,
    tails: usize,
    settle: bool,
) -> anyhow::Result<(Measured, Resources)> {
    let collector =
        Collector::start_process(url, durability, &bench_dir().join("spool"), env).await?;
    let watchers = crate::watch::start(collector.addr, tails).await?;
    let pid = collector
        .pid()
        .map_or_else(|| "self".to_string(), |p| p.to_string());
    let cpu_before = process_cpu_secs(&pid);
    let addr = collector.addr;
    let http = reqwest::Client::new();
    let endpoint = format!("http://{addr}/ingest");
    let events: usize = batches.iter().map(count_events).sum();
    let events_per_batch = events / batches.len().max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(batches.to_vec());
    let started = Instant::now();
    // Pacing: batch i may start at i * interval.
    let interval = rate.map(|r| Duration::from_secs_f64(events_per_batch as f64 / r));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, endpoint, next, batches) = (
            http.clone(),
            endpoint.clone(),
            next.clone(),
            batches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = batches.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                if let Some(iv) = interval {
                    tokio::time::sleep_until((started + iv * i as u32).into()).await;
                }
                let mut broken = 0;
                loop {
                    let t = Instant::now();
                    let sent = http
                        .post(&endpoint)
                        .header("x-api-key", KEY)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let status = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            resp.bytes().await.map(|_| status)
                        }
                        Err(e) => Err(e),
                    };
                    // A refusal answered before the body is read closes the connection, and a client still
                    // sending its body sees the connection broken, not the 503: it is counted as refused and
                    // retried (a batch accepted meanwhile would be answered as a duplicate, not stored twice).
                    let status = match status {
                        Ok(status) => status,
                        Err(_) if broken < 100 => {
                            broken += 1;
                            503
                        }
                        Err(e) => return Err(e.into()),
                    };
                    latencies.push((t.elapsed().as_secs_f64() * 1000.0, status));
                    match status {
                        202 => break,
                        503 | 429 => tokio::time::sleep(Duration::from_millis(50)).await,
                        other => anyhow::bail!("ingest answered {other}"),
                    }
                }
            }
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await??);
    }
    let requests = answers.len();
    let refused = answers.iter().filter(|(_, s)| *s == 503).count();
    let mut latencies: Vec<f64> = answers.into_iter().map(|(ms, _)| ms).collect();
    // Wait for the last commit by watching the flush ledger (one row per COPY, committed with it): polling
    // count(*) on comm_logs would scan the growing table and steal the CPU being measured.
    let client = pool.get().await?;
    loop {
        let n: i64 = client
            .query_one(
                "SELECT coalesce(sum(rows), 0)::int8 FROM ingest_flushes",
                &[],
            )
            .await?
            .get(0);
        if n as usize >= events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    if settle {
        let committed: std::time::SystemTime = client.query_one("SELECT now()", &[]).await?.get(0);
        let waiting = Instant::now();
        while !client
            .query_one("SELECT sealed_to >= $1 FROM comm_pair_seal", &[&committed])
            .await?
            .get::<_, bool>(0)
        {
            anyhow::ensure!(
                waiting.elapsed() < Duration::from_secs(300),
                "the seal did not pass the run's events within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(w) = watchers {
        let seen = w.stop().await;
        eprintln!("  the tails received {seen} events; the dashboard refreshed during the run");
    }
    let exposition = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let metric = |name: &str| {
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let resources = Resources {
        cpu_secs: process_cpu_secs(&pid) - cpu_before,
        peak_rss_mib: peak_rss_mib(&pid),
        requests,
        refused,
        fsyncs: metric("collector_spool_fsyncs_total"),
        spooled_events: metric("collector_spool_events_total"),
        spooled_records: metric("collector_spool_records_total"),
        collector_p50_ms: histogram_quantile(
            &exposition,
            "collector_ingest_duration_seconds",
            0.50,
        )
        .map(|s| s * 1000.0),
        sync_p50_ms: histogram_quantile(&exposition, "collector_spool_sync_seconds", 0.50)
            .map(|s| s * 1000.0),
        sync_p99_ms: histogram_quantile(&exposition, "collector_spool_sync_seconds", 0.99)
            .map(|s| s * 1000.0),
        db_seconds: db_seconds(&exposition),
    };
    let collector_p99_ms =
        histogram_quantile(&exposition, "collector_ingest_duration_seconds", 0.99)
            .map(|s| s * 1000.0);
    collector.stop().await?;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM comm_logs", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        stored as usize == events,
        "{stored} rows stored for {events} events sent"
    );
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
    };
    let measured = Measured {
        label: String::new(),
        comparable: true,
        events,
        secs,
        ack_p50_ms: pct(0.50),
        ack_p99_ms: pct(0.99),
        collector_p99_ms,
    };
    Ok((measured, resources))
}

/// The collector process's own cost during a run.
pub(crate) struct Resources {
    pub(crate) cpu_secs: f64,
    peak_rss_mib: f64,
    /// POSTs sent, retries included, and how many were answered 503.
    requests: usize,
    refused: usize,
    /// The spool's group commits, and the events and requests they made durable.
    fsyncs: u64,
    spooled_events: u64,
    spooled_records: u64,
    /// The median inside the collector (`collector_ingest_duration_seconds`).
    collector_p50_ms: Option<f64>,
    /// The spool's group commits (write + fsync), median and p99 (`collector_spool_sync_seconds`).
    sync_p50_ms: Option<f64>,
    sync_p99_ms: Option<f64>,
    /// `collector_db_seconds_total`: (table, step, seconds).
    db_seconds: Vec<(String, String, f64)>,
}

/// Where the database's time went, by table and step, from `collector_db_seconds_total` of `runs` over `events`.
fn db_time_table(runs: &[&[(String, String, f64)]], events: usize) -> String {
    // (heading, steps summed into it)
    const COLUMNS: [(&str, &[&str]); 5] = [
        ("writers: COPY, commit", &["copy", "commit"]),
        ("writers: deltas", &["append"]),
        ("compaction", &["take", "merge"]),
        ("seal", &["seal", "summarize"]),
        ("top lists", &["top_lists"]),
    ];
    let mut tables: Vec<&str> = Vec::new();
    for (t, _, _) in runs.iter().flat_map(|r| r.iter()) {
        if !tables.contains(&t.as_str()) {
            tables.push(t);
        }
    }
    let ms = |table: &str, steps: &[&str]| -> f64 {
        runs.iter()
            .flat_map(|r| r.iter())
            .filter(|(t, s, _)| t == table && steps.contains(&s.as_str()))
            .map(|(_, _, secs)| secs * 1000.0 * 1_000_000.0 / events.max(1) as f64)
            .sum()
    };
    let all: f64 = tables
        .iter()
        .map(|t| COLUMNS.iter().map(|(_, s)| ms(t, s)).sum::<f64>())
        .sum();
    let mut out = format!(
        "\nWhere the database's time went, by table: the write side's statements as the collector timed them \
         (`collector_db_seconds_total`, from sending each statement to its answer), in ms per million events over \
         both plain full-speed runs, each run held until the seal had passed its last event. Wall time, not \
         CPU: statements that wait for a busy core count the wait, so compare the rows with each other.\n\n\
         | table | {} | all | share |\n|---|{}---:|---:|\n",
        COLUMNS.map(|(h, _)| h).join(" | "),
        "---:|".repeat(COLUMNS.len()),
    );
    for t in tables {
        let cells: Vec<f64> = COLUMNS.iter().map(|(_, s)| ms(t, s)).collect();
        let sum: f64 = cells.iter().sum();
        let cells: Vec<String> = cells
            .iter()
            .map(|v| {
                if *v > 0.0 {
                    format!("{v:.0}")
                } else {
                    "–".into()
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "| `{t}` | {} | {sum:.0} | {:.0}% |",
            cells.join(" | "),
            sum / all.max(1e-9) * 100.0
        );
    }
    out
}

/// The `collector_db_seconds_total{table, step}` samples of an exposition.
fn db_seconds(exposition: &str) -> Vec<(String, String, f64)> {
    exposition
        .lines()
        .filter_map(|l| {
            let labels = l.strip_prefix("collector_db_seconds_total{")?;
            let (labels, value) = labels.split_once("} ")?;
            let label = |name: &str| -> Option<String> {
                let rest = labels.split(&format!("{name}=\"")).nth(1)?;
                Some(rest.split('"').next()?.to_string())
            };
            Some((label("table")?, label("step")?, value.trim().parse().ok()?))
        })
        .collect()
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.2}"))
}

fn count_events(batch: &Bytes) -> usize {
    decode::as_text(batch)
        .ok()
        .and_then(|t| decode::split(t, Format::Json).ok())
        .map_or(0, |r| r.len())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use collector::pipeline::cost::{self, Step};
    use collector::rollup::catalog;

    #[test]
    fn the_database_time_is_read_as_the_collector_writes_it() {
        cost::record(
            Some(&catalog::SRC_PORT),
            Step::Seal,
            Instant::now() - Duration::from_millis(3),
        );
        let mut exposition = String::new();
        cost::render(&mut exposition);
        let samples = super::db_seconds(&exposition);
        let seal = samples
            .iter()
            .find(|(t, s, _)| t == "comm_rollup_src_port" && s == "seal")
            .unwrap_or_else(|| panic!("no sample read from {exposition}"));
        assert!(seal.2 >= 0.003, "{seal:?}");
        let table = super::db_time_table(&[&samples], 1_000_000);
        assert!(
            table.contains("| `comm_rollup_src_port` | – | – | – | "),
            "{table}"
        );
    }
}
