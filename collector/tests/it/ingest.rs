//! POST /ingest through real HTTP into a real PostgreSQL: body forms, encodings, auth, bad input.

use std::io::Write;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::support::{spawn_app, spawn_app_with};

const EVENT: &str =
    r#"{"timestamp":"2026-11-22T10:00:00Z","src_ip":"10.0.0.1","dst_port":443,"service":"web"}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Streamed zstd frames do not state their decompressed size, like Vector's.
fn zstd_streamed(data: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn every_body_form_and_encoding_is_accepted() {
    let app = spawn_app().await;
    let two = format!("[{EVENT},{EVENT}]");
    type Case = (&'static str, Vec<u8>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "json array",
            two.clone().into_bytes(),
            vec![("content-type", "application/json")],
        ),
        (
            "events wrapper",
            format!(r#"{{"events":{two}}}"#).into_bytes(),
            vec![],
        ),
        (
            "logs wrapper",
            format!(r#"{{"logs":{two}}}"#).into_bytes(),
            vec![],
        ),
        ("single object", EVENT.as_bytes().to_vec(), vec![]),
        (
            "ndjson declared",
            format!("{EVENT}\n{EVENT}\n").into_bytes(),
            vec![("content-type", "application/x-ndjson")],
        ),
        (
            "ndjson undeclared",
            format!("{EVENT}\n{EVENT}").into_bytes(),
            vec![("content-type", "text/plain")],
        ),
        (
            "gzip",
            gzip(two.as_bytes()),
            vec![("content-encoding", "gzip")],
        ),
        (
            "zstd",
            zstd_streamed(two.as_bytes()),
            vec![("content-encoding", "zstd")],
        ),
    ];
    let mut expected = 0;
    for (name, body, headers) in cases {
        let resp = app.ingest(body, &headers).await;
        assert_eq!(resp.status(), 202, "{name}");
        let receipt: Value = resp.json().await.unwrap();
        let n = if name == "single object" { 1 } else { 2 };
        assert_eq!(
            receipt,
            json!({"accepted": n, "rejected": 0, "errors": []}),
            "{name}"
        );
        expected += n;
    }
    assert_eq!(app.wait_rows(expected).await, expected);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn rows_land_with_exact_values() {
    let app = spawn_app().await;
    let body = r#"[
      {"timestamp":"2026-11-22T10:00:00.123456Z","src_ip":"2001:db8::1","src_port":51544,"dst_ip":"10.0.0.5",
       "dst_port":443,"protocol":"tcp","service":"web","status":503,"bytes_in":512,"bytes_out":2048,
       "latency_ms":12.5,"host":"edge-1","message":"GET /api/items","tags":{"env":"prod"},"region":"eu"},
      {"client_ip":"192.0.2.7","ts":1795341600.5,"latency":3,"bytes":99,"code":"404"}
    ]"#;
    let (status, receipt) = app.ingest_json(body).await;
    assert_eq!((status, receipt["accepted"].as_u64()), (202, Some(2)));
    assert_eq!(app.wait_rows(2).await, 2);
    let rows = app
        .db
        .query(
            "SELECT extract(epoch FROM ts)::float8, producer, src_ip::text, src_port, dst_ip::text, dst_port,
                    protocol, service, status, bytes_in, bytes_out, latency_ms, host, message, tags::text,
                    received_at > now() - interval '1 minute'
             FROM comm_logs ORDER BY ts",
            &[],
        )
        .await
        .unwrap();
    let r = &rows[0];
    assert_eq!(r.get::<_, f64>(0), 1_795_341_600.123_456);
    assert_eq!(r.get::<_, &str>(1), "producer-a");
    assert_eq!(r.get::<_, &str>(2), "2001:db8::1/128");
    assert_eq!(r.get::<_, i32>(3), 51544);
    assert_eq!(r.get::<_, &str>(4), "10.0.0.5/32");
    assert_eq!(r.get::<_, i32>(5), 443);
    assert_eq!(r.get::<_, &str>(6), "tcp");
    assert_eq!(r.get::<_, &str>(7), "web");
    assert_eq!(r.get::<_, i32>(8), 503);
    assert_eq!(r.get::<_, i64>(9), 512);
    assert_eq!(r.get::<_, i64>(10), 2048);
    assert_eq!(r.get::<_, f64>(11), 12.5);
    assert_eq!(r.get::<_, &str>(12), "edge-1");
    assert_eq!(r.get::<_, &str>(13), "GET /api/items");
    assert_eq!(
        serde_json::from_str::<Value>(r.get(14)).unwrap(),
        json!({"env":"prod","region":"eu"})
    );
    assert!(r.get::<_, bool>(15));
    // Aliases, epoch seconds with a fraction, numbers sent as strings.
    let r = &rows[1];
    assert_eq!(r.get::<_, f64>(0), 1_795_341_600.5);
    assert_eq!(r.get::<_, &str>(2), "192.0.2.7/32");
    assert_eq!(r.get::<_, i32>(8), 404);
    assert_eq!(r.get::<_, i64>(10), 99);
    assert_eq!(r.get::<_, f64>(11), 3.0);
    assert_eq!(r.get::<_, Option<&str>>(14), None);
    // inet equality, not just text: the IPv6 address is queryable as such.
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        app.count_param("SELECT count(*) FROM comm_logs WHERE src_ip = $1", &ip)
            .await,
        1
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn missing_timestamp_means_receive_time() {
    let app = spawn_app().await;
    let (status, _) = app.ingest_json(r#"[{"src_ip":"10.9.9.9"}]"#).await;
    assert_eq!(status, 202);
    app.wait_rows(1).await;
    let same = app.count("SELECT count(*) FROM comm_logs WHERE ts = received_at AND ts > now() - interval '1 minute'").await;
    assert_eq!(same, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn auth_failures_are_401_and_every_key_form_works() {
    let app = spawn_app().await;
    let url = format!("{}/ingest", app.url);
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.body(EVENT).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let (s, body) = send(app.http.post(&url)).await;
    assert_eq!(s, 401);
    assert_eq!(body["code"], "unauthorized");
    assert!(body["detail"].as_str().unwrap().contains("X-API-KEY"));
    assert_eq!(
        send(app.http.post(&url).header("x-api-key", "wrong-key-123"))
            .await
            .0,
        401
    );
    assert_eq!(
        send(
            app.http
                .post(&url)
                .header("authorization", "Bearer wrong-key-123")
        )
        .await
        .0,
        401
    );
    assert_eq!(
        send(
            app.http
                .post(&url)
                .header("authorization", "Bearer secret123")
        )
        .await
        .0,
        202
    );
    assert_eq!(
        send(app.http.post(&url).basic_auth("anyone", Some("secret123")))
            .await
            .0,
        202
    );
    assert_eq!(
        send(app.http.post(&url).header("X-API-KEY", "another-key-456"))
            .await
            .0,
        202
    );
    app.wait_rows(3).await;
    let by_producer = app
        .db
        .query(
            "SELECT producer, count(*) FROM comm_logs GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect::<Vec<_>>();
    assert_eq!(
        by_producer,
        vec![("other".to_string(), 1), ("producer-a".to_string(), 2)]
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_events_are_rejected_by_index_and_field_and_dead_lettered() {
    let app = spawn_app().await;
    let long = "x".repeat(70_000);
    let body = format!(
        r#"[{EVENT},
            {{"src_ip":"10.0.0.999"}},
            {{"dst_port":70000}},
            {{"src_port":"http"}},
            {{"bytes_in":"lots"}},
            {{"message":"{long}"}},
            {{"timestamp":"last tuesday"}},
            17,
            {EVENT}]"#
    );
    let (status, receipt) = app.ingest_json(&body).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["accepted"], 2);
    assert_eq!(receipt["rejected"], 7);
    let errors: Vec<(u64, String)> = receipt["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        (1, "src_ip: expected an IPv4 or IPv6 address, got \"10.0.0.999\""),
        (2, "dst_port: expected an integer from 0 to 65535, got 70000"),
        (3, "src_port: expected an integer from 0 to 65535, got \"http\""),
        (4, "bytes_in: expected an integer from 0 to 1125899906842624, got \"lots\""),
        (5, "message: is 70000 bytes long, over the limit of 65536 bytes"),
        (6, "timestamp: expected an RFC 3339 time or epoch seconds/milliseconds between 1970 and 9999, got \"last tuesday\""),
    ];
    for (i, (index, text)) in expect.iter().enumerate() {
        assert_eq!(errors[i], (*index, text.to_string()));
    }
    assert_eq!(errors[6].0, 7);
    assert!(
        errors[6].1.starts_with("not a JSON object"),
        "{}",
        errors[6].1
    );

    assert_eq!(app.wait_rows(2).await, 2);
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 7)
            .await,
        7
    );
    let dl = app
        .db
        .query_one(
            "SELECT producer, reason, convert_from(raw, 'UTF8'), raw_truncated FROM ingest_rejects WHERE event_index = 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dl.get::<_, &str>(0), "producer-a");
    assert_eq!(
        dl.get::<_, &str>(1),
        "dst_port: expected an integer from 0 to 65535, got 70000"
    );
    assert_eq!(dl.get::<_, &str>(2), r#"{"dst_port":70000}"#);
    assert!(!dl.get::<_, bool>(3));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn undecodable_bodies_are_400_with_position_and_kept_raw() {
    let app = spawn_app().await;
    let bad = "[{\"src_ip\":\"10.0.0.1\"},\n {\"src_ip\": }]";
    let (status, body) = app.ingest_json(bad).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "undecodable_body");
    assert_eq!(
        body["detail"],
        "invalid JSON at byte offset 36 (line 2, column 13): expected value"
    );
    let (status, body) = app.ingest_json("hello").await;
    assert_eq!(status, 400);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("found 'h' at byte offset 0"));
    let resp = app
        .ingest(
            b"\x1f\x8bnot really gzip".to_vec(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .starts_with("gzip body is corrupt"));
    let resp = app.ingest(EVENT, &[("content-encoding", "br")]).await;
    assert_eq!(resp.status(), 415);

    // All four bodies are kept raw, the one with an unknown encoding included.
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 4)
            .await,
        4
    );
    let kept: String = app
        .db
        .query_one(
            "SELECT convert_from(raw, 'UTF8') FROM ingest_rejects WHERE reason LIKE 'unsupported Content-Encoding%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, EVENT);
    let raw: Vec<u8> = app
        .db
        .query_one(
            "SELECT raw FROM ingest_rejects WHERE reason LIKE 'invalid JSON%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, bad.as_bytes());
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE event_index IS NULL")
            .await,
        4
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn oversize_bodies_and_bombs_are_413() {
    let app = spawn_app_with(|c| {
        c.max_body_bytes = 128 << 10;
        c.max_decompressed_bytes = 1 << 20;
    })
    .await;
    let big = format!("[{}]", vec![EVENT; 2000].join(","));
    assert!(big.len() > 128 << 10);
    let resp = app.ingest(big.clone(), &[]).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
    assert!(
        body["detail"].as_str().unwrap().contains("131072 bytes"),
        "{body}"
    );
    // The same events compressed fit.
    let resp = app
        .ingest(gzip(big.as_bytes()), &[("content-encoding", "gzip")])
        .await;
    assert_eq!(resp.status(), 202);
    // 100 MB of spaces is ~100 KB of gzip: a bomb stops at the decompressed limit.
    let bomb = gzip(&vec![b' '; 100 << 20]);
    assert!(
        bomb.len() < 128 << 10,
        "the bomb itself is under the body limit"
    );
    let resp = app.ingest(bomb, &[("content-encoding", "gzip")]).await;
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "decompressed body exceeds the limit of 1048576 bytes"
    );
    assert_eq!(app.wait_rows(2000).await, 2000);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn per_key_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = app.ingest(EVENT, &[]).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(r.json::<Value>().await.unwrap()["code"], "rate_limited");
        }
    }
    assert_eq!(&statuses[..2], &[202, 202]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert!(retry_after.is_some());
    // Another key has its own bucket.
    let other = app
        .http
        .post(format!("{}/ingest", app.url))
        .header("x-api-key", "another-key-456")
        .body(EVENT)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 202);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let h: Value = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    // Without the spool nothing can be acknowledged then (with it, see tests/it/durability.rs).
    let app = spawn_app_with(|c| c.durability = collector::config::Durability::Memory).await;
    // Sabotage: the collector's database disappears under it.
    let name: String = app
        .db
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(name.starts_with("t_"));
    let admin =
        crate::support::pg::connect(&crate::support::pg::with_db(&app.db_url, "postgres")).await;
    admin
        .execute(&format!("DROP DATABASE {name} WITH (FORCE)"), &[])
        .await
        .unwrap();
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("not ready: database unreachable"),
        "{body}"
    );
    // Which database, and why, is in the log only.
    assert!(!body.to_string().contains(&name), "{body}");
}

/// Snappy, as both agents offer it: a raw block and the framing format, each stored.
#[tokio::test]
async fn snappy_bodies_are_accepted() {
    let app = spawn_app().await;
    let body = br#"[{"service":"snappy","dst_port":443}]"#;
    let raw = snap::raw::Encoder::new().compress_vec(body).unwrap();
    let mut framed = snap::write::FrameEncoder::new(Vec::new());
    framed.write_all(body).unwrap();
    let framed = framed.into_inner().unwrap();
    for compressed in [raw, framed] {
        let r = app
            .ingest(
                compressed,
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "snappy"),
                ],
            )
            .await;
        assert_eq!(r.status(), 202);
    }
    assert_eq!(
        app.wait_count("SELECT count(*) FROM comm_logs WHERE service = 'snappy'", 2)
            .await,
        2
    );
}

/// A client that did not hear the 202 sends the same bytes again: the retry is answered 202 "duplicate" and
/// the batch is stored once; an Idempotency-Key names a batch whatever its bytes; a collector started again
/// remembers the batches committed before.
#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let app = spawn_app_with(|c| c.dedup_window_secs = 3600).await;
    let body = r#"[{"service":"retried","dst_port":1},{"service":"retried","dst_port":2}]"#;
    let (status, first) = app.ingest_json(body).await;
    assert_eq!((status, first["accepted"].as_u64()), (202, Some(2)));
    assert!(first.get("duplicate").is_none(), "{first}");
    let (status, again) = app.ingest_json(body).await;
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (202, Some(true)),
        "{again}"
    );
    // Another producer's identical bytes are its own batch.
    let other = app
        .http
        .post(format!("{}/ingest", app.url))
        .header("x-api-key", "another-key-456")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 202);
    assert_eq!(
        other.json::<Value>().await.unwrap()["accepted"].as_u64(),
        Some(2)
    );
    // With an Idempotency-Key, the key is the identity.
    for (i, b) in [
        r#"[{"service":"keyed"}]"#,
        r#"[{"service":"keyed","status":500}]"#,
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .ingest(
                *b,
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "k-1"),
                ],
            )
            .await;
        let receipt: Value = r.json().await.unwrap();
        assert_eq!(
            receipt["duplicate"].as_bool(),
            (i == 1).then_some(true),
            "{receipt}"
        );
    }
    assert_eq!(app.wait_rows(5).await, 5);
    let by_service = |s: &'static str| {
        let db = &app.db;
        async move {
            db.query_one("SELECT count(*) FROM comm_logs WHERE service = $1", &[&s])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        by_service("retried").await,
        4,
        "twice two events: two producers"
    );
    assert_eq!(by_service("keyed").await, 1);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("collector_duplicate_batches_total 2"),
        "{metrics}"
    );
    // Committed identities are recorded: a collector started on this database remembers them.
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_batches", 3)
            .await,
        3
    );
    let seen = collector::pipeline::dedup::Seen::new(std::time::Duration::from_secs(3600));
    let pool = collector::db::pool(&app.db_url, 1).unwrap();
    assert_eq!(seen.load(&pool.get().await.unwrap()).await.unwrap(), 3);
    let digest = collector::pipeline::dedup::identity(body.as_bytes(), None);
    let producer = std::sync::Arc::from(crate::support::app::PRODUCER);
    assert!(!seen.first_time(&producer, digest, chrono::Utc::now().timestamp_micros()));
}
