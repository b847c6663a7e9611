//! Nothing acknowledged is lost: backpressure, retries after connection loss, refused rows, shutdown, dates
//! outside the partitions; plus migrations and the configuration reference.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{pg, spawn_app, spawn_app_with, TestApp};

fn batch(n: usize, port: u16) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"src_ip":"10.0.{}.{}","dst_port":{port},"service":"s{}"}}"#,
                i / 250,
                i % 250,
                i % 7
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// Holds an exclusive lock on comm_logs in an open transaction, so writers block inside COPY.
async fn lock_comm_logs(app: &TestApp) -> tokio_postgres::Client {
    let locker = pg::connect(&app.db_url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE comm_logs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

/// Waits until `n` sessions are blocked on a lock (the writers, stuck behind `lock_comm_logs`).
async fn wait_blocked_writers(app: &TestApp, n: i64) -> Vec<i32> {
    for _ in 0..400 {
        let rows = app
            .db
            .query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'COPY comm_logs%'", &[])
            .await
            .unwrap();
        if rows.len() as i64 >= n {
            return rows.iter().map(|r| r.get(0)).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("writers never blocked on the lock");
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after_and_loses_nothing() {
    // Without the spool (with it, a full queue is not a 503: tests/it/durability.rs).
    let app = spawn_app_with(|c| {
        c.durability = collector::config::Durability::Memory;
        c.queue_capacity = 100;
        c.writers = 1;
    })
    .await;
    let locker = lock_comm_logs(&app).await;
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..5 {
        let r = app.ingest(batch(30, 80), &[]).await;
        match r.status().as_u16() {
            202 => accepted += 30,
            503 => {
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                refused = Some((retry, r.json::<Value>().await.unwrap()));
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(accepted, 90, "three batches of 30 fit in a queue of 100");
    let (retry, body) = refused.expect("the fourth batch is refused");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["code"], "queue_full");
    assert_eq!(
        body["detail"],
        "ingest queue is full (90 of 100 events waiting for the database)"
    );
    // Above the high-water mark (80%), readiness says so.
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(app.wait_rows(90).await, 90);
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn writer_connections_killed_mid_copy_neither_lose_nor_duplicate() {
    let app = spawn_app_with(|c| {
        c.writers = 2;
        c.retry_max_backoff_ms = 200;
    })
    .await;
    let locker = lock_comm_logs(&app).await;
    let mut sent = 0;
    for i in 0..6 {
        let r = app.ingest(batch(200, 1000 + i), &[]).await;
        assert_eq!(r.status(), 202);
        sent += 200;
    }
    // One writer usually takes every queued batch into a single COPY; kill whichever are blocked.
    let pids = wait_blocked_writers(&app, 1).await;
    for pid in &pids {
        app.db
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .await
            .unwrap();
    }
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(app.wait_rows(sent).await, sent);
    // Each event exactly once: every (port, ip) pair is distinct by construction.
    let distinct = app
        .count("SELECT count(DISTINCT (dst_port, src_ip)) FROM comm_logs")
        .await;
    assert_eq!(distinct, sent);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_postgres_refuses_is_isolated_and_dead_lettered() {
    let app = spawn_app().await;
    // Sabotage: a constraint validation knows nothing about.
    app.db
        .batch_execute("ALTER TABLE comm_logs ADD CONSTRAINT no_port_666 CHECK (dst_port IS DISTINCT FROM 666)")
        .await
        .unwrap();
    let body = r#"[{"dst_port":1},{"dst_port":2},{"dst_port":666,"src_ip":"10.6.6.6"},{"dst_port":3},{"dst_port":4}]"#;
    let (status, receipt) = app.ingest_json(body).await;
    assert_eq!((status, receipt["accepted"].as_u64()), (202, Some(5)));
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 1)
            .await,
        1
    );
    assert_eq!(app.wait_rows(4).await, 4);
    let ports: BTreeSet<i32> = app
        .db
        .query("SELECT dst_port FROM comm_logs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ports, BTreeSet::from([1, 2, 3, 4]));
    let r = app
        .db
        .query_one(
            "SELECT event_index, reason, convert_from(raw, 'UTF8') FROM ingest_rejects",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), 2);
    assert!(
        r.get::<_, &str>(1).contains("no_port_666"),
        "{}",
        r.get::<_, &str>(1)
    );
    assert_eq!(
        r.get::<_, &str>(2),
        r#"{"dst_port":666,"src_ip":"10.6.6.6"}"#
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_drains_the_queue() {
    let app = spawn_app().await;
    let locker = lock_comm_logs(&app).await;
    let mut sent = 0;
    for i in 0..10 {
        assert_eq!(app.ingest(batch(300, 2000 + i), &[]).await.status(), 202);
        sent += 300;
    }
    let ready: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["queue_depth"], sent,
        "everything is still queued when shutdown starts"
    );
    let db_url = app.db_url.clone();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    stopping.await.unwrap().expect("clean shutdown");
    let db = pg::connect(&db_url).await;
    let n: i64 = db
        .query_one("SELECT count(*) FROM comm_logs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, sent);
}

#[tokio::test]
async fn events_outside_the_partitions_are_stored_and_moved_when_their_day_is_created() {
    let app = spawn_app().await;
    let body = r#"[{"timestamp":"2020-01-01T12:00:00Z","src_ip":"10.0.0.1"},{"timestamp":"2999-06-01T00:00:00Z"}]"#;
    let (status, receipt) = app.ingest_json(body).await;
    assert_eq!((status, receipt["accepted"].as_u64()), (202, Some(2)));
    assert_eq!(app.wait_rows(2).await, 2);
    assert_eq!(app.count("SELECT count(*) FROM comm_logs_default").await, 2);
    let created: bool = app
        .db
        .query_one("SELECT comm_logs_ensure_partition('2020-01-01')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(created);
    assert_eq!(
        app.count("SELECT count(*) FROM comm_logs_p20200101").await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM comm_logs_default").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM comm_logs").await, 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let app = spawn_app().await;
    let pool = collector::db::pool(&app.db_url, 1).unwrap();
    assert_eq!(collector::db::migrate::run(&pool).await.unwrap(), 0);
    let versions = app.count("SELECT count(*) FROM schema_migrations").await;
    assert_eq!(versions, collector::db::migrate::MIGRATIONS.len() as i64);
    app.stop().await.unwrap();
}

#[test]
fn env_example_lists_every_setting() {
    use clap::CommandFactory;
    let cli = collector::cli::Cli::command();
    // Every subcommand's settings that come from the environment.
    let args: Vec<&clap::Arg> = cli
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .collect();
    let from_code: BTreeSet<String> = args
        .iter()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.example")).unwrap();
    let documented: BTreeSet<String> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert_eq!(from_code, documented);
    // And every default in the file is the code's default.
    for arg in args {
        let (Some(env), Some(default)) = (arg.get_env(), arg.get_default_values().first()) else {
            continue;
        };
        let line = format!("{}={}", env.to_string_lossy(), default.to_string_lossy());
        assert!(
            text.lines()
                .any(|l| l.trim().trim_start_matches('#').trim() == line),
            "missing `{line}`"
        );
    }
}

/// `collector serve` (the real binary, as the quick start runs it) with its private PostgreSQL in `dir`, once
/// it is ready; and its URL.
async fn serve_private(dir: &std::path::Path) -> (std::process::Child, String) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let env = [
        ("COLLECTOR_DATA_DIR", dir.join("pg").display().to_string()),
        ("COLLECTOR_API_KEYS", "smoke:smoke-key-1".to_string()),
    ];
    crate::support::binary::serve(&env, &["DATABASE_URL"]).await
}

/// A collector killed outright cannot stop its PostgreSQL: the watchdog it left does, within seconds.
#[tokio::test]
async fn a_killed_collector_leaves_no_postgres_running() {
    let dir = std::env::temp_dir().join(format!("collector-killed-{}", std::process::id()));
    let (mut child, _) = serve_private(&dir).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let pid_file = dir.join("pg/postmaster.pid");
    let mut stopped = false;
    for _ in 0..300 {
        if !pid_file.exists() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped,
        "PostgreSQL still running 30 s after its collector was killed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary, as the quick start runs it: private PostgreSQL, SIGTERM, exit 0, nothing lost.
#[tokio::test]
async fn serve_binary_with_private_postgres_shuts_down_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("collector-serve-{}", std::process::id()));
    let (child, url) = serve_private(&dir).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let r = http
            .post(format!("{url}/ingest"))
            .header("x-api-key", "smoke-key-1")
            .body(batch(100, 3000 + i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    crate::support::binary::terminate(child).await;
    // The private server was stopped with it ...
    assert!(
        !dir.join("pg/postmaster.pid").exists(),
        "PostgreSQL still running after the collector exited"
    );
    // ... and everything acknowledged is there when it starts again.
    let data_dir = dir.join("pg");
    let pg = tokio::task::spawn_blocking(move || {
        collector::db::embedded_pg::EmbeddedPg::start(
            &data_dir,
            collector::db::embedded_pg::Durability::Durable,
        )
    })
    .await
    .unwrap()
    .unwrap();
    // The exited collector's watchdog looks once a second: it must leave this new server alone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let db = pg::connect(&pg.connection_string("collector")).await;
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM comm_logs WHERE producer = 'smoke'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 500);
    drop(db);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// As root, a clone under a folder the `postgres` user cannot enter (a `mktemp -d` folder, /root): the quick
/// start still runs, with the server's files kept where that user can reach them and linked from the data dir.
#[tokio::test]
async fn serve_works_under_a_folder_postgres_cannot_enter() {
    use std::os::unix::fs::PermissionsExt;
    if !std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
    {
        eprintln!("not root: PostgreSQL runs as this user, and every folder it made is its own");
        return;
    }
    let outer = std::env::temp_dir().join(format!("collector-closed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outer);
    std::fs::create_dir_all(&outer).unwrap();
    std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = outer.join("clone");
    let (child, url) = serve_private(&dir).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/ingest"))
        .header("x-api-key", "smoke-key-1")
        .body(batch(10, 4000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let link = std::fs::read_link(dir.join("pg")).expect("the data dir is a link");
    assert!(link.starts_with(collector::db::embedded_pg::RELOCATED_ROOT));
    assert!(link.join("PG_VERSION").exists());
    crate::support::binary::terminate(child).await;
    let _ = std::fs::remove_dir_all(&link);
    let _ = std::fs::remove_dir_all(&outer);
}

/// A failed bind says why once (its cause was printed twice).
#[tokio::test]
async fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("serve")
        .env("DATABASE_URL", pg::fresh_database().await)
        .env("COLLECTOR_LISTEN", taken.local_addr().unwrap().to_string())
        .env("COLLECTOR_API_KEYS", "smoke:smoke-key-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: listening on"), "{stderr}");
    assert_eq!(last.matches("Address already in use").count(), 1, "{last}");
}

/// Three collectors on one database, each with its own spool, loaded at once: compaction, seals and partition
/// upkeep run one at a time across them (advisory locks), nothing is lost or doubled, and the rollups equal the
/// raw table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_on_one_database_share_it_exactly() {
    three_collectors_share(pg::fresh_database().await, false).await;
}

/// Three collectors on `db_url` (laid out for Citus when `citus`) loaded at once; see above.
pub async fn three_collectors_share(db_url: String, citus: bool) {
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            crate::support::spawn_app_at(db_url.clone(), |c| {
                c.rollup_compact_ms = 100;
                c.database.citus = citus;
            })
            .await,
        );
    }
    let sends = apps.iter().enumerate().map(|(n, app)| async move {
        for i in 0..20u16 {
            let r = app.ingest(batch(250, 1000 * n as u16 + i), &[]).await;
            assert_eq!(r.status(), 202);
        }
    });
    futures_util::future::join_all(sends).await;
    let first = &apps[0];
    assert_eq!(first.wait_rows(3 * 20 * 250).await, 3 * 20 * 250);
    let per_port = first
        .count("SELECT count(*) FROM (SELECT dst_port FROM comm_logs GROUP BY 1 HAVING count(*) <> 250) x")
        .await;
    assert_eq!(per_port, 0, "every batch stored once");
    first.assert_rollup_matches_raw().await;
    for app in apps {
        app.stop().await.unwrap();
    }
}

/// The systemd unit in `deploy/` is one systemd accepts without a warning (`systemd-analyze verify`), with
/// its ExecStart pointed at the binary just built.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/collector.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/collector serve"));
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/server-logger",
        "Restart=always",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/collector", env!("CARGO_BIN_EXE_collector")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// `docker-compose.yml` as any Compose v2 reads it (no `env_file` long syntax, which needs 2.24): PostgreSQL
/// counted healthy only once its real server answers over TCP, both services restarted, the collector checked
/// and its spool on a volume; and the build context leaves out `target/`.
#[test]
fn the_compose_file_starts_on_a_fresh_volume() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let compose: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let services = &compose["services"];
    let pg_check = services["postgres"]["healthcheck"]["test"][1]
        .as_str()
        .unwrap();
    assert!(pg_check.contains("pg_isready -h 127.0.0.1"), "{pg_check}");
    for name in ["postgres", "collector"] {
        assert_eq!(services[name]["restart"], "unless-stopped", "{name}");
        assert!(services[name]["env_file"].is_null(), "{name}: env_file");
    }
    let collector = &services["collector"];
    assert_eq!(
        collector["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    assert!(collector["healthcheck"]["test"][3]
        .as_str()
        .unwrap()
        .contains("/healthz"));
    assert!(collector["volumes"][0]
        .as_str()
        .unwrap()
        .ends_with(":/var/lib/collector/spool"));
    let ignored = std::fs::read_to_string(format!("{root}/.dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l.trim() == "target"));
    let dockerfile = std::fs::read_to_string(format!("{root}/collector/Dockerfile")).unwrap();
    assert!(dockerfile.contains("COLLECTOR_SPOOL_DIR=/var/lib/collector/spool"));
}

/// `COLLECTOR_RETENTION_DAYS`: a day of raw events past it is dropped with its partition (and old rows of the
/// default partition deleted, and old dead letters pruned), counted in /metrics; recent days stay, and the
/// rollups keep every event ever stored.
#[tokio::test]
async fn retention_drops_old_days_of_raw_events_and_keeps_the_rollups() {
    raw_retention(pg::fresh_database().await, false).await;
}

/// The test above on `db_url` (laid out for Citus when `citus`).
pub async fn raw_retention(db_url: String, citus: bool) {
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| today.checked_sub_days(chrono::Days::new(n)).unwrap();
    let (old, recent, older) = (day(10), day(1), day(20));
    let admin = pg::connect(&db_url).await;
    // The old day's partition, as the collector made it then; the older day has none (its rows are in the
    // default partition).
    admin
        .execute("SELECT comm_logs_ensure_partition($1)", &[&old])
        .await
        .unwrap();
    let at = |d: chrono::NaiveDate, n: usize| {
        let events: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"timestamp":"{d}T12:00:{:02}Z","src_ip":"10.9.0.{i}","service":"kept"}}"#,
                    i % 60
                )
            })
            .collect();
        format!("[{}]", events.join(","))
    };
    let first = crate::support::spawn_app_at(db_url.clone(), |c| c.database.citus = citus).await;
    for (d, n) in [(old, 20), (recent, 30), (older, 5)] {
        assert_eq!(first.ingest(at(d, n), &[]).await.status(), 202);
    }
    assert_eq!(first.wait_rows(55).await, 55);
    first.assert_rollup_matches_raw().await;
    admin
        .batch_execute(
            "INSERT INTO ingest_rejects (received_at, producer, reason, raw)
             VALUES (now() - interval '10 days', 'p', 'old', '\\x00'), (now(), 'p', 'recent', '\\x00')",
        )
        .await
        .unwrap();
    first.stop().await.unwrap();

    let second = crate::support::spawn_app_at(db_url.clone(), |c| {
        c.retention_days = 3;
        c.database.citus = citus;
    })
    .await;
    let partition = format!("comm_logs_p{}", old.format("%Y%m%d"));
    let exists = |name: String| {
        let admin = &admin;
        async move {
            admin
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    // The counters move once the whole pass has committed: the partition dropped, then the default
    // partition's old rows deleted (on Citus a read during that delete's commit may see some shards done).
    let done = [
        "collector_retention_partitions_dropped_total 1",
        "collector_retention_rows_deleted_total 5",
        "collector_retention_dead_letters_pruned_total 1",
    ];
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = second.metrics_text().await;
        if done.iter().all(|line| metrics.contains(line)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in done {
        assert!(metrics.contains(line), "{line}");
    }
    assert!(
        !exists(partition).await,
        "the old day's partition is dropped"
    );
    assert_eq!(second.count("SELECT count(*) FROM comm_logs").await, 30);
    assert_eq!(
        second
            .count("SELECT sum(events)::int8 FROM comm_rollup_service WHERE res = 3600")
            .await,
        55,
        "the rollups keep every event"
    );
    assert_eq!(second.count("SELECT count(*) FROM ingest_rejects").await, 1);
    second.stop().await.unwrap();
}

/// Several collectors on one database: retention is applied by one at a time (an advisory lock); a collector
/// that finds it taken passes its turn and removes nothing.
#[tokio::test]
async fn retention_runs_on_one_collector_at_a_time() {
    let db_url = pg::fresh_database().await;
    let admin = pg::connect(&db_url).await;
    let old = chrono::Utc::now()
        .date_naive()
        .checked_sub_days(chrono::Days::new(10))
        .unwrap();
    admin
        .execute("SELECT comm_logs_ensure_partition($1)", &[&old])
        .await
        .unwrap();
    let partition = format!("comm_logs_p{}", old.format("%Y%m%d"));
    let exists = || async {
        admin
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&partition])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    let pool = collector::db::pool(&db_url, 2).unwrap();
    let retention = collector::pipeline::retention::Retention {
        raw_days: 3,
        ..Default::default()
    };
    let stats = collector::telemetry::Stats::default();
    // Another collector holds the turn.
    let other = pg::connect(&db_url).await;
    other
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&collector::db::locks::RETENTION],
        )
        .await
        .unwrap();
    let ran = collector::pipeline::retention::once(&pool, &retention, &stats)
        .await
        .unwrap();
    assert!(!ran);
    assert!(
        exists().await,
        "nothing is removed while another collector applies it"
    );
    other
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&collector::db::locks::RETENTION],
        )
        .await
        .unwrap();
    let ran = collector::pipeline::retention::once(&pool, &retention, &stats)
        .await
        .unwrap();
    assert!(ran);
    assert!(!exists().await, "the old day's partition is dropped");
    // And the lock was let go: the next turn runs too.
    assert!(
        collector::pipeline::retention::once(&pool, &retention, &stats)
            .await
            .unwrap()
    );
}

/// Rows of tier `res` older than `days` in every rollup table (and top list) of the catalog.
async fn tier_rows_older(db: &tokio_postgres::Client, res: i32, days: i32) -> i64 {
    let mut n = 0;
    for shape in collector::rollup::catalog::SHAPES.iter() {
        let mut tables = vec![shape.table.to_string()];
        if shape.top_lists.is_some() {
            tables.extend(
                ["_top", "_top_floor", "_top_pending"].map(|s| format!("{}{s}", shape.table)),
            );
        }
        for t in tables {
            let sql = format!(
                "SELECT count(*) FROM {t} WHERE res = $1 AND bucket < now() - make_interval(days => $2)"
            );
            n += db
                .query_one(&sql, &[&res, &days])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
    }
    n
}

/// `COLLECTOR_ROLLUP_MINUTE_DAYS` and `_5MIN_DAYS`: each tier's old rows go (from every rollup table, counted
/// in /metrics), coarser tiers keep the trend, and an answer reaching back past a tier's retention is read from
/// the tier kept there, its window widened to that tier's buckets; a bucket finer than what is kept is a 400.
#[tokio::test]
async fn rollup_tiers_keep_their_own_days_and_answers_read_the_tiers_kept() {
    rollup_retention(pg::fresh_database().await, false).await;
}

/// The test above on `db_url` (laid out for Citus when `citus`).
pub async fn rollup_retention(db_url: String, citus: bool) {
    let today = chrono::Utc::now().date_naive();
    let day = |n: u64| today.checked_sub_days(chrono::Days::new(n)).unwrap();
    let (yesterday, old, older) = (day(1), day(10), day(20));
    let at = |d: chrono::NaiveDate, n: usize| {
        let events: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"timestamp":"{d}T12:00:{:02}Z","src_ip":"10.9.0.{i}","service":"kept"}}"#,
                    i % 60
                )
            })
            .collect();
        format!("[{}]", events.join(","))
    };
    let first = crate::support::spawn_app_at(db_url.clone(), |c| c.database.citus = citus).await;
    for (d, n) in [(yesterday, 30), (old, 20), (older, 5)] {
        assert_eq!(first.ingest(at(d, n), &[]).await.status(), 202);
    }
    assert_eq!(first.wait_rows(55).await, 55);
    first.assert_rollup_matches_raw().await;
    first.stop().await.unwrap();
    let admin = pg::connect(&db_url).await;
    let doomed = tier_rows_older(&admin, 60, 2).await + tier_rows_older(&admin, 300, 15).await;
    assert!(doomed > 0);

    let app = crate::support::spawn_app_at(db_url.clone(), |c| {
        c.rollup_minute_days = 2;
        c.rollup_5min_days = 15;
        c.database.citus = citus;
    })
    .await;
    for _ in 0..200 {
        if tier_rows_older(&admin, 60, 2).await + tier_rows_older(&admin, 300, 15).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sum = |res: i32| {
        format!("SELECT coalesce(sum(events), 0)::int8 FROM comm_rollup_service WHERE res = {res}")
    };
    let kept = (
        app.count(&sum(60)).await,
        app.count(&sum(300)).await,
        app.count(&sum(3600)).await,
    );
    assert_eq!(kept, (30, 50, 55));
    assert_eq!(
        app.count("SELECT count(*) FROM comm_logs").await,
        55,
        "raw events have their own retention"
    );
    assert!(
        app.metrics_text().await.contains(&format!(
            "collector_retention_rollup_rows_deleted_total {doomed}"
        )),
        "every deleted row counted"
    );

    let window =
        |d: chrono::NaiveDate, from: &str, to: &str| format!("from={d}T{from}Z&to={d}T{to}Z");
    // Minutes of 10 days ago: from the 5-minute rows, the window widened to them.
    let (status, v) = app
        .get_json(&format!(
            "/metrics/volume?{}",
            window(old, "11:58:00", "12:03:00")
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["total"]["events"].as_i64(), v["bucket"].as_str()),
        (Some(20), Some("5m")),
        "{v}"
    );
    assert_eq!(v["from"], format!("{old}T11:55:00Z"));
    assert_eq!(v["to"], format!("{old}T12:05:00Z"));
    // 20 days ago only hour rows are left.
    let (status, v) = app
        .get_json(&format!(
            "/metrics/volume?{}",
            window(older, "12:00:00", "12:10:00")
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["total"]["events"].as_i64(), v["bucket"].as_str()),
        (Some(5), Some("1h")),
        "{v}"
    );
    let (status, v) = app
        .get_json(&format!(
            "/metrics/top-talkers?by=src_ip&{}",
            window(older, "11:30:00", "12:30:00")
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["total_events"], 5, "{v}");
    assert_eq!(v["from"], format!("{older}T11:00:00Z"));
    // Asking for minutes there is refused, saying why.
    let (status, v) = app
        .get_json(&format!(
            "/metrics/volume?bucket=1m&{}",
            window(old, "11:00:00", "13:00:00")
        ))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("COLLECTOR_ROLLUP_MINUTE_DAYS"),
        "{v}"
    );
    // Yesterday's minutes are kept.
    let (status, v) = app
        .get_json(&format!(
            "/metrics/volume?bucket=1m&{}",
            window(yesterday, "11:00:00", "13:00:00")
        ))
        .await;
    assert_eq!(
        (status, v["total"]["events"].as_i64()),
        (200, Some(30)),
        "{v}"
    );
    app.stop().await.unwrap();
}

/// The private PostgreSQL's disk under COLLECTOR_DB_MIN_FREE_BYTES: ingest is answered 503 + Retry-After (here
/// the floor is set above any disk's free space), and nothing is stored.
#[tokio::test]
async fn a_private_database_short_of_disk_refuses_ingest() {
    let dir = std::env::temp_dir().join(format!("collector-dbdisk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let env = [
        ("COLLECTOR_DATA_DIR", dir.join("pg").display().to_string()),
        ("COLLECTOR_API_KEYS", "smoke:smoke-key-1".to_string()),
        ("COLLECTOR_DB_MIN_FREE_BYTES", (u64::MAX / 4).to_string()),
    ];
    let (child, url) = crate::support::binary::serve(&env, &["DATABASE_URL"]).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/ingest"))
        .header("x-api-key", "smoke-key-1")
        .body(batch(10, 4100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "database_disk_low", "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("COLLECTOR_DB_MIN_FREE_BYTES"));
    crate::support::binary::terminate(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}
