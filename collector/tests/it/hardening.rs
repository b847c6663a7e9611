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
