//! A collector running in this process on port 0 against a fresh database.

use std::time::Duration;

use collector::app::{self, AppError};
use collector::auth::ApiKeys;
use collector::config::ServeConfig;
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
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a collector with the default configuration as changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
    // The collector's warnings and errors go to the test's captured output (shown when it fails).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let db_url = pg::fresh_database().await;
    let mut cfg = ServeConfig::defaults();
    cfg.database.database_url = Some(db_url.clone());
    // Quick flushes keep the tests short; the batching logic is the same.
    cfg.flush_interval_ms = 20;
    cfg.shutdown_timeout_secs = 60;
    configure(&mut cfg);
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
    let http = reqwest::Client::new();
    let url = format!("http://{addr}");
    // Ready when /healthz answers: migrations and partitions are done before the listener serves.
    for _ in 0..600 {
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = pg::connect(&db_url).await;
    TestApp {
        url,
        db_url,
        db,
        http,
        shutdown,
        handle: Some(handle),
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

    /// Asserts that comm_rollup_1m holds exactly the per-minute aggregate of comm_logs (both directions).
    pub async fn assert_rollup_matches_raw(&self) {
        let sql = "
            WITH raw AS (
                SELECT date_trunc('minute', ts) AS b, producer, service, protocol, host, dst_port, status,
                       count(*) AS events, coalesce(sum(bytes_in), 0)::int8 AS bi, coalesce(sum(bytes_out), 0)::int8 AS bo,
                       count(latency_ms) AS ln, round(coalesce(sum(latency_ms), 0)::numeric, 6) AS ls, max(latency_ms) AS lm
                FROM comm_logs GROUP BY 1, 2, 3, 4, 5, 6, 7),
            ru AS (
                SELECT bucket, producer, service, protocol, host, dst_port, status, events, bytes_in, bytes_out,
                       latency_n, round(latency_sum::numeric, 6), latency_max
                FROM comm_rollup_1m)
            SELECT (SELECT count(*) FROM (SELECT * FROM raw EXCEPT ALL SELECT * FROM ru) x)
                 + (SELECT count(*) FROM (SELECT * FROM ru EXCEPT ALL SELECT * FROM raw) y)
                 + (SELECT count(*) FROM comm_rollup_1m r
                    WHERE latency_n <> (SELECT coalesce(sum(v::int8), 0) FROM jsonb_each_text(r.latency_hist) AS h(k, v)))";
        assert_eq!(
            self.count(sql).await,
            0,
            "rollup differs from the raw aggregate"
        );
        assert!(
            self.count("SELECT count(*) FROM comm_rollup_1m").await > 0
                || self.count("SELECT count(*) FROM comm_logs").await == 0
        );
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
