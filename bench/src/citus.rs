//! `--suite citus`: ingest and the query suite on a local Citus cluster (a coordinator and two workers started
//! by `scripts/citus.sh`, the Citus layout of db/citus.sql) beside the single PostgreSQL of the same run.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use deadpool_postgres::Pool;

use collector::config::{Durability as Ack, ServeConfig};
use collector::db::{self, migrate, partitions};

use crate::args::BenchArgs;
use crate::data::generate;
use crate::ingest::{end_to_end_watched, raw_copy, truncate};

/// The cluster, stopped and removed when dropped.
struct Cluster {
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args(["scripts/citus.sh", "stop"])
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) async fn run(
    args: &BenchArgs,
    cfg: &ServeConfig,
    url: &str,
    pool: &Pool,
) -> anyhow::Result<String> {
    let dir = crate::ingest::bench_dir().join("citus");
    eprintln!("Citus: starting a coordinator and two workers ...");
    let out = std::process::Command::new("bash")
        .args(["scripts/citus.sh", "start"])
        .arg(&dir)
        .arg("9700")
        .output()
        .context("running scripts/citus.sh")?;
    let cluster = Cluster { dir };
    anyhow::ensure!(
        out.status.success(),
        "scripts/citus.sh start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let citus_url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let citus_pool = db::pool(&citus_url, cfg.writers + 2)?;
    migrate::run(&citus_pool).await?;
    migrate::citus_layout(&citus_pool).await?;
    partitions::ensure(&citus_pool, 1).await?;

    eprintln!("Citus: generating {} events ...", args.events);
    let batches = generate(args.seed, args.events, args.batch_size);
    let rows = crate::ingest::encode_all(&batches, &cfg.build_limits())?;
    let mut table = String::from(
        "| measurement | single PostgreSQL, events/s | Citus, 2 workers, events/s | Citus ÷ single |\n\
         |---|---:|---:|---:|\n",
    );
    let mut figures = Vec::new();
    for (name, target_url, target_pool) in [
        ("single", url, pool),
        ("citus", &citus_url[..], &citus_pool),
    ] {
        truncate(target_pool).await?;
        eprintln!(
            "Citus suite, {name}: raw COPY, {} connections ...",
            cfg.writers
        );
        let secs = raw_copy(target_pool, &rows, cfg.writers, cfg.flush_rows).await?;
        let raw = args.events as f64 / secs;
        truncate(target_pool).await?;
        eprintln!("Citus suite, {name}: the collector end to end ...");
        let (m, _) = end_to_end_watched(
            &[],
            target_url,
            target_pool,
            &batches,
            args.clients,
            None,
            Ack::Spool,
            0,
        )
        .await?;
        figures.push((raw, m.rate()));
    }
    let [(raw1, e2e1), (raw3, e2e3)] = [figures[0], figures[1]];
    let _ = writeln!(
        table,
        "| raw COPY BINARY into `comm_logs`, {} connections | {raw1:.0} | {raw3:.0} | {:.2}× |",
        cfg.writers,
        raw3 / raw1
    );
    let _ = writeln!(
        table,
        "| collector end to end, {} clients, with the spool | {e2e1:.0} | {e2e3:.0} | {:.2}× |",
        args.clients,
        e2e3 / e2e1
    );

    let rows_q = args.citus_query_rows;
    let mut reads = String::new();
    for (name, target_url, target_pool) in [
        ("single", url, pool),
        ("citus", &citus_url[..], &citus_pool),
    ] {
        truncate(target_pool).await?;
        eprintln!("Citus suite, {name}: the query suite at {rows_q} rows ...");
        let t = Instant::now();
        let section = crate::queries::run(target_pool, target_url, cfg, rows_q, args.seed).await?;
        let heading = if name == "single" {
            "### Reads, single PostgreSQL"
        } else {
            "### Reads, Citus (coordinator and two workers)"
        };
        let _ = writeln!(
            reads,
            "{heading}\n\n{} ({:.0} s in all)\n",
            section
                .replacen(&format!("## Queries at {rows_q} rows\n"), "", 1)
                .trim(),
            t.elapsed().as_secs_f64()
        );
    }
    citus_pool.close();
    drop(cluster);
    Ok(format!(
        "## Citus\n\n\
         `scripts/bench.sh --suite citus`: the same {events} events ({batch}-event JSON batches) into a single \
         PostgreSQL and into a local Citus cluster (`scripts/citus.sh`: a coordinator and two workers, Citus \
         13.2, the layout of `db/citus.sql`), one after the other in one run. **Caveat: the three Citus servers, \
         the collector and its clients share the same 2 cores** (and one disk), so this measures what \
         distribution costs, not what it gains: every row crosses the coordinator to a worker, and each upsert \
         of a distributed rollup is routed to its shard.\n\n{table}\n{reads}\
         **With workers on their own hosts** (on paper, not measured here): COPY into a distributed table is \
         parsed and routed by the coordinator, which sends each row to its shard; the workers do the indexing \
         and storage, the part that bounds a single server (BENCHMARKS \"Ingest\": without the btree the same \
         COPY runs ~1.7× faster). So ingest should grow with the workers until the coordinator's routing and \
         the rollup upserts bound it: the collector's writers send each flush's rollup deltas as multi-row \
         upserts that the coordinator splits per shard, and the source and pair rollups (kept on the \
         coordinator with their top lists) are written and sealed there. Reads from distributed rollups fan out \
         to every shard (hash on `bucket` cannot prune a time range) and gather on the coordinator: their cost \
         is one round trip per worker more than a single server's, while reads of raw events scale with the \
         workers scanning their own shards in parallel.\n",
        events = args.events,
        batch = args.batch_size,
    ))
}
