//! What a hostile or careless client sends: values PostgreSQL would refuse are refused at the receipt (so the
//! receipt is the truth and no writer meets them), counters cannot overflow the rollups, and odd bodies and
//! parameters get clear 4xx answers.

use serde_json::Value;

use crate::support::{pg, spawn_app, spawn_app_with};

fn errors_of(receipt: &Value) -> Vec<(i64, String, String)> {
    receipt["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            // "field: what is wrong"
            let text = e["error"].as_str().unwrap_or_default();
            let (field, problem) = text.split_once(": ").unwrap_or(("", text));
            (
                e["index"].as_i64().unwrap(),
                field.to_string(),
                problem.to_string(),
            )
        })
        .collect()
}

/// Arrays nested 20,000 deep in an unknown field used to pass, then stop a writer for good (PostgreSQL:
/// "stack depth limit exceeded"), so later acknowledged events were never stored.
#[tokio::test]
async fn deep_nesting_is_refused_at_the_receipt_and_ingest_goes_on() {
    let app = spawn_app().await;
    let n = 20_000;
    let deep = format!(
        r#"[{{"src_ip":"1.2.3.4","deep":{}{}}}]"#,
        "[".repeat(n),
        "]".repeat(n)
    );
    for _ in 0..4 {
        let (status, receipt) = app.ingest_json(&deep).await;
        assert!(status == 202 || status == 400, "{status} {receipt}");
        assert_eq!(receipt["accepted"].as_i64().unwrap_or(0), 0, "{receipt}");
    }
    let (status, receipt) = app
        .ingest_json(r#"[{"src_ip":"5.6.7.8","service":"after"}]"#)
        .await;
    assert_eq!((status, receipt["accepted"].as_i64()), (202, Some(1)));
    assert_eq!(
        app.wait_count("SELECT count(*) FROM comm_logs WHERE service = 'after'", 1)
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM comm_logs").await, 1);
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 4)
            .await,
        4
    );
}

/// Lone surrogates, huge numbers and NUL in tags are what jsonb refuses: each is an error naming the event and
/// `tags`, in the receipt, never a dead letter after the fact; an escaped backslash before `u0000` is text.
#[tokio::test]
async fn values_jsonb_refuses_are_rejected_with_index_and_field() {
    let app = spawn_app().await;
    let body = r#"[
        {"service":"ok1","tags":{"s":"\\u0000 is only text"}},
        {"service":"bad","tags":{"s":"\ud800"}},
        {"service":"bad","x":1e1000000},
        {"service":"bad","tags":{"s":"a\u0000b"}},
        {"service":"ok2","latency_ms":3,"tags":{"emoji":"\ud83d\ude00","n":1e300}}
    ]"#;
    let (status, receipt) = app.ingest_json(body).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["accepted"], 2, "{receipt}");
    let errors = errors_of(&receipt);
    let indexes: Vec<i64> = errors.iter().map(|e| e.0).collect();
    assert_eq!(indexes, [1, 2, 3], "{receipt}");
    assert!(errors.iter().all(|e| e.1 == "tags"), "{receipt}");
    assert!(errors[0].2.contains("surrogate"), "{receipt}");
    assert!(errors[1].2.contains("1e1000000"), "{receipt}");
    assert!(errors[2].2.contains("NUL"), "{receipt}");
    assert_eq!(
        app.wait_count("SELECT count(*) FROM comm_logs WHERE service LIKE 'ok%'", 2)
            .await,
        2
    );
    // Dead-lettered once each, at the receipt: not a writer's after-the-fact isolation.
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 3)
            .await,
        3
    );
    let text: String = app
        .db
        .query_one(
            "SELECT tags->>'s' FROM comm_logs WHERE service = 'ok1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(text, "\\u0000 is only text");
}

/// `bytes_in` of 2^63-1 was accepted; two such values wrapped in a flush's sum, and across flushes the
/// compactor failed for good and every answer over that minute was a 500.
#[tokio::test]
async fn byte_counters_are_bounded_and_rollup_sums_saturate() {
    let app = spawn_app().await;
    let (status, receipt) = app
        .ingest_json(r#"[{"service":"x","bytes_in":9223372036854775807}]"#)
        .await;
    assert_eq!((status, receipt["accepted"].as_i64()), (202, Some(0)));
    let errors = errors_of(&receipt);
    assert_eq!(errors[0].1, "bytes_in", "{receipt}");
    // The largest accepted value, often enough to pass int8 in one bucket: in one flush, then in another.
    let max = collector::event::MAX_EVENT_BYTES;
    let events: Vec<String> = (0..5000)
        .map(|_| {
            format!(r#"{{"timestamp":"2026-11-22T10:00:30Z","service":"x","bytes_in":{max}}}"#)
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    for round in 1..=2 {
        let (status, receipt) = app.ingest_json(&body).await;
        assert_eq!((status, receipt["accepted"].as_i64()), (202, Some(5000)));
        app.wait_rows(5000 * round).await;
        collector::pipeline::compact::once(&pool(&app.db_url))
            .await
            .unwrap();
    }
    let v = app
        .ok_json("/metrics/volume?from=2026-11-22T10:00:00Z&to=2026-11-22T11:00:00Z&bucket=1h")
        .await;
    let bytes = v["total"]["bytes_in"].as_i64().unwrap();
    assert!(bytes >= collector::rollup::catalog::MAX_ROW_BYTES, "{v}");
    // Compaction still works: a later event lands in the rollup.
    let (status, _) = app
        .ingest_json(r#"[{"timestamp":"2026-11-22T10:00:40Z","service":"y","bytes_in":1}]"#)
        .await;
    assert_eq!(status, 202);
    app.wait_rows(10_001).await;
    collector::pipeline::compact::once(&pool(&app.db_url))
        .await
        .unwrap();
    let n = app
        .count("SELECT count(*) FROM comm_rollup_service WHERE service = 'y' AND res = 3600")
        .await;
    assert_eq!(n, 1);
}

fn pool(url: &str) -> deadpool_postgres::Pool {
    collector::db::pool(url, 1).unwrap()
}

#[tokio::test]
async fn latency_beyond_thirty_days_is_an_error() {
    let app = spawn_app().await;
    let (status, receipt) = app
        .ingest_json(r#"[{"service":"x","latency_ms":1e308},{"service":"x","latency_ms":5}]"#)
        .await;
    assert_eq!((status, receipt["accepted"].as_i64()), (202, Some(1)));
    let errors = errors_of(&receipt);
    assert_eq!((errors[0].0, errors[0].1.as_str()), (0, "latency_ms"));
}

#[tokio::test]
async fn a_byte_order_mark_before_the_body_is_skipped() {
    let app = spawn_app().await;
    let (status, receipt) = app.ingest_json("\u{feff}[{\"service\":\"bom\"}]").await;
    assert_eq!(
        (status, receipt["accepted"].as_i64()),
        (202, Some(1)),
        "{receipt}"
    );
}

#[tokio::test]
async fn a_nul_in_a_read_parameter_is_a_400_naming_it() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/metrics/volume?service=%00").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("service"),
        "{body}"
    );
}

/// A batch larger than the whole queue can never be queued: 413, and its body is kept as a dead letter.
#[tokio::test]
async fn a_batch_larger_than_the_queue_is_413_and_dead_lettered() {
    let app = spawn_app_with(|c| c.queue_capacity = 10).await;
    let events: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"dst_port":{}}}"#, i + 1))
        .collect();
    let (status, body) = app.ingest_json(&format!("[{}]", events.join(","))).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "batch_too_large");
    assert_eq!(
        app.wait_count(
            "SELECT count(*) FROM ingest_rejects WHERE reason LIKE '%larger than the whole ingest queue%'",
            1
        )
        .await,
        1
    );
}

/// SQLSTATE class 54 (program limit exceeded) is the data's fault: the writer isolates the rows instead of
/// retrying the flush forever.
#[tokio::test]
async fn program_limits_are_data_errors() {
    let db = pg::connect(&pg::fresh_database().await).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = db
        .query_one("SELECT $1::text::jsonb", &[&deep])
        .await
        .expect_err("PostgreSQL refuses it");
    assert_eq!(e.code().map(|c| &c.code()[..2]), Some("54"), "{e}");
    assert!(collector::db::DbError::from(e).is_data_error());
}

/// Reads have a pool of their own: while every read connection is stuck, the writers still commit, and a read
/// that finds no connection within the wait is a 503 with Retry-After, not a wait behind the writers.
#[tokio::test]
async fn stuck_reads_neither_delay_commits_nor_queue_forever() {
    let app = spawn_app_with(|c| {
        c.read_connections = 2;
        c.read_pool_wait_ms = 300;
    })
    .await;
    // Holds every read of the destination rollup; the writers append to its _delta table, which stays free.
    let mut locker = pg::connect(&app.db_url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE comm_rollup_dst IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let reads: Vec<tokio::task::JoinHandle<(u16, bool)>> = (0..5)
        .map(|_| {
            let (http, url) = (app.http.clone(), app.url.clone());
            tokio::spawn(async move {
                let r = http
                    .get(format!("{url}/metrics/top-talkers?by=dst_ip"))
                    .header("x-api-key", crate::support::app::KEY)
                    .send()
                    .await
                    .unwrap();
                let retry = r.headers().contains_key("retry-after");
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    // Two hold the read connections, waiting on the lock; three find no connection and are refused.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    assert_eq!(app.wait_count(waiting, 2).await, 2);
    for _ in 0..600 {
        if reads.iter().filter(|r| r.is_finished()).count() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reads.iter().filter(|r| r.is_finished()).count(), 3);
    // Meanwhile an event is acknowledged and committed.
    let (status, _) = app
        .ingest_json(r#"[{"dst_ip":"10.9.9.9","service":"w"}]"#)
        .await;
    assert_eq!(status, 202);
    assert_eq!(app.wait_rows(1).await, 1);
    tx.rollback().await.unwrap();
    let mut answers = Vec::new();
    for r in reads {
        answers.push(r.await.unwrap());
    }
    answers.sort();
    assert_eq!(
        answers,
        [
            (200, false),
            (200, false),
            (503, true),
            (503, true),
            (503, true)
        ]
    );
}

/// One key may run COLLECTOR_RAW_READS_PER_KEY reads of raw events at once; one more is a 429 naming the
/// setting, while reads from rollups go on.
#[tokio::test]
async fn raw_reads_per_key_are_limited() {
    let app = spawn_app_with(|c| c.raw_reads_per_key = 1).await;
    // A window in 2020 reads the default partition only: held here, the writers (today's partition) go on.
    let mut locker = pg::connect(&app.db_url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE comm_logs_default IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let window = "from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z";
    let slow = {
        let (http, url) = (app.http.clone(), app.url.clone());
        // No rollup holds an address and a service together: answered from raw events.
        let path = format!("{url}/metrics/error-rate?src=10.0.0.1&service=web&{window}");
        tokio::spawn(async move {
            http.get(path)
                .header("x-api-key", crate::support::app::KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Once the first waits on the lock (holding its slot), a second of the same key is refused.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()";
    assert_eq!(app.wait_count(waiting, 1).await, 1);
    let (status, body) = app
        .get_json(&format!(
            "/metrics/error-rate?src=10.0.0.2&service=web&{window}"
        ))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_raw_reads");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("COLLECTOR_RAW_READS_PER_KEY"));
    // A rollup answer is not a raw read.
    let (status, _) = app.get_json("/metrics/volume").await;
    assert_eq!(status, 200);
    tx.rollback().await.unwrap();
    assert_eq!(slow.await.unwrap(), 200);
}

/// Peak resident memory of a process, from /proc (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// Twenty concurrent gzip bodies of 32 MB of JSON each would take over a gigabyte decoded and encoded; the real
/// binary stays within its memory budget plus the stated fixed margin, refuses what does not fit with 503 +
/// Retry-After, and stores everything it acknowledged.
#[tokio::test]
async fn memory_stays_within_the_budget_under_many_large_bodies() {
    use std::io::Write;
    const BUDGET: u64 = 128 << 20;
    const MARGIN: u64 = 200 << 20;
    let db_url = pg::fresh_database().await;
    let env = [
        ("DATABASE_URL", db_url.clone()),
        ("COLLECTOR_API_KEYS", "big:big-key-0001".to_string()),
        ("COLLECTOR_RATE_LIMIT_PER_SEC", "0".to_string()),
        ("COLLECTOR_MEMORY_BUDGET_BYTES", BUDGET.to_string()),
        // The same body twenty times on purpose.
        ("COLLECTOR_DEDUP_WINDOW_SECS", "0".to_string()),
    ];
    let (mut child, url) = crate::support::binary::serve(&env, &[]).await;
    let http = reqwest::Client::new();
    // 520 events with 60 KB messages: 32 MB of JSON, a few hundred KB gzipped.
    let message = "m".repeat(60_000);
    let events: Vec<String> = (0..520)
        .map(|i| {
            format!(
                r#"{{"service":"big","dst_port":{},"message":"{message}"}}"#,
                i + 1
            )
        })
        .collect();
    let json = format!("[{}]", events.join(","));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json.as_bytes()).unwrap();
    let body = bytes::Bytes::from(gz.finish().unwrap());
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/ingest"))
                    .header("x-api-key", "big-key-0001")
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.headers().contains_key("retry-after"))
            })
        })
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for s in sends {
        match s.await.unwrap() {
            (202, _) => accepted += 1,
            (503, true) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let peak = peak_rss(child.id());
    eprintln!(
        "peak RSS {} MiB (budget {} MiB); {accepted} bodies accepted, {refused} refused",
        peak >> 20,
        BUDGET >> 20
    );
    assert!(
        peak < BUDGET + MARGIN,
        "peak RSS {} MiB over the budget of {} MiB plus {} MiB",
        peak >> 20,
        BUDGET >> 20,
        MARGIN >> 20
    );
    assert!(
        accepted >= 1 && refused >= 1,
        "{accepted} accepted, {refused} refused"
    );
    // Everything acknowledged is stored.
    let db = pg::connect(&db_url).await;
    let want = 520 * accepted;
    let mut stored = 0;
    for _ in 0..1200 {
        stored = db
            .query_one("SELECT count(*) FROM comm_logs", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if stored >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored, want);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Reads from `stream` until the server closes it (or `limit` passes); whatever it answered first.
async fn until_closed(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Clients that open connections and send their headers slowly (or not at all) are cut at the header timeout;
/// meanwhile everyone else is served.
#[tokio::test]
async fn slow_headers_are_cut_at_the_timeout_while_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.header_read_timeout_ms = 300).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /ingest HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let (status, receipt) = app.ingest_json(r#"[{"service":"meanwhile"}]"#).await;
    assert_eq!((status, receipt["accepted"].as_i64()), (202, Some(1)));
    for s in &mut slow {
        assert!(
            until_closed(s, std::time::Duration::from_secs(30))
                .await
                .is_some(),
            "a connection with unfinished headers stayed open"
        );
    }
}

/// A body that stops arriving is cut at the body timeout, with an answer saying so.
#[tokio::test]
async fn a_stalled_body_is_cut_at_the_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.body_read_timeout_ms = 300).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /ingest HTTP/1.1\r\nHost: x\r\nX-API-KEY: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n[{{\"service\":",
        crate::support::app::KEY
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut s, std::time::Duration::from_secs(30))
        .await
        .expect("the server closes a stalled body");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert_eq!(app.count("SELECT count(*) FROM comm_logs").await, 0);
}

/// At COLLECTOR_MAX_CONNECTIONS open connections, one more is closed at once; when some close, new ones are
/// served again.
#[tokio::test]
async fn connections_past_the_cap_are_closed_until_some_end() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|c| c.max_connections = 20).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The server may not have accepted the last ones yet: a 21st is refused once all 20 are counted.
    let mut refused = false;
    for _ in 0..100 {
        let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let answer = until_closed(&mut extra, std::time::Duration::from_secs(5)).await;
        if answer.as_deref() == Some("") {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "a connection past the cap was served");
    held.truncate(10);
    let mut served = false;
    for _ in 0..100 {
        if app
            .http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served, "no connection served after others closed");
}

/// A flush that keeps failing (here the schema is broken under it) is visible: /readyz says not ready and why,
/// /metrics counts it; once the cause is gone it commits, once, and the collector is ready again.
#[tokio::test]
async fn a_flush_that_keeps_failing_shows_in_readyz_and_metrics() {
    // Not ready without the spool; with it, ready (batches wait on disk) and the failing flush is in the body.
    let app = spawn_app_with(|c| {
        c.retry_max_backoff_ms = 200;
        c.durability = collector::config::Durability::Memory;
    })
    .await;
    app.db
        .batch_execute("ALTER TABLE ingest_flushes RENAME TO ingest_flushes_away")
        .await
        .unwrap();
    let (status, _) = app.ingest_json(r#"[{"service":"stuck"}]"#).await;
    assert_eq!(status, 202);
    let get = |path: &'static str| {
        let (http, url) = (app.http.clone(), app.url.clone());
        async move {
            let r = http.get(format!("{url}{path}")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut seen = None;
    for _ in 0..600 {
        let (status, body) = get("/readyz").await;
        if status == 503 && body.contains("keep failing") {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = seen.expect("/readyz reports the failing flush");
    // What failed is in the log, not in an answer anyone may read.
    assert!(!body.contains("ingest_flushes"), "{body}");
    let (_, metrics) = get("/metrics").await;
    assert!(metrics.contains("collector_failing_flushes 1"), "{metrics}");
    app.db
        .batch_execute("ALTER TABLE ingest_flushes_away RENAME TO ingest_flushes")
        .await
        .unwrap();
    assert_eq!(
        app.wait_count("SELECT count(*) FROM comm_logs WHERE service = 'stuck'", 1)
            .await,
        1
    );
    let mut ready = false;
    for _ in 0..600 {
        if get("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready);
    let (_, metrics) = get("/metrics").await;
    assert!(metrics.contains("collector_failing_flushes 0"), "{metrics}");
}

/// With the queue full, a request is refused before its body is decoded: an undecodable body gets the same
/// 503 + Retry-After as any other, and is never parsed (nothing counted undecodable, nothing dead-lettered).
#[tokio::test]
async fn a_full_queue_refuses_before_decoding() {
    // Without the spool the queue is the bound (with it, batches wait on disk: tests/it/durability.rs).
    let app = spawn_app_with(|c| {
        c.durability = collector::config::Durability::Memory;
        c.queue_capacity = 100;
        c.writers = 1;
    })
    .await;
    let locker = pg::connect(&app.db_url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE comm_logs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"dst_port":{}}}"#, i + 1))
        .collect();
    let batch = format!("[{}]", batch.join(","));
    let mut full = false;
    for _ in 0..20 {
        let (status, _) = app.ingest_json(&batch).await;
        if status == 503 {
            full = true;
            break;
        }
    }
    assert!(full, "the queue never filled");
    let resp = app
        .ingest(
            "this is not JSON at all",
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("collector_bodies_undecodable_total 0"),
        "{metrics}"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM ingest_rejects").await, 0);
}
