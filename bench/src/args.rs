//! The benchmark's command line.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "bench",
    about = "Measure raw COPY, ingest end to end and reads on this machine; write BENCHMARKS.md"
)]
pub struct BenchArgs {
    /// Events in each measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Which measurements to run; the report keeps the other section from its previous run.
    #[arg(long, value_enum, default_value = "all")]
    pub suite: Suite,
    /// The long run: 100M rows for the queries and 1M events per matrix cell (well over 15 minutes here).
    #[arg(long)]
    pub full: bool,
    /// Events per cell of the clients × batch-size matrix.
    #[arg(long, default_value_t = 200_000)]
    pub matrix_events: usize,
    /// Events loaded for the query measurements (spread over 24 hours).
    #[arg(long, default_value_t = 10_000_000)]
    pub query_rows: usize,
    /// Events loaded for the query measurements of `--suite citus`, on each of the two databases.
    #[arg(long, default_value_t = 2_000_000)]
    pub citus_query_rows: usize,
    /// Keep the benchmark's data directory afterwards (for EXPLAIN; start it again with pg_ctl).
    #[arg(long)]
    pub keep_data: bool,
    /// PostgreSQL on core 0, the collector and its clients on core 1 (taskset): a stand-in for a database on a
    /// host of its own. The ingest figures go to their own section (`ingest-pinned`), beside the shared run's.
    #[arg(long)]
    pub pinned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    All,
    Ingest,
    Queries,
    /// Ingest with GeoIP, ASN, a threat list and redaction against plain ingest (its own section).
    Enrich,
    /// Ingest with 50 alert rules evaluated every 10 s against none, and one cycle's time (its own section).
    Alerts,
    /// Ingest and the query suite on a local Citus cluster (`scripts/citus.sh`) beside the single PostgreSQL.
    Citus,
}

/// The API key the benchmark's collector accepts.
pub const KEY: &str = "bench-key-0001";
