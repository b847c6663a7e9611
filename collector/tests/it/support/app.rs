//! A collector running in this process on port 0 against a fresh database.

use std::time::Duration;

use collector::app::{self, AppError};
use collector::auth::ApiKeys;
use collector::config::ServeConfig;
use collector::rollup::histogram as latency;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::pg;

pub const KEY: &str = "secret123";
pub const PRODUCER: &str = "producer-a";

pub struct TestApp {
    pub url: String,
    pub db_url: String,
    pub db: tokio_postgres::Client,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), AppError>>>,
    /// The spool's directory when the test did not place it; removed with the app.
    pub spool_dir: Option<std::path::PathBuf>,
    _spool: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a collector with the default configuration as changed by `configure`, on a fresh database.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_app_at(pg::fresh_database().await, configure).await
}

/// [`spawn_app_with`] on the database at `db_url`.
pub async fn spawn_app_at(db_url: String, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    // The collector's warnings and errors go to the test's captured output (shown when it fails).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let mut cfg = ServeConfig::defaults();
    cfg.database.database_url = Some(db_url.clone());
    // Quick flushes keep the tests short; the batching logic is the same.
    cfg.flush_interval_ms = 20;
    cfg.shutdown_timeout_secs = 60;
    // Tests send the same bytes again on purpose (to fill queues, to repeat a load); deduplication has tests
    // of its own, which turn it on.
    cfg.dedup_window_secs = 0;
    let spool = tempfile::Builder::new()
        .prefix("collector-spool-")
        .tempdir()
        .expect("spool directory");
    cfg.spool_dir = Some(spool.path().to_path_buf());
    // Segments of a mebibyte: each app would otherwise zero-fill 64 MiB ahead (the same code, at any size).
    cfg.spool_segment_bytes = 1 << 20;
    configure(&mut cfg);
    let tls = cfg.tls_cert.is_some();
    let spool_dir = cfg.spool_dir.clone();
    let keys = ApiKeys::parse(&format!("{PRODUCER}:{KEY},other:another-key-456")).expect("keys");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding port 0");
    let addr = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let url_for_run = db_url.clone();
    let handle =
        tokio::spawn(async move { app::run(&cfg, &url_for_run, keys, listener, token).await });
    // Over TLS, the harness's own client takes any certificate: the TLS tests check certificates with
    // clients of their own.
    let (http, url) = if tls {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        (http, format!("https://{addr}"))
    } else {
        (reqwest::Client::new(), format!("http://{addr}"))
    };
    // Ready when /healthz answers: migrations and partitions are done before the listener serves. Until then
    // a connection waits in the bound socket's backlog; over TLS a handshake the app refuses (a client
    // certificate required) also says it serves.
    for _ in 0..600 {
        match tokio::time::timeout(
            Duration::from_millis(500),
            http.get(format!("{url}/healthz")).send(),
        )
        .await
        {
            Ok(Ok(_)) => break,
            Ok(Err(_)) if tls => break,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let db = pg::connect(&db_url).await;
    TestApp {
        url,
        db_url,
        db,
        http,
        shutdown,
        handle: Some(handle),
        spool_dir,
        _spool: Some(spool),
    }
}

impl TestApp {
    /// POSTs `body` to /ingest with the test key and the given headers.
    pub async fn ingest(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/ingest", self.url))
            .header("x-api-key", KEY);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body).send().await.expect("POST /ingest")
    }

    pub async fn ingest_json(&self, body: &str) -> (u16, serde_json::Value) {
        let resp = self
            .ingest(body.to_string(), &[("content-type", "application/json")])
            .await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    pub async fn count_param(
        &self,
        sql: &str,
        param: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> i64 {
        self.db.query_one(sql, &[param]).await.expect(sql).get(0)
    }

    /// An authenticated GET of `path`: status and JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The collector's own Prometheus exposition (`GET /metrics`), asked with the test key (so with
    /// per-producer series).
    pub async fn metrics_text(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    /// [`TestApp::get_json`], asserting a 200.
    pub async fn ok_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get_json(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// The first column of every row of `sql`, as text.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        texts(&self.db, sql).await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// Waits until `SELECT count(*) FROM comm_logs` reaches `n` (the writer commits asynchronously), then
    /// returns the count, so that the caller's assertion sees any overshoot too. Gives up after 60 s.
    pub async fn wait_rows(&self, n: i64) -> i64 {
        self.wait_count("SELECT count(*) FROM comm_logs", n).await
    }

    pub async fn wait_count(&self, sql: &str, n: i64) -> i64 {
        for _ in 0..1200 {
            let c = self.count(sql).await;
            if c >= n {
                // A little longer, so duplicates (if any) have time to show.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return self.count(sql).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.count(sql).await
    }

    /// Asserts that every rollup table, at every tier, holds exactly what `comm_rollup_rebuild` (SQL over
    /// comm_logs) computes: counts, bytes, latency sums and the histograms themselves. The writer's rollups are
    /// restored afterwards (the check runs in a transaction it rolls back).
    pub async fn assert_rollup_matches_raw(&self) {
        assert_rollup_matches_raw(&self.db).await;
    }

    /// Rows (per tier, bucket and key) where a sealed rollup (pairs, sources by port), its deltas and the raw
    /// events since the seal together differ from SQL over comm_logs.
    pub async fn sealed_differing_from_raw(&self) -> i64 {
        sealed_differing_from_raw(&self.db).await
    }

    /// [`TestApp::sealed_differing_from_raw`] while no seal runs (their lock held): on Citus, whose statements
    /// have no snapshot common to the coordinator and the workers, a seal committing during the check would
    /// be seen half.
    pub async fn sealed_differing_from_raw_between_seals(&self) -> i64 {
        self.db.batch_execute("BEGIN").await.unwrap();
        self.db
            .execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&collector::db::locks::COMPACTOR],
            )
            .await
            .unwrap();
        let n = sealed_differing_from_raw(&self.db).await;
        self.db.batch_execute("COMMIT").await.unwrap();
        n
    }

    /// Graceful shutdown; returns what the collector's run returned.
    pub async fn stop(mut self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.handle
            .take()
            .expect("running")
            .await
            .expect("collector task")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Asserts that every rollup table, at every tier, holds exactly what `comm_rollup_rebuild` (SQL over comm_logs)
/// computes: counts, bytes, latency sums and the histograms themselves. The writer's rollups are restored
/// afterwards (the check runs in a transaction it rolls back).
pub async fn assert_rollup_matches_raw(db: &tokio_postgres::Client) {
    const TABLES: [&str; 7] = [
        "comm_rollup",
        "comm_rollup_host",
        "comm_rollup_service",
        "comm_rollup_src",
        "comm_rollup_dst",
        "comm_rollup_src_net",
        "comm_rollup_geo",
    ];
    // The writers append deltas; the compactor moves them into the keyed rows within a second or so.
    let deltas = TABLES
        .map(|t| format!("(SELECT count(*) FROM {t}_delta)"))
        .join(" + ");
    let deltas = &format!("SELECT {deltas}");
    for _ in 0..600 {
        if count(db, deltas).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(db, deltas).await, 0, "deltas not compacted");
    let raw = count(db, "SELECT count(*) FROM comm_logs").await;
    db.batch_execute("BEGIN").await.unwrap();
    // No compaction or seal meanwhile, from any collector on the database (the rebuild below deletes and
    // rewrites the rollups they merge into; on Citus the two would deadlock on the shards).
    db.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&collector::db::locks::COMPACTOR],
    )
    .await
    .unwrap();
    // The sealed rollups first, before the rebuild below rewrites them (and with no seal committing meanwhile:
    // on Citus a statement has no snapshot common to the coordinator and the workers).
    let sealed = sealed_differing_from_raw(db).await;
    let mut problems = Vec::new();
    for t in TABLES {
        // Every tier sums to the raw row count (so neither side below can be vacuously empty).
        let per_tier = db
            .query(
                &format!("SELECT res, sum(events)::int8 FROM {t} GROUP BY 1 ORDER BY 1"),
                &[],
            )
            .await
            .unwrap();
        let per_tier: Vec<(i32, i64)> = per_tier.iter().map(|r| (r.get(0), r.get(1))).collect();
        let want: Vec<(i32, i64)> = match (
            raw,
            t.ends_with("_src") || t.ends_with("_dst") || t.ends_with("_net"),
        ) {
            (0, _) => vec![],
            (_, true) => vec![(300, raw), (3600, raw)],
            (_, false) => vec![(60, raw), (300, raw), (3600, raw)],
        };
        if per_tier != want {
            problems.push(format!("{t}: events per tier {per_tier:?}, want {want:?}"));
        }
        db.batch_execute(&format!(
            "CREATE TEMP TABLE written_{t} AS SELECT * FROM {t}"
        ))
        .await
        .unwrap();
    }
    // Stored percentiles are those of their row's histogram (db/migrations/0010); the rebuild leaves them out.
    let summarized = db
        .query(
            "SELECT latency_hist, latency_pcts FROM written_comm_rollup_service
             WHERE latency_pcts IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    let mismatched = summarized
        .iter()
        .filter(|r| {
            let mut hist = latency::Histogram::default();
            r.get::<_, latency::StoredHistogram<'_>>(0)
                .for_each(|b, n| hist.add(b, n))
                .unwrap();
            latency::percentiles(&hist, &latency::PERCENTILES) != Some(r.get(1))
        })
        .count();
    if mismatched != 0 {
        problems.push(format!(
            "comm_rollup_service: {mismatched} stored percentiles differ from their histogram's"
        ));
    }
    db.batch_execute("UPDATE written_comm_rollup_service SET latency_pcts = NULL")
        .await
        .unwrap();
    db.batch_execute(
        "SELECT comm_rollup_rebuild(date_trunc('hour', min(ts)), date_trunc('hour', max(ts)) + interval '1 hour')
         FROM comm_logs HAVING count(*) > 0",
    )
    .await
    .unwrap();
    for t in TABLES {
        if matches!(
            t,
            "comm_rollup" | "comm_rollup_host" | "comm_rollup_service"
        ) {
            // Float sums in another order: equal to 6 decimals.
            for side in [format!("written_{t}"), t.to_string()] {
                db.batch_execute(&format!(
                    "UPDATE {side} SET latency_sum = round(latency_sum::numeric, 6)"
                ))
                .await
                .unwrap();
            }
        }
        let diff = count(
            db,
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM written_{t} EXCEPT ALL SELECT * FROM {t}) a)
                      + (SELECT count(*) FROM (SELECT * FROM {t} EXCEPT ALL SELECT * FROM written_{t}) b)"
            ))
            .await;
        if diff != 0 {
            problems.push(format!("{t}: {diff} rows differ from the raw aggregate"));
        }
    }
    db.batch_execute("ROLLBACK").await.unwrap();
    if sealed != 0 {
        problems.push(format!(
            "comm_rollup_pair, comm_rollup_src_port: {sealed} rows differ from the raw aggregate"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Rows (per tier, bucket and key) where a sealed rollup (pairs, sources by port), its deltas and the raw events
/// since the seal together differ from SQL over comm_logs; each rollup in one statement, so in one snapshot.
pub async fn sealed_differing_from_raw(db: &tokio_postgres::Client) -> i64 {
    let mut differing = 0;
    for (table, a, b) in [
        ("comm_rollup_pair", "src_ip", "dst_ip"),
        ("comm_rollup_src_port", "src_ip", "dst_port"),
    ] {
        differing += count(
            db,
            &format!(
                "WITH tiers(res) AS (VALUES (300), (3600)),
                 raw AS (SELECT t.res, date_bin(t.res * interval '1 second', ts, to_timestamp(0)) AS bucket,
                                {a}, {b}, ts, coalesce(bytes_in, 0) AS bi, coalesce(bytes_out, 0) AS bo,
                                (status >= 500)::int AS e, (status BETWEEN 400 AND 499)::int AS ce
                         FROM comm_logs, tiers AS t),
                 seen AS (SELECT res, bucket, {a}, {b}, sum(events)::int8, sum(bytes_in)::int8,
                                 sum(bytes_out)::int8, sum(errors)::int8, sum(client_errors)::int8
                          FROM (SELECT res, bucket, {a}, {b}, events, bytes_in, bytes_out, errors, client_errors
                                FROM {table}
                                UNION ALL
                                SELECT t.res, date_bin(t.res * interval '1 second', bucket, to_timestamp(0)),
                                       {a}, {b}, events, bytes_in, bytes_out, errors, client_errors
                                FROM {table}_delta, tiers AS t
                                WHERE gen IS NULL OR gen <= (SELECT sealed_to FROM comm_pair_seal)
                                UNION ALL
                                SELECT res, bucket, {a}, {b}, 1, bi, bo, coalesce(e, 0), coalesce(ce, 0) FROM raw
                                WHERE ts >= (SELECT sealed_to FROM comm_pair_seal)) AS x
                          GROUP BY 1, 2, 3, 4),
                 want AS (SELECT res, bucket, {a}, {b}, count(*)::int8, sum(bi)::int8, sum(bo)::int8,
                                 coalesce(sum(e), 0)::int8, coalesce(sum(ce), 0)::int8
                          FROM raw GROUP BY 1, 2, 3, 4)
                 SELECT (SELECT count(*) FROM (SELECT * FROM seen EXCEPT ALL SELECT * FROM want) a)
                      + (SELECT count(*) FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM seen) b)"
            ),
        )
        .await;
    }
    differing
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

/// The first column of every row of `sql`, as text.
pub async fn texts(db: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    db.query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}
