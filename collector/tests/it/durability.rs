//! A 202 is a promise that survives a crash, an outage and a retry: the write-ahead spool (pipeline::spool),
//! tried with the real binary killed outright, a real PostgreSQL stopped and started, and real damaged files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use collector::db::embedded_pg::{Durability, EmbeddedPg};
use collector::pipeline::spool::format::{self, Record};
use rand::Rng;

use crate::support::app::{assert_rollup_matches_raw, KEY, PRODUCER};
use crate::support::{binary, pg, spawn_app_at, spawn_app_with};

/// A batch of `n` events whose messages name it (`b<id>-<i>`), varied enough to touch every rollup.
pub(crate) fn batch(id: u64, n: usize) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"src_ip":"10.{}.{}.{}","dst_ip":"192.0.2.{}","dst_port":{},"service":"s{}","status":{},"latency_ms":{},"bytes_in":{},"message":"b{id}-{i}"}}"#,
                id % 200,
                i / 250,
                i % 250,
                i % 11,
                80 + (i % 5),
                id % 7,
                if i % 9 == 0 { 503 } else { 200 },
                (i * 7 + id as usize) % 900,
                i * 10
            )
        })
        .collect();
    format!("[{}]", events.join(","))
}

/// Events per batch id stored, and how many of them are distinct.
pub(crate) async fn stored_batches(db: &tokio_postgres::Client) -> BTreeMap<u64, (i64, i64)> {
    db.query(
        "SELECT substr(split_part(message, '-', 1), 2)::int8, count(*), count(DISTINCT message)
         FROM comm_logs GROUP BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<_, i64>(0) as u64, (r.get(1), r.get(2))))
    .collect()
}

/// Waits until comm_logs holds `n` rows (or 90 s), then a little longer so that duplicates would show.
pub(crate) async fn wait_rows(db: &tokio_postgres::Client, n: i64) -> i64 {
    let count = || async {
        db.query_one("SELECT count(*) FROM comm_logs", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    for _ in 0..900 {
        if count().await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    count().await
}

/// Sends batches `first, first + step, …` one at a time, each again until it is answered 202 (as an agent
/// retries), and records every id acknowledged; stops when `stop` is set.
pub(crate) async fn load(
    url: String,
    key: &'static str,
    first: u64,
    step: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut id = first;
    while !stop.load(Ordering::Relaxed) {
        let body = batch(id, 40);
        while !stop.load(Ordering::Relaxed) {
            let sent = http
                .post(format!("{url}/ingest"))
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| r.status() == 202) {
                acked.lock().unwrap().insert(id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id += step;
    }
}

/// `kill -9` at random moments under load, six times, restarting at once, after 2 s, and after the private
/// PostgreSQL the dead collector left has been stopped by its watchdog: the collector always comes back with a
/// database, every acknowledged event is in comm_logs exactly once, and the rollups equal the raw table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged_and_stores_it_once() {
    let dir = std::env::temp_dir().join(format!("collector-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = binary::free_port();
    let env = [
        ("COLLECTOR_DATA_DIR", dir.join("pg").display().to_string()),
        ("COLLECTOR_API_KEYS", "crash:crash-key-1".to_string()),
        ("COLLECTOR_FLUSH_INTERVAL_MS", "50".to_string()),
    ];
    let (mut child, url) = binary::serve_on(port, &env, &["DATABASE_URL"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let loaders: Vec<_> = (0..2)
        .map(|c| {
            tokio::spawn(load(
                url.clone(),
                "crash-key-1",
                c,
                2,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let mut rng = rand::rng();
    let pid_file = dir.join("pg/postmaster.pid");
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(400..1500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        match round % 3 {
            0 => {}
            1 => tokio::time::sleep(Duration::from_secs(2)).await,
            _ => {
                for _ in 0..300 {
                    if !pid_file.exists() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(
                    !pid_file.exists(),
                    "the dead collector's PostgreSQL was never stopped"
                );
            }
        }
        (child, _) = binary::serve_on(port, &env, &["DATABASE_URL"]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "the load ran: {} batches acknowledged",
        acked.len()
    );

    let socket = std::fs::canonicalize(dir.join("pg")).unwrap();
    let db = pg::connect(&format!(
        "host={} port=5432 user=postgres dbname=collector",
        socket.display()
    ))
    .await;
    assert_acked_stored_once(&db, &acked).await;
    drop(db);
    crate::support::binary::terminate(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every acknowledged batch of 40 events (`load`) is stored, and every batch stored (acknowledged, or sent when
/// a collector died and then resent) is whole and once; the rollups equal the raw events.
pub(crate) async fn assert_acked_stored_once(db: &tokio_postgres::Client, acked: &BTreeSet<u64>) {
    wait_rows(db, acked.len() as i64 * 40).await;
    let stored = stored_batches(db).await;
    let missing: Vec<u64> = acked
        .iter()
        .filter(|id| !stored.contains_key(id))
        .copied()
        .collect();
    assert!(missing.is_empty(), "acknowledged batches lost: {missing:?}");
    let wrong: Vec<_> = stored
        .iter()
        .filter(|(_, &(n, distinct))| n != 40 || distinct != 40)
        .collect();
    assert!(
        wrong.is_empty(),
        "batches stored partly or more than once (id, (rows, distinct)): {wrong:?}"
    );
    assert_rollup_matches_raw(db).await;
}

/// A PostgreSQL of the test's own, to stop and start again (the shared one serves every other test).
struct OwnServer {
    data_dir: std::path::PathBuf,
}

impl OwnServer {
    fn new(dir: &Path) -> OwnServer {
        OwnServer {
            data_dir: dir.join("pg"),
        }
    }

    /// Starts it (the first time: initialised, with a `collector` database).
    async fn start(&self) -> EmbeddedPg {
        let data_dir = self.data_dir.clone();
        let server = tokio::task::spawn_blocking(move || {
            EmbeddedPg::start(&data_dir, Durability::Throwaway).unwrap()
        })
        .await
        .unwrap();
        collector::db::create_database(&server.connection_string("postgres"), "collector")
            .await
            .unwrap();
        server
    }
}

/// PostgreSQL stopped for longer than the in-memory queue could hold while load continues: every batch is
/// acknowledged (no 503 while the spool has room), /readyz says what is going on, and once the database is
/// back every acknowledged event lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_longer_than_the_queue_is_absorbed_by_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let own = OwnServer::new(dir.path());
    let server = own.start().await;
    let db_url = server.connection_string("collector");
    let app = spawn_app_at(db_url.clone(), |c| {
        c.queue_capacity = 300;
        c.writers = 2;
        c.retry_max_backoff_ms = 200;
        // Room to keep about half the waiting batches decoded (a quarter of this); the rest are read back.
        c.memory_budget_bytes = 2 << 20;
    })
    .await;
    for id in 0..5 {
        assert_eq!(app.ingest(batch(id, 100), &[]).await.status(), 202);
    }
    assert_eq!(wait_rows(&app.db, 500).await, 500);

    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    for id in 5..45 {
        let r = app.ingest(batch(id, 100), &[]).await;
        assert_eq!(
            r.status(),
            202,
            "batch {id} during the outage: {}",
            r.text().await.unwrap()
        );
    }
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready while the spool has room");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert!(
        ready["database"].as_str().unwrap().contains("unreachable"),
        "{ready}"
    );
    assert_eq!(ready["spool"]["backlog"], true, "{ready}");
    assert!(app
        .metrics_text()
        .await
        .contains("collector_spool_backlog 1"));

    let server = own.start().await;
    let db = pg::connect(&db_url).await;
    assert_eq!(wait_rows(&db, 4500).await, 4500);
    let stored = stored_batches(&db).await;
    assert_eq!(stored.len(), 45);
    assert!(
        stored.values().all(|&(n, d)| n == 100 && d == 100),
        "{stored:?}"
    );
    assert_rollup_matches_raw(&db).await;
    // The backlog is fed; new batches go straight to the queue again.
    for _ in 0..100 {
        if app
            .metrics_text()
            .await
            .contains("collector_spool_backlog 0")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("collector_spool_backlog 0"));
    // Behind the backlog, batches were kept decoded while there was room (queued without a second decode), and
    // the rest read back from disk.
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let (kept, read_back) = (
        counter("collector_spool_kept_decoded_total"),
        counter("collector_spool_replayed_total"),
    );
    assert!(kept > 0 && read_back > 0, "{metrics}");
    assert!(kept + read_back >= 37, "{metrics}");
    app.stop().await.unwrap();
    drop(db);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

fn record(seq: u64, name: &str) -> Record {
    let events: Vec<String> = (0..3)
        .map(|i| format!(r#"{{"service":"replay","message":"{name}-{i}"}}"#))
        .collect();
    Record {
        seq,
        received_at_us: chrono::Utc::now().timestamp_micros(),
        identity: [seq as u8; 16],
        producer: PRODUCER.to_string(),
        content_type: Some("application/json".into()),
        content_encoding: None,
        kind: Default::default(),
        body: Bytes::from(format!("[{}]", events.join(","))),
    }
}

/// A segment file holding `records`, passed through `damage` before it is written.
fn write_segment(dir: &Path, records: &[Record], damage: impl FnOnce(&mut BytesMut, &[usize])) {
    let mut bytes = BytesMut::from(&format::segment_header()[..]);
    let mut offsets = Vec::new();
    for r in records {
        offsets.push(bytes.len());
        format::encode(&mut bytes, r);
    }
    damage(&mut bytes, &offsets);
    std::fs::write(dir.join(format::segment_name(records[0].seq)), &bytes).unwrap();
}

/// What a crash or a bad disk leaves: a segment torn mid-record, one with a flipped byte inside a record, an
/// empty segment, a file that is not the collector's, and a batch PostgreSQL already has. Every whole record
/// is replayed once; the damaged ones, and the one already stored, are not.
#[tokio::test]
async fn damaged_segments_replay_every_whole_record_and_report_the_rest() {
    let spool = tempfile::tempdir().unwrap();
    let dir = spool.path();
    let (a, b, c) = (record(1, "A"), record(2, "B"), record(3, "C"));
    write_segment(dir, &[a, b, c], |bytes, _| {
        let torn = bytes.len() - 7;
        bytes.truncate(torn);
    });
    let (d, e, f) = (record(4, "D"), record(5, "E"), record(6, "F"));
    write_segment(dir, &[d, e, f], |bytes, offsets| {
        bytes[offsets[1] + 60] ^= 0x04
    });
    std::fs::write(dir.join(format::segment_name(7)), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not the collector's").unwrap();
    let g = record(8, "G");
    let g_identity = g.identity;
    write_segment(dir, &[g], |_, _| {});

    let db_url = pg::fresh_database().await;
    let db = pg::connect(&db_url).await;
    db.execute(
        "INSERT INTO ingest_batches (producer, digest) VALUES ($1, $2)",
        &[&PRODUCER, &&g_identity[..]],
    )
    .await
    .unwrap();
    let app = spawn_app_at(db_url, |c| c.spool_dir = Some(dir.to_path_buf())).await;
    assert_eq!(wait_rows(&app.db, 12).await, 12);
    let names: BTreeSet<String> = app
        .texts("SELECT DISTINCT split_part(message, '-', 1) FROM comm_logs")
        .await
        .into_iter()
        .collect();
    assert_eq!(names, ["A", "B", "D", "F"].map(String::from).into());
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("collector_spool_replayed_total 4"),
        "{metrics}"
    );
    // The foreign file is left alone; the segments found go once their batches are committed (the empty one at
    // once). The next segment, made ahead of time, may be there.
    assert!(dir.join("notes.txt").exists());
    let found: Vec<String> = [1, 4, 7, 8].map(format::segment_name).into();
    let left = || {
        found
            .iter()
            .filter(|name| dir.join(name).exists())
            .cloned()
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if left().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left().is_empty(), "segments left: {:?}", left());
    app.stop().await.unwrap();
}

/// With PostgreSQL stopped and a small spool budget, requests are answered 503 + Retry-After once the spool is
/// full; everything acknowledged lands when the database is back, and requests are acknowledged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let own = OwnServer::new(dir.path());
    let server = own.start().await;
    let db_url = server.connection_string("collector");
    let app = spawn_app_at(db_url.clone(), |c| {
        c.queue_capacity = 100;
        c.writers = 1;
        c.retry_max_backoff_ms = 200;
        c.spool_max_bytes = 96 << 10;
    })
    .await;
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    let mut acked = 0;
    let mut refused = None;
    for id in 0..100 {
        let r = app.ingest(batch(id, 50), &[]).await;
        if r.status() == 202 {
            acked += 1;
            continue;
        }
        refused = Some(r);
        break;
    }
    let refused = refused.expect("the spool filled up");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "spool_full", "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("COLLECTOR_SPOOL_MAX_BYTES"));
    assert!(
        acked >= 5,
        "{acked} batches acknowledged before the spool filled"
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready with a full spool");

    let server = own.start().await;
    let db = pg::connect(&db_url).await;
    assert_eq!(wait_rows(&db, acked * 50).await, acked * 50);
    assert_eq!(stored_batches(&db).await.len() as i64, acked);
    let mut again = 0;
    for _ in 0..100 {
        again = app.ingest(batch(1000, 50), &[]).await.status().as_u16();
        if again == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again, 202, "acknowledged again once the spool drained");
    app.stop().await.unwrap();
    drop(db);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

/// Under COLLECTOR_SPOOL_MIN_FREE_BYTES of free disk: 503 + Retry-After, nothing acknowledged.
#[tokio::test]
async fn a_disk_without_room_answers_503() {
    let app = spawn_app_with(|c| c.spool_min_free_bytes = u64::MAX / 4).await;
    let r = app.ingest(batch(1, 5), &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "spool_disk_low", "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count("SELECT count(*) FROM comm_logs").await, 0);
    app.stop().await.unwrap();
}

/// A write to the spool that fails (here its directory is gone, so no new segment can be made) answers 503,
/// never 202; once the directory is back, batches are acknowledged again, and every acknowledged one lands.
#[tokio::test]
async fn a_spool_write_error_answers_503_and_recovers() {
    let app = spawn_app_with(|c| c.spool_segment_bytes = 1).await;
    let dir = app.spool_dir.clone().unwrap();
    assert_eq!(app.ingest(batch(1, 10), &[]).await.status(), 202);
    assert_eq!(wait_rows(&app.db, 10).await, 10);
    std::fs::remove_dir_all(&dir).unwrap();
    let r = app.ingest(batch(2, 10), &[]).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "spool_io_error", "{body}");
    assert!(app
        .metrics_text()
        .await
        .contains("collector_spool_append_errors_total 1"));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(app.ingest(batch(3, 10), &[]).await.status(), 202);
    assert_eq!(wait_rows(&app.db, 20).await, 20);
    let stored: Vec<u64> = stored_batches(&app.db).await.into_keys().collect();
    assert_eq!(stored, vec![1, 3]);
    app.stop().await.unwrap();
}

/// One collector per spool directory: a second one pointed at it refuses to start, and says why.
#[tokio::test]
async fn a_second_collector_on_the_same_spool_refuses_to_start() {
    let first = spawn_app_with(|_| {}).await;
    let dir = first.spool_dir.clone().unwrap();
    let mut cfg = collector::config::ServeConfig::defaults();
    cfg.spool_dir = Some(dir.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys = collector::auth::ApiKeys::parse(&format!("{PRODUCER}:{KEY}")).unwrap();
    let run = collector::app::run(
        &cfg,
        &first.db_url,
        keys,
        listener,
        tokio_util::sync::CancellationToken::new(),
    );
    let err = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("refused at once")
        .expect_err("a second collector on one spool");
    let msg = err.to_string();
    assert!(
        msg.contains("in use by another collector") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
    first.stop().await.unwrap();
}
