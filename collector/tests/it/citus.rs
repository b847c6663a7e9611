//! The collector on a local Citus cluster (a coordinator and two workers, `scripts/citus.sh`) with the Citus
//! layout (`COLLECTOR_CITUS=true`, db/citus.sql): the same data sent to it and to a single PostgreSQL gives the
//! same answer to every read, the rollups equal the raw events, a day's partition is made under events already
//! stored for it, and several collectors share the cluster exactly. Skipped, with a message, where Citus is not
//! installed (`support::citus`).

use serde_json::Value;

use crate::support::{citus, data, pg, spawn_app_at, TestApp};

/// Events a distribution column must not be: no source address, no service, no host.
const WITHOUT_KEYS: &str = r#"[
    {"timestamp":"2026-11-22T11:00:00Z","dst_ip":"192.0.2.1","dst_port":443,"status":200,"message":"no-src"},
    {"timestamp":"2026-11-22T11:00:01Z","src_ip":"10.9.0.1","status":503,"message":"no-service"},
    {"timestamp":"2026-11-22T11:00:02Z","message":"nothing-but-a-message"}
]"#;

async fn load(app: &TestApp) {
    data::load(app).await;
    let (status, receipt) = app.ingest_json(WITHOUT_KEYS).await;
    assert_eq!(
        (status, receipt["rejected"].as_u64()),
        (202, Some(0)),
        "{receipt}"
    );
    let n = data::EVENTS as i64 + 3;
    assert_eq!(app.wait_rows(n).await, n);
}

/// An answer without what differs between two runs of the same question: timings.
fn comparable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !matches!(k.as_str(), "took_ms" | "elapsed_ms" | "as_of"));
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Every row of `/api/logs` over the data set, following the keyset pages of `limit`.
async fn all_logs(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut path =
            format!("/api/logs?from=2026-11-22T09:00:00Z&to=2026-11-22T12:00:00Z&limit={limit}");
        if let Some(cursor) = &next {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = app.ok_json(&path).await;
        rows.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => return rows,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_on_citus_equals_single_node() {
    let Some(citus_url) = citus::fresh_database() else {
        return;
    };
    let single = spawn_app_at(pg::fresh_database().await, |c| c.pair_seal_lag_ms = 0).await;
    let spread = spawn_app_at(citus_url, |c| {
        c.database.citus = true;
        c.pair_seal_lag_ms = 0;
    })
    .await;
    // The layout is in place: events and most rollups are distributed, the seal's bound is not.
    let kinds = spread
        .texts(
            "SELECT logicalrelid::text || ':' || partmethod::text FROM pg_dist_partition
             WHERE logicalrelid::text IN ('comm_logs', 'comm_rollup_service', 'comm_rollup_src_port',
                                          'comm_pair_seal', 'comm_rollup_pair')
             ORDER BY 1",
        )
        .await;
    assert_eq!(kinds, ["comm_logs:h", "comm_rollup_service:h"]);
    for app in [&single, &spread] {
        load(app).await;
    }
    // The stored events' day gets its partition, its rows moved out of the default one.
    for app in [&single, &spread] {
        app.db
            .execute("SELECT comm_logs_ensure_partition('2026-11-22')", &[])
            .await
            .unwrap();
        assert_eq!(app.count("SELECT count(*) FROM comm_logs_default").await, 0);
        assert_eq!(
            app.count("SELECT count(*) FROM comm_logs_p20261122").await,
            data::EVENTS as i64 + 3
        );
    }
    // Sealed up to the data's end on both (the pair and source-by-port rollups).
    for app in [&single, &spread] {
        let caught_up =
            "SELECT (sealed_to > '2026-11-22T12:00:00Z')::int::int8 FROM comm_pair_seal";
        assert_eq!(app.wait_count(caught_up, 1).await, 1);
    }
    let window = "from=2026-11-22T10:00:00Z&to=2026-11-22T12:00:00Z";
    let questions = [
        format!("/metrics/volume?{window}&bucket=5m"),
        format!("/metrics/volume?{window}&group_by=service"),
        format!("/metrics/error-rate?{window}&bucket=1m&group_by=service"),
        format!("/metrics/latency?{window}&bucket=1h"),
        format!("/metrics/latency?{window}&group_by=service"),
        format!("/metrics/top-talkers?{window}&by=src_ip&limit=20"),
        format!("/metrics/top-talkers?{window}&by=dst_ip&metric=bytes"),
        format!("/metrics/top-talkers?{window}&by=pair&limit=30"),
        format!("/metrics/top-talkers?{window}&by=dst_port"),
        format!("/metrics/top-talkers?{window}&by=service"),
        format!("/metrics/volume?{window}&src=10.0.0.0/16&dst_port=443"),
        format!("/metrics/volume?{window}&src=10.1.0.0/16&dst=192.0.2.3"),
        format!("/metrics/error-rate?{window}&src=2001:db8::/64"),
        format!("/metrics/volume?{window}&dst_port=53&status=503"),
    ];
    for q in &questions {
        let (a, b) = (single.ok_json(q).await, spread.ok_json(q).await);
        assert_eq!(comparable(a), comparable(b), "{q}");
    }
    // Paging visits every row once, on pages that cut through events sharing a timestamp.
    let (a, b) = (all_logs(&single, 7).await, all_logs(&spread, 7).await);
    let key = |r: &Value| r["message"].as_str().unwrap_or_default().to_string();
    let mut a: Vec<String> = a.iter().map(key).collect();
    let mut b: Vec<String> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(b.len(), data::EVENTS + 3);
    assert_eq!(a, b, "every row once, on both");
    spread.assert_rollup_matches_raw().await;
    single.stop().await.unwrap();
    spread.stop().await.unwrap();
}

/// Three collectors on one Citus coordinator, each with its own spool, loaded at once: nothing lost or
/// doubled, and the rollups equal the raw events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_share_a_citus_cluster_exactly() {
    let Some(url) = citus::fresh_database() else {
        return;
    };
    crate::reliability::three_collectors_share(url, true).await;
}

/// Seals while writers commit events around now, some older than the seal's bound by the time they commit: each
/// event ends in exactly one of the sealed rollups or a late delta, although each worker takes its own snapshot
/// (the seal keeps the writers waiting until its reads ran). Mid-ingest reads are not compared: a Citus
/// statement has no snapshot common to its workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_rollups_stay_exact_under_live_ingest_on_citus() {
    let Some(url) = citus::fresh_database() else {
        return;
    };
    crate::metrics::sealed_rollups_exact_under_live_ingest(url, true).await;
}

/// `kill -9` under load, three times, against a Citus coordinator: every acknowledged batch is stored exactly
/// once (the spool replays what was not committed; the flush ledger keeps a retried COPY from doubling) and the
/// rollups equal the raw events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_citus_loses_nothing_and_stores_it_once() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use crate::durability::load;
    use crate::support::binary;

    let Some(url) = citus::fresh_database() else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let port = binary::free_port();
    let env = [
        ("DATABASE_URL", url.clone()),
        ("COLLECTOR_CITUS", "true".to_string()),
        ("COLLECTOR_SPOOL_DIR", spool.path().display().to_string()),
        ("COLLECTOR_API_KEYS", "crash:crash-key-1".to_string()),
        ("COLLECTOR_FLUSH_INTERVAL_MS", "50".to_string()),
    ];
    let (mut child, http) = binary::serve_on(port, &env, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let loaders: Vec<_> = (0..2)
        .map(|c| {
            tokio::spawn(load(
                http.clone(),
                "crash-key-1",
                c,
                2,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    for pause in [700, 1200, 900] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        (child, _) = binary::serve_on(port, &env, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "the load ran: {} batches", acked.len());
    let db = pg::connect(&url).await;
    crate::durability::assert_acked_stored_once(&db, &acked).await;
    binary::terminate(child).await;
}

/// Retention on Citus: an old day's partition of the distributed table dropped, old rows of the default one
/// deleted, the rollups kept; each rollup tier's old rows deleted and answers read from the tiers kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_citus_drops_old_days_and_tiers() {
    let Some(url) = citus::fresh_database() else {
        return;
    };
    crate::reliability::raw_retention(url, true).await;
    let Some(url) = citus::fresh_database() else {
        return;
    };
    crate::reliability::rollup_retention(url, true).await;
}

/// Alerts on Citus: two collectors evaluate a threshold rule over the distributed rollups, and a signed
/// notification is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_on_citus_notify_once_from_two_collectors() {
    let Some(url) = citus::fresh_database() else {
        return;
    };
    crate::alerts::two_collectors_notify_once(url, true).await;
}

/// A worker stopped while load continues: every batch is acknowledged (the spool keeps what the cluster cannot
/// take), and once the worker is back every event lands exactly once and the rollups equal the raw events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_outage_is_absorbed_by_the_spool() {
    use crate::durability::{batch, stored_batches, wait_rows};
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = citus::Cluster::start(dir.path()) else {
        return;
    };
    let app = spawn_app_at(cluster.url(), |c| {
        c.database.citus = true;
        c.queue_capacity = 300;
        c.writers = 2;
        c.retry_max_backoff_ms = 200;
    })
    .await;
    for id in 0..5 {
        assert_eq!(app.ingest(batch(id, 100), &[]).await.status(), 202);
    }
    assert_eq!(wait_rows(&app.db, 500).await, 500);
    cluster.stop_node(2);
    for id in 5..30 {
        let r = app.ingest(batch(id, 100), &[]).await;
        assert_eq!(r.status(), 202, "batch {id}: {}", r.text().await.unwrap());
    }
    // The batches wait in the spool: every COPY touches both workers.
    let (_, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["spool"]["backlog"], true, "{ready}");
    cluster.start_again();
    let db = pg::connect(&cluster.url()).await;
    assert_eq!(wait_rows(&db, 3000).await, 3000);
    let stored = stored_batches(&db).await;
    assert_eq!(stored.len(), 30);
    assert!(
        stored.values().all(|&(n, d)| n == 100 && d == 100),
        "{stored:?}"
    );
    crate::support::app::assert_rollup_matches_raw(&db).await;
    app.stop().await.unwrap();
}
