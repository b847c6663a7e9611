//! Builds the collector from its configuration, runs it, and shuts it down without losing acknowledged events.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{ApiKeys, KeyConfigError};
use crate::config::{DatabaseArgs, ServeConfig};
use crate::db::embedded_pg::{Durability, EmbeddedPg, EmbeddedPgError};
use crate::db::{self, migrate, partitions, DbError};
use crate::http::{self, AppState};
use crate::pipeline::intake::Intake;
use crate::pipeline::queue::Queue;
use crate::pipeline::spool::{self, SpoolOpenError};
use crate::pipeline::writer;
use crate::pipeline::{compact, ledger};
use crate::telemetry::Stats;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Db(#[from] DbError),
    // Causes are written into the messages, not chained as sources: `{:#}` would print them twice.
    #[error("private PostgreSQL: {0}")]
    EmbeddedPg(EmbeddedPgError),
    #[error("COLLECTOR_API_KEYS: {0}")]
    Keys(KeyConfigError),
    #[error("{what}: {error}")]
    Io { what: String, error: io::Error },
    #[error("{0} queued events could not be written to PostgreSQL before the shutdown timeout")]
    Undrained(usize),
    #[error("spool: {0}")]
    Spool(#[from] SpoolOpenError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    #[error("redaction: {0}")]
    Redact(#[from] crate::enrich::redact::RedactError),
}

/// The database the collector uses: an external URL, or a private server it owns and stops on exit.
impl From<EmbeddedPgError> for AppError {
    fn from(e: EmbeddedPgError) -> Self {
        AppError::EmbeddedPg(e)
    }
}

impl From<KeyConfigError> for AppError {
    fn from(e: KeyConfigError) -> Self {
        AppError::Keys(e)
    }
}

pub struct Database {
    pub url: String,
    pub embedded: Option<EmbeddedPg>,
}

impl Database {
    /// `DATABASE_URL` when set; otherwise starts the private server in the data directory and creates the
    /// `collector` database in it.
    pub async fn open(args: &DatabaseArgs) -> Result<Database, AppError> {
        if let Some(url) = &args.database_url {
            return Ok(Database {
                url: url.clone(),
                embedded: None,
            });
        }
        let dir = args.data_dir.clone();
        tracing::info!(data_dir = %dir.display(), "Starting private PostgreSQL");
        let pg = tokio::task::spawn_blocking(move || EmbeddedPg::start(&dir, Durability::Durable))
            .await
            .map_err(|e| AppError::Io {
                what: "starting PostgreSQL".into(),
                error: io::Error::other(e),
            })??;
        db::create_database(&pg.connection_string("postgres"), "collector").await?;
        Ok(Database {
            url: pg.connection_string("collector"),
            embedded: Some(pg),
        })
    }

    pub async fn close(mut self) {
        if let Some(mut pg) = self.embedded.take() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = pg.stop() {
                    tracing::warn!(error = %e, "Stopping the private PostgreSQL failed");
                }
            })
            .await;
        }
    }
}

/// `collector serve`: open the database, migrate, listen, and run until `shutdown`.
pub async fn serve(cfg: ServeConfig, shutdown: CancellationToken) -> Result<(), AppError> {
    let mut agent_key = "<a key of COLLECTOR_API_KEYS>".to_string();
    let keys = match &cfg.api_keys {
        Some(spec) => ApiKeys::parse(spec)?,
        None => {
            let path = dev_key_path(&cfg.database.data_dir);
            let key = dev_key(&path)?;
            println!(
                "Development API key (producer \"dev\"): {key}   (saved in {})",
                path.display()
            );
            let keys = ApiKeys::parse(&format!("dev:{key}"))?;
            agent_key = key;
            keys
        }
    };
    let database = Database::open(&cfg.database).await?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| AppError::Io {
            what: format!("listening on {}", cfg.listen),
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| AppError::Io {
        what: "local address".into(),
        error,
    })?;
    let scheme = if cfg.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("Collector listening on {scheme}://{addr}  (POST /ingest, GET /healthz, GET /readyz)");
    println!(
        "For the agents (agent-configs/): export SERVER_LOGGER_URL={scheme}://{addr} SERVER_LOGGER_HOST={} \
         SERVER_LOGGER_PORT={} SERVER_LOGGER_API_KEY={agent_key}",
        addr.ip(),
        addr.port()
    );
    let result = run(&cfg, &database.url, keys, listener, shutdown).await;
    database.close().await;
    result
}

/// Runs the collector on `listener` against `database_url` until `shutdown` is cancelled, then drains.
pub async fn run(
    cfg: &ServeConfig,
    database_url: &str,
    keys: ApiKeys,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    // A certificate that does not load stops the start, before anything else is opened.
    let tls = cfg.tls_files().map(http::tls::Tls::load).transpose()?;
    // Writers hold one connection each; the rest serve readiness checks and maintenance.
    let pool = db::pool(database_url, cfg.writers + 4)?;
    let ran = migrate::run(&pool).await?;
    if ran > 0 {
        tracing::info!(migrations = ran, "Database migrated");
    }
    if cfg.database.citus {
        migrate::citus_layout(&pool).await?;
        tracing::info!("Tables laid out on the Citus cluster");
    }
    partitions::ensure(&pool, cfg.partition_days_ahead).await?;

    let stats = Arc::new(Stats::default());
    let dedup_window = Duration::from_secs(cfg.dedup_window_secs);
    let seen = crate::pipeline::dedup::Seen::new(dedup_window);
    let remembered = seen.load(&pool.get().await.map_err(DbError::from)?).await?;
    if remembered > 0 {
        tracing::info!(
            batches = remembered,
            "Accepted batches remembered for deduplication"
        );
    }
    let (queue, rx) = Queue::new(cfg.queue_capacity);
    let writer_cfg = cfg.writer_config();
    let writers = writer::spawn(cfg.writers, &pool, &rx, writer_cfg, &stats);
    drop(rx);
    let tail = crate::pipeline::tail::TailHub::new(cfg.max_tails, cfg.tail_events_per_sec);
    let geo_files = cfg.geo_files();
    let geo = if geo_files.is_empty() {
        tracing::info!(
            "Enrichment is off: no GeoIP database (COLLECTOR_GEOIP_CITY_DB, COLLECTOR_GEOIP_ASN_DB; scripts/geoip.sh)"
        );
        None
    } else {
        let geo = crate::enrich::Geo::open(geo_files);
        Some(geo)
    };
    let threats = if cfg.threat_lists.is_empty() {
        None
    } else {
        Some(crate::enrich::Threats::open(cfg.threat_lists.clone()))
    };
    let redactor = crate::enrich::Redactor::new(&cfg.redact_rules())?.map(Arc::new);
    if let Some(r) = &redactor {
        let rules: Vec<&str> = r.totals().map(|(name, _)| name).collect();
        tracing::info!(rules = %rules.join(", "), "Redaction on: applied before anything is stored or spooled");
    }
    let intake = Intake {
        redactor,
        tail: Some(tail.clone()),
        geo: geo.clone(),
        threats: threats.clone(),
        limits: cfg.build_limits(),
        max_decompressed_bytes: cfg.max_decompressed_bytes,
        memory: crate::pipeline::budget::MemoryBudget::new(cfg.memory_budget_bytes),
    };
    // The spool is opened once the writers run: what a previous run left is replayed while serving.
    let feeder_stop = CancellationToken::new();
    let (spool, feeder) = match cfg.spool_config() {
        Some(spool_cfg) => {
            tracing::info!(dir = %spool_cfg.dir.display(), "Durability: spool (a batch is on disk before its 202)");
            let (spool, feeder) = spool::open(
                spool_cfg,
                &pool,
                &seen,
                queue.clone(),
                intake.clone(),
                feeder_stop.clone(),
            )
            .await?;
            (Some(spool), Some(feeder))
        }
        None => {
            tracing::warn!(
                "Durability: memory (a crash loses acknowledged batches not yet committed; README, \"Durability\")"
            );
            (None, None)
        }
    };
    let compact_stop = CancellationToken::new();
    let compactor = tokio::spawn(compact::run(
        pool.clone(),
        Duration::from_millis(cfg.rollup_compact_ms.max(1)),
        Some(Duration::from_millis(cfg.pair_seal_lag_ms)),
        compact_stop.clone(),
    ));
    let maintenance_stop = CancellationToken::new();
    let maintenance = tokio::spawn(partitions::maintain(
        pool.clone(),
        cfg.partition_days_ahead,
        Duration::from_secs(3600),
        maintenance_stop.clone(),
    ));
    let retention = tokio::spawn(crate::pipeline::retention::maintain(
        pool.clone(),
        cfg.retention(),
        Duration::from_secs(3600),
        stats.clone(),
        maintenance_stop.clone(),
    ));
    if let Some(geo) = &geo {
        tokio::spawn(
            geo.clone()
                .watch(GEO_RELOAD_CHECK, maintenance_stop.clone()),
        );
    }
    if let Some(threats) = threats {
        tokio::spawn(threats.watch(GEO_RELOAD_CHECK, maintenance_stop.clone()));
    }
    let ledger = tokio::spawn(ledger::maintain(
        pool.clone(),
        Duration::from_secs(3600),
        dedup_window,
        spool.clone(),
        maintenance_stop.clone(),
    ));

    // The private server's disk: ingest stops before the database fills it.
    let db_disk = cfg.database.database_url.is_none().then(|| {
        let guard = crate::pipeline::disk::DiskGuard::new(
            cfg.database.data_dir.clone(),
            cfg.db_min_free_bytes,
        );
        tokio::spawn(guard.clone().watch(maintenance_stop.clone()));
        guard
    });
    // Stored keys are loaded before the first request, then reloaded so revocations reach every collector.
    let key_ring = crate::auth::KeyRing::new(keys);
    let stored_keys = key_ring.refresh(&pool).await?;
    tracing::info!(stored_keys, "API keys loaded");
    let key_refresh = tokio::spawn(key_ring.clone().maintain(
        pool.clone(),
        Duration::from_millis(cfg.key_refresh_ms.max(100)),
        maintenance_stop.clone(),
    ));
    let read_pool = db::pool_with_wait(
        database_url,
        cfg.read_connections.max(1),
        Some(Duration::from_millis(cfg.read_pool_wait_ms)),
    )?;
    let alert_stats = Arc::new(crate::alerts::AlertStats::default());
    if cfg.alert_eval_ms > 0 {
        let evaluator = crate::alerts::evaluate::Evaluator {
            pool: pool.clone(),
            // Its own connection: rules are evaluated one after another, and their reads run without parallel
            // workers (db::background_pool).
            read_pool: db::background_pool(database_url, 1)?,
            keys: key_ring.clone(),
            stats: alert_stats.clone(),
            public_url: cfg.public_url.trim_end_matches('/').to_string(),
            due: Arc::default(),
            answers: Arc::default(),
        };
        tokio::spawn(evaluator.run(
            Duration::from_millis(cfg.alert_eval_ms),
            maintenance_stop.clone(),
        ));
    }
    let notifier = crate::alerts::notify::Notifier {
        pool: pool.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AppError::Io {
                what: "making the webhook client".into(),
                error: std::io::Error::other(e),
            })?,
        max_attempts: cfg.alert_max_attempts.max(1),
        stats: alert_stats.clone(),
    };
    tokio::spawn(notifier.run(Duration::from_secs(1), maintenance_stop.clone()));
    let state = AppState {
        alerts: alert_stats,
        pool: pool.clone(),
        read_pool,
        raw_reads: http::RawReads::new(cfg.raw_reads_per_key),
        queue: queue.clone(),
        spool: spool.clone(),
        db_disk,
        keys: key_ring,
        tail,
        geo,
        intake,
        max_body_bytes: cfg.max_body_bytes,
        seen,
        queue_high_water: cfg.queue_capacity * usize::from(cfg.queue_high_water_pct.min(100)) / 100,
        query_timeout: (cfg.query_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(cfg.query_timeout_ms)),
        stats: stats.clone(),
    };
    let rate =
        (cfg.rate_limit_per_sec > 0).then_some((cfg.rate_limit_per_sec, cfg.rate_limit_burst));
    let app = http::router(state, rate);
    tracing::info!(
        writers = writers.len(),
        queue_capacity = cfg.queue_capacity,
        "Collector ready"
    );
    let limits = http::ConnLimits {
        max_connections: connection_cap(cfg.max_connections),
        header_read_timeout: Duration::from_millis(cfg.header_read_timeout_ms.max(1)),
        body_read_timeout: Duration::from_millis(cfg.body_read_timeout_ms.max(1)),
        drain_timeout: Duration::from_secs(10),
    };
    if let Some(tls) = &tls {
        tokio::spawn(
            tls.clone()
                .watch(TLS_RELOAD_CHECK, maintenance_stop.clone()),
        );
        tracing::info!(
            client_certificates = cfg.tls_client_ca.is_some(),
            "Serving HTTPS"
        );
    }
    let served = http::serve(listener, app, limits, tls, shutdown).await;

    // Stop accepting, then let the writers drain what was acknowledged. With the spool, what they do not
    // finish is on disk for the next start, so the wait is short.
    feeder_stop.cancel();
    if let Some(feeder) = feeder {
        let _ = feeder.await;
    }
    queue.close();
    tracing::info!(
        queued = queue.depth(),
        "Shutting down: draining the ingest queue"
    );
    let drain = async {
        for w in writers {
            let _ = w.await;
        }
    };
    let mut wait = Duration::from_secs(cfg.shutdown_timeout_secs);
    if spool.is_some() {
        wait = wait.min(SPOOLED_SHUTDOWN_WAIT);
    }
    let drained = tokio::time::timeout(wait, drain).await.is_ok();
    maintenance_stop.cancel();
    let _ = maintenance.await;
    let _ = retention.await;
    let _ = ledger.await;
    let _ = key_refresh.await;
    compact_stop.cancel();
    let _ = compactor.await;
    served.map_err(|error| AppError::Io {
        what: "serving HTTP".into(),
        error,
    })?;
    if !drained && spool.is_some() {
        tracing::warn!(
            events = queue.depth(),
            "Queued events were not written before shutting down: they are in the spool, and written at the next start"
        );
    } else if !drained {
        let left = queue.depth();
        tracing::error!(
            events = left,
            "Queued events were not written before the shutdown timeout"
        );
        return Err(AppError::Undrained(left));
    }
    tracing::info!(rows_written = stats.rows_written.get(), "Shut down cleanly");
    Ok(())
}

/// How often the GeoIP databases are checked for a change.
const GEO_RELOAD_CHECK: Duration = Duration::from_secs(2);

/// How often the TLS files are checked for a change.
const TLS_RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Longest wait at shutdown for the writers when a spool keeps what they have not written.
const SPOOLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// `configured`, kept below the open-file limit less room for the pools, logs and PostgreSQL's socket: past
/// that limit, accepting fails for everyone instead of refusing the newest connections.
fn connection_cap(configured: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse::<usize>()
                .ok()
        });
    match soft {
        Some(soft) if soft.saturating_sub(128) < configured => {
            let cap = soft.saturating_sub(128).max(16);
            tracing::warn!(
                configured,
                open_file_limit = soft,
                cap,
                "COLLECTOR_MAX_CONNECTIONS is above the open-file limit: connections are capped lower (raise \
                 `ulimit -n` to allow more)"
            );
            cap
        }
        _ => configured,
    }
}

/// `collector migrate`.
pub async fn migrate_only(args: &DatabaseArgs) -> Result<usize, AppError> {
    let database = Database::open(args).await?;
    let result = async {
        let pool = db::pool(&database.url, 1)?;
        let ran = migrate::run(&pool).await?;
        if args.citus {
            migrate::citus_layout(&pool).await?;
        }
        Ok::<_, DbError>(ran)
    }
    .await;
    database.close().await;
    Ok(result?)
}

fn dev_key_path(data_dir: &Path) -> PathBuf {
    data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("dev-api-key")
}

/// The development key saved at `path`, created on first use so that restarts keep it.
fn dev_key(path: &Path) -> Result<String, AppError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let k = existing.trim();
        if k.len() >= 8 {
            return Ok(k.to_string());
        }
    }
    let key: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0xf))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| AppError::Io {
            what: format!("creating {}", dir.display()),
            error,
        })?;
    }
    std::fs::write(path, &key).map_err(|error| AppError::Io {
        what: format!("writing {}", path.display()),
        error,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(key)
}
