//! The collector's configuration (`collector serve`), in one struct: every setting is a flag with a matching
//! environment variable, and `.env.example` lists each with its default (a test keeps the two in sync). The
//! command line around it is in `cli`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::event::Limits;
use crate::pipeline::batch::BuildLimits;
use crate::pipeline::spool::SpoolConfig;
use crate::pipeline::writer::WriterConfig;

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. When unset, a private PostgreSQL is started from the system's binaries in --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Data directory of the private PostgreSQL (used only without DATABASE_URL).
    #[arg(long, env = "COLLECTOR_DATA_DIR", default_value = "./data/pg")]
    pub data_dir: PathBuf,

    /// After migrating, lay the tables out on a Citus cluster (DATABASE_URL is its coordinator, with workers
    /// added): events and most rollups distributed, small tables kept on the coordinator (db/citus.sql).
    #[arg(long, env = "COLLECTOR_CITUS", default_value_t = false)]
    pub citus: bool,
}

/// What a 202 promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// The batch is on disk (the spool, fsynced) before it is acknowledged: a crash, a PostgreSQL outage or a
    /// restart loses nothing acknowledged.
    Spool,
    /// Acknowledged from memory: a crash loses what is queued and not yet committed (README, "Durability").
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "COLLECTOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// PEM certificate chain to serve HTTPS with (with COLLECTOR_TLS_KEY); unset: plain HTTP. Reloaded when
    /// the file changes.
    #[arg(long, env = "COLLECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of COLLECTOR_TLS_CERT.
    #[arg(long, env = "COLLECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates whose client certificates are accepted (mTLS): a verified certificate's common
    /// name (else its first DNS name) is a producer that may ingest without an API key.
    #[arg(long, env = "COLLECTOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// With COLLECTOR_TLS_CLIENT_CA: refuse connections that present no client certificate.
    #[arg(
        long,
        env = "COLLECTOR_TLS_REQUIRE_CLIENT_CERT",
        default_value_t = false,
        requires = "tls_client_ca"
    )]
    pub tls_require_client_cert: bool,

    /// Open connections at most (also kept below the process's open-file limit); one more is closed at once,
    /// with a log line.
    #[arg(long, env = "COLLECTOR_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Longest wait for a request's headers, in milliseconds, counted from the connection's start or from the
    /// previous answer on a kept-alive connection (so it is also the idle keep-alive timeout).
    #[arg(
        long,
        env = "COLLECTOR_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// Longest wait for the next piece of a request's body, in milliseconds.
    #[arg(long, env = "COLLECTOR_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,

    /// Bootstrap keys: comma-separated `name:key` pairs; the name is stored with each event as its producer.
    /// They hold every scope (ingest, read, admin) and no tenant; make scoped keys with `collector keys create`.
    /// When unset, a development key is generated, saved beside the data directory, and printed.
    #[arg(long, env = "COLLECTOR_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// How often stored API keys are reloaded from the database, in milliseconds: a key made or revoked on
    /// any collector (or with `collector keys`) takes effect on this one within it.
    #[arg(long, env = "COLLECTOR_KEY_REFRESH_MS", default_value_t = 2_000)]
    pub key_refresh_ms: u64,

    /// Requests per second allowed per API key (token bucket); 0 disables the limit.
    #[arg(long, env = "COLLECTOR_RATE_LIMIT_PER_SEC", default_value_t = 1000)]
    pub rate_limit_per_sec: u32,

    /// Requests one key may send in a burst above the steady rate.
    #[arg(long, env = "COLLECTOR_RATE_LIMIT_BURST", default_value_t = 2000)]
    pub rate_limit_burst: u32,

    /// Largest request body as received (compressed), in bytes. Above Vector's 10 MB default batch.
    #[arg(long, env = "COLLECTOR_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,

    /// Largest body after decompression, in bytes; a decompression bomb stops here with 413.
    #[arg(long, env = "COLLECTOR_MAX_DECOMPRESSED_BYTES", default_value_t = 256 << 20)]
    pub max_decompressed_bytes: usize,

    /// How long an accepted batch is recognised when a client sends it again (same producer, same bytes or
    /// same Idempotency-Key): answered 202 "duplicate" and stored once. An hour covers Vector's and Fluent Bit's
    /// retry schedules; 0 turns it off.
    #[arg(long, env = "COLLECTOR_DEDUP_WINDOW_SECS", default_value_t = 3600)]
    pub dedup_window_secs: u64,

    /// Bytes of ingest held in memory at once: request bodies being read and decompressed, and queued batches
    /// (their text and encoded rows) until committed. Past it, POST /ingest answers 503 + Retry-After. The
    /// process stays within this plus a fixed ~200 MiB (README, "Memory").
    #[arg(long, env = "COLLECTOR_MEMORY_BUDGET_BYTES", default_value_t = 1 << 30)]
    pub memory_budget_bytes: usize,

    /// `spool`: a batch is fsynced to the spool before the 202, and survives a crash or a database outage;
    /// `memory`: acknowledged from memory, faster, and a crash loses what is not yet committed.
    #[arg(
        long,
        env = "COLLECTOR_DURABILITY",
        value_enum,
        default_value = "spool"
    )]
    pub durability: Durability,

    /// The spool's directory (one collector per directory). Default: `spool` beside the data directory.
    #[arg(long, env = "COLLECTOR_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Bytes of acknowledged batches the spool holds at most while PostgreSQL is slow or down; past it, POST
    /// /ingest answers 503 + Retry-After.
    #[arg(long, env = "COLLECTOR_SPOOL_MAX_BYTES", default_value_t = 4 << 30)]
    pub spool_max_bytes: u64,

    /// Free bytes the spool leaves on its disk; under it, POST /ingest answers 503 + Retry-After.
    #[arg(long, env = "COLLECTOR_SPOOL_MIN_FREE_BYTES", default_value_t = 256 << 20)]
    pub spool_min_free_bytes: u64,

    /// Size at which a spool segment is closed and a new one started; a segment is deleted once all its
    /// batches are committed. A replay reads one segment into memory at a time.
    #[arg(long, env = "COLLECTOR_SPOOL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub spool_segment_bytes: u64,

    /// Events held in memory between acknowledgement and commit. When full, batches wait in the spool (in
    /// `memory` durability, POST /ingest answers 503 + Retry-After).
    #[arg(long, env = "COLLECTOR_QUEUE_CAPACITY", default_value_t = 500_000)]
    pub queue_capacity: usize,

    /// /readyz reports not ready once the queue holds more than this percentage of its capacity.
    #[arg(long, env = "COLLECTOR_QUEUE_HIGH_WATER_PCT", default_value_t = 80)]
    pub queue_high_water_pct: u8,

    /// Writer tasks, each with its own connection doing COPY. More writers than cores keeps a COPY running on
    /// every core while the others gather their next flush (BENCHMARKS.md: 4 beat 2 by ~25% on 2 cores).
    #[arg(long, env = "COLLECTOR_WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// Rows that trigger a flush (one COPY transaction).
    #[arg(long, env = "COLLECTOR_FLUSH_ROWS", default_value_t = 20_000)]
    pub flush_rows: usize,

    /// Longest a batch waits for others to join its flush, in milliseconds.
    #[arg(long, env = "COLLECTOR_FLUSH_INTERVAL_MS", default_value_t = 200)]
    pub flush_interval_ms: u64,

    /// How often rollup deltas written with each COPY are merged into the keyed rollup rows, in milliseconds.
    #[arg(long, env = "COLLECTOR_ROLLUP_COMPACT_MS", default_value_t = 1_000)]
    pub rollup_compact_ms: u64,

    /// How far behind now the pair rollup is sealed from the raw events, in milliseconds: top talkers by pair
    /// read the events since then raw, and events arriving later than this are rolled up by their writer.
    #[arg(long, env = "COLLECTOR_PAIR_SEAL_LAG_MS", default_value_t = 5_000)]
    pub pair_seal_lag_ms: u64,

    /// Longest one statement of a read (`/metrics/*`, `/api/logs`) may run, in milliseconds; 0 for no limit.
    /// Answers from rollups take milliseconds; a filter the rollups cannot answer reads raw events, and over a
    /// long window of a large table that can take minutes and hold a connection the writers share.
    #[arg(long, env = "COLLECTOR_QUERY_TIMEOUT_MS", default_value_t = 15_000)]
    pub query_timeout_ms: u64,

    /// Connections serving reads (`/metrics/*`, `/api/logs`), a pool of their own: however many reads run, the
    /// writers keep theirs.
    #[arg(long, env = "COLLECTOR_READ_CONNECTIONS", default_value_t = 4)]
    pub read_connections: usize,

    /// Longest a read waits for one of those connections, in milliseconds, before it is answered 503 with
    /// Retry-After.
    #[arg(long, env = "COLLECTOR_READ_POOL_WAIT_MS", default_value_t = 2_000)]
    pub read_pool_wait_ms: u64,

    /// Reads one API key may run at once from raw events (the answers no rollup holds, and /api/logs); one
    /// more is answered 429 with Retry-After. 0: no limit.
    #[arg(long, env = "COLLECTOR_RAW_READS_PER_KEY", default_value_t = 2)]
    pub raw_reads_per_key: usize,

    /// Live tails (`GET /api/tail`, the dashboard's tail) open at once (64 at most); one more is answered 429.
    #[arg(long, env = "COLLECTOR_MAX_TAILS", default_value_t = 8)]
    pub max_tails: usize,

    /// Events a second each live tail is sent at most; the rest are counted and the follower told. A person
    /// reads a few a second; copying every event for every follower would take the writers' CPU.
    #[arg(long, env = "COLLECTOR_TAIL_EVENTS_PER_SEC", default_value_t = 200)]
    pub tail_events_per_sec: u64,

    /// Cap of the writers' retry backoff, in milliseconds.
    #[arg(long, env = "COLLECTOR_RETRY_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub retry_max_backoff_ms: u64,

    /// Longest `message`, in bytes.
    #[arg(long, env = "COLLECTOR_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Longest `tags` object (with unknown fields), in bytes.
    #[arg(long, env = "COLLECTOR_MAX_TAGS_BYTES", default_value_t = 65_536)]
    pub max_tags_bytes: usize,

    /// Longest `protocol`, `service` and `host`, in bytes.
    #[arg(long, env = "COLLECTOR_MAX_SHORT_FIELD_BYTES", default_value_t = 256)]
    pub max_short_field_bytes: usize,

    /// Raw bytes kept per dead letter in ingest_rejects.
    #[arg(long, env = "COLLECTOR_DEAD_LETTER_MAX_BYTES", default_value_t = 1 << 20)]
    pub dead_letter_max_bytes: usize,

    /// Most per-event errors listed in one answer (all rejected events are dead-lettered regardless).
    #[arg(long, env = "COLLECTOR_MAX_ERRORS_REPORTED", default_value_t = 10)]
    pub max_errors_reported: usize,

    /// Free bytes kept on the private PostgreSQL's disk (without DATABASE_URL); under it, POST /ingest answers
    /// 503 + Retry-After before the database fills its disk.
    #[arg(long, env = "COLLECTOR_DB_MIN_FREE_BYTES", default_value_t = 1 << 30)]
    pub db_min_free_bytes: u64,

    /// MaxMind DB file giving each address's country (and city): GeoIP2/GeoLite2 City or Country, DB-IP lite,
    /// any file with `country.iso_code`. Unset (with COLLECTOR_GEOIP_ASN_DB): no enrichment. Reloaded when it
    /// changes and on SIGHUP. `scripts/geoip.sh` installs a free one.
    #[arg(long, env = "COLLECTOR_GEOIP_CITY_DB")]
    pub geoip_city_db: Option<PathBuf>,

    /// MaxMind DB file giving each address's network (`autonomous_system_number` and `_organization`); may be
    /// the same file as COLLECTOR_GEOIP_CITY_DB.
    #[arg(long, env = "COLLECTOR_GEOIP_ASN_DB")]
    pub geoip_asn_db: Option<PathBuf>,

    /// Store city names too (src_city, dst_city).
    #[arg(long, env = "COLLECTOR_GEOIP_CITY", default_value_t = false)]
    pub geoip_city: bool,

    /// Threat lists, comma-separated `[name=]path` (the name defaults to the file's stem): text files of one
    /// address or network per line, `;` and `#` starting comments. An event whose source (else destination) is
    /// on a list is stored with the first such list's name in `threat`. Reloaded when they change and on SIGHUP.
    #[arg(long, env = "COLLECTOR_THREAT_LISTS", value_delimiter = ',')]
    pub threat_lists: Vec<crate::enrich::ThreatFile>,

    /// Fields removed from every event before it is stored or spooled, comma-separated: host, message,
    /// service, protocol, tags, or tags.<key> (unknown fields are tags).
    #[arg(long, env = "COLLECTOR_REDACT_DROP", value_delimiter = ',')]
    pub redact_drop: Vec<String>,

    /// Fields replaced by a keyed hash (HMAC-SHA-256, 32 hex digits): host, message, service, tags.<key>.
    #[arg(long, env = "COLLECTOR_REDACT_HASH", value_delimiter = ',')]
    pub redact_hash: Vec<String>,

    /// The hash's secret (16 bytes or more); keep it across restarts so equal values keep equal hashes.
    #[arg(long, env = "COLLECTOR_REDACT_HASH_KEY", hide_env_values = true)]
    pub redact_hash_key: Option<String>,

    /// Patterns masked in `message`, comma-separated: email, bearer (Bearer tokens), ipv4.
    #[arg(long, env = "COLLECTOR_REDACT_MASK", value_delimiter = ',')]
    pub redact_mask: Vec<String>,

    /// One more pattern (Rust regex syntax) masked in `message` as `[redacted]`.
    #[arg(long, env = "COLLECTOR_REDACT_MASK_REGEX")]
    pub redact_mask_regex: Option<String>,

    /// Prefix length IPv4 addresses are stored with (24 keeps the /24); 32 keeps them whole.
    #[arg(long, env = "COLLECTOR_REDACT_IPV4_PREFIX", default_value_t = 32)]
    pub redact_ipv4_prefix: u8,

    /// How often alert rules are evaluated (one collector at a time per database), in milliseconds; 0: never.
    #[arg(long, env = "COLLECTOR_ALERT_EVAL_MS", default_value_t = 10_000)]
    pub alert_eval_ms: u64,

    /// Attempts at delivering one alert notification before it is given up (retried with backoff from 2 s to
    /// 5 minutes between them).
    #[arg(long, env = "COLLECTOR_ALERT_MAX_ATTEMPTS", default_value_t = 12)]
    pub alert_max_attempts: i32,

    /// The collector's address as its users reach it (`https://logs.example.com`): the prefix of the links in
    /// alert notifications. Empty: the links are paths.
    #[arg(long, env = "COLLECTOR_PUBLIC_URL", default_value = "")]
    pub public_url: String,

    /// Prefix length IPv6 addresses are stored with (48 keeps the /48); 128 keeps them whole.
    #[arg(long, env = "COLLECTOR_REDACT_IPV6_PREFIX", default_value_t = 128)]
    pub redact_ipv6_prefix: u8,

    /// Days of raw events (and dead letters) kept: older daily partitions of comm_logs are dropped, hourly.
    /// Rollups keep their own retention (below). 0 keeps everything.
    #[arg(long, env = "COLLECTOR_RETENTION_DAYS", default_value_t = 0)]
    pub retention_days: u32,

    /// Days of minute rollup rows kept; older windows are answered from 5-minute rows. 0 keeps them all.
    #[arg(long, env = "COLLECTOR_ROLLUP_MINUTE_DAYS", default_value_t = 0)]
    pub rollup_minute_days: u32,

    /// Days of 5-minute rollup rows kept; older windows are answered from hour rows. 0 keeps them all.
    #[arg(long, env = "COLLECTOR_ROLLUP_5MIN_DAYS", default_value_t = 0)]
    pub rollup_5min_days: u32,

    /// Days of hour rollup rows kept (the coarsest: nothing older is answered). 0 keeps them all.
    #[arg(long, env = "COLLECTOR_ROLLUP_HOUR_DAYS", default_value_t = 0)]
    pub rollup_hour_days: u32,

    /// Daily partitions created ahead of today.
    #[arg(long, env = "COLLECTOR_PARTITION_DAYS_AHEAD", default_value_t = 3)]
    pub partition_days_ahead: u32,

    /// Longest wait, at shutdown, for queued events to reach PostgreSQL, in seconds.
    #[arg(long, env = "COLLECTOR_SHUTDOWN_TIMEOUT_SECS", default_value_t = 60)]
    pub shutdown_timeout_secs: u64,

    /// Log format.
    #[arg(
        long,
        env = "COLLECTOR_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

impl ServeConfig {
    /// What the batch builder enforces on each event and answer.
    pub fn build_limits(&self) -> BuildLimits {
        BuildLimits {
            fields: Limits {
                max_short_bytes: self.max_short_field_bytes,
                max_message_bytes: self.max_message_bytes,
                max_tags_bytes: self.max_tags_bytes,
            },
            max_errors: self.max_errors_reported,
            dead_letter_max_bytes: self.dead_letter_max_bytes,
        }
    }

    /// The redaction rules.
    pub fn redact_rules(&self) -> crate::enrich::RedactRules {
        crate::enrich::RedactRules {
            drop: self.redact_drop.clone(),
            hash: self.redact_hash.clone(),
            hash_key: self.redact_hash_key.clone(),
            mask: self.redact_mask.clone(),
            mask_regex: self.redact_mask_regex.clone(),
            ipv4_prefix: self.redact_ipv4_prefix,
            ipv6_prefix: self.redact_ipv6_prefix,
        }
    }

    /// What each writer is told.
    pub fn writer_config(&self) -> WriterConfig {
        WriterConfig {
            flush_rows: self.flush_rows,
            flush_age: self.flush_interval(),
            max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            dead_letter_max_bytes: self.dead_letter_max_bytes,
        }
    }

    /// The spool's place and bounds, in `spool` durability.
    pub fn spool_config(&self) -> Option<SpoolConfig> {
        (self.durability == Durability::Spool).then(|| SpoolConfig {
            dir: self.spool_dir.clone().unwrap_or_else(|| {
                self.database
                    .data_dir
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .join("spool")
            }),
            max_bytes: self.spool_max_bytes,
            min_free_bytes: self.spool_min_free_bytes,
            segment_bytes: self.spool_segment_bytes.max(1),
            // A quarter of the ingest budget: the rest keeps admitting requests while a backlog lasts.
            park_bytes: self.memory_budget_bytes / 4,
        })
    }

    /// The listener's certificate files, when it serves HTTPS.
    pub fn tls_files(&self) -> Option<crate::http::tls::TlsFiles> {
        Some(crate::http::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
            require_client_cert: self.tls_require_client_cert,
        })
    }

    /// The enrichment databases.
    pub fn geo_files(&self) -> crate::enrich::GeoFiles {
        crate::enrich::GeoFiles {
            city: self.geoip_city_db.clone(),
            asn: self.geoip_asn_db.clone(),
            with_city: self.geoip_city,
        }
    }

    /// What is kept, of raw events and of each rollup tier.
    pub fn retention(&self) -> crate::pipeline::retention::Retention {
        crate::pipeline::retention::Retention {
            raw_days: self.retention_days,
            rollup_days: [
                (60, self.rollup_minute_days),
                (300, self.rollup_5min_days),
                (3600, self.rollup_hour_days),
            ],
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// Defaults, as for `collector serve` with no flags (and the environment): for tests and the benchmark.
    pub fn defaults() -> ServeConfig {
        /// The serve settings alone, to parse an empty command line.
        #[derive(Parser)]
        struct Alone {
            #[command(flatten)]
            serve: ServeConfig,
        }
        match Alone::try_parse_from(["collector"]) {
            Ok(alone) => alone.serve,
            Err(e) => unreachable!("the serve settings with no flags always parse: {e}"),
        }
    }
}
