//! The read side against a known data set: every answer equals hand-written SQL over the raw table.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{spawn_app, spawn_app_with, TestApp};

use crate::support::data::{load, END, EVENTS};

async fn get(app: &TestApp, query: &str) -> (u16, Value) {
    app.get_json(&format!("/api/logs?{query}")).await
}

/// Every page of a query: messages in order, checking that each page is newest-first.
async fn all_pages(app: &TestApp, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last_ts: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{query}&limit={limit}&cursor={c}"),
            None => format!("{query}&limit={limit}"),
        };
        let (status, page) = get(app, &q).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        for e in events {
            let ts = e["timestamp"].as_str().unwrap().to_string();
            if let Some(prev) = &last_ts {
                assert!(ts <= *prev, "not newest first: {ts} after {prev}");
            }
            last_ts = Some(ts);
            out.push(e["message"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
        assert!(out.len() <= EVENTS, "pagination does not end");
    }
}

async fn sql_messages(app: &TestApp, condition: &str) -> BTreeSet<String> {
    let sql = format!("SELECT message FROM comm_logs WHERE {condition}");
    app.db
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn logs_filters_equal_sql_and_pagination_visits_every_row_once() {
    let app = spawn_app().await;
    load(&app).await;
    let window = format!("from=2026-11-22T10:00:00Z&to={END}");
    let w = "ts >= '2026-11-22T10:00:00Z' AND ts < '2026-11-22T12:00:00Z'";
    let cases = [
        ("", w.to_string()),
        (
            "&src=10.1.0.0/16",
            format!("{w} AND src_ip <<= '10.1.0.0/16'"),
        ),
        ("&src=2001:db8::/64", format!("{w} AND family(src_ip) = 6")),
        ("&src=10.0.3.3", format!("{w} AND src_ip = '10.0.3.3'")),
        (
            "&dst=192.0.2.0/30",
            format!("{w} AND dst_ip <<= '192.0.2.0/30'"),
        ),
        (
            "&dst_port=53&service=web",
            format!("{w} AND dst_port = 53 AND service = 'web'"),
        ),
        (
            "&status_class=5xx",
            format!("{w} AND status >= 500 AND status < 600"),
        ),
        (
            "&status=404&min_latency_ms=30",
            format!("{w} AND status = 404 AND latency_ms >= 30"),
        ),
        ("&producer=producer-a&protocol=tcp", "false".to_string()),
    ];
    for (filter, condition) in cases {
        let expected = sql_messages(&app, &condition).await;
        let got = all_pages(&app, &format!("{window}{filter}"), 97).await;
        let unique: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "{filter}: a row was returned twice"
        );
        assert_eq!(unique, expected, "{filter}");
    }
    // The whole window, by pages of every size that splits equal timestamps across pages.
    for limit in [1, 4, 333, 1000] {
        let got = all_pages(&app, &window, limit).await;
        assert_eq!(got.len(), EVENTS, "limit {limit}");
        assert_eq!(
            got.iter().collect::<BTreeSet<_>>().len(),
            EVENTS,
            "limit {limit}"
        );
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn rollup_equals_the_raw_aggregate() {
    let app = spawn_app().await;
    load(&app).await;
    app.assert_rollup_matches_raw().await;
    // One more event in an existing minute, with existing dimensions: compaction merges it into existing rows.
    let rows = app.count("SELECT count(*) FROM comm_rollup").await;
    let (status, _) = app.ingest_json(r#"[{"timestamp":"2026-11-22T10:00:01Z","service":"web","status":200,"dst_port":443,"latency_ms":3}]"#).await;
    assert_eq!(status, 202);
    app.wait_rows(EVENTS as i64 + 1).await;
    app.assert_rollup_matches_raw().await;
    assert_eq!(
        app.count("SELECT count(*) FROM comm_rollup").await,
        rows,
        "merged into an existing minute"
    );
    app.stop().await.unwrap();
}

/// Answers read the rollup deltas not yet compacted, and the same answers after compaction.
#[tokio::test]
async fn answers_are_the_same_before_and_after_compaction() {
    let app = spawn_app_with(|c| c.rollup_compact_ms = 3_600_000).await;
    load(&app).await;
    let deltas = "SELECT count(*) FROM comm_rollup_service_delta";
    assert!(app.count(deltas).await > 0);
    assert_eq!(
        app.count("SELECT count(*) FROM comm_rollup_service").await,
        0
    );
    let paths = [
        format!("/metrics/volume?from=2026-11-22T10:00:00Z&to={END}&bucket=5m"),
        format!("/metrics/latency?from=2026-11-22T10:00:00Z&to={END}&bucket=1h&group_by=service"),
        format!("/metrics/top-talkers?from=2026-11-22T10:00:00Z&to={END}&by=src_ip&limit=20"),
        format!("/metrics/error-rate?from=2026-11-22T10:00:00Z&to={END}&src=10.1.0.0/16"),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(app.ok_json(p).await);
    }
    let total: i64 = before[0]["total"]["events"].as_i64().unwrap();
    assert_eq!(total, EVENTS as i64);
    let pool = collector::db::pool(&app.db_url, 1).unwrap();
    let moved = collector::pipeline::compact::once(&pool).await.unwrap();
    assert!(moved > 0);
    assert_eq!(app.count(deltas).await, 0);
    for (p, b) in paths.iter().zip(&before) {
        assert_eq!(&app.ok_json(p).await, b, "{p}");
    }
    app.assert_rollup_matches_raw().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn logs_empty_ranges_and_boundaries() {
    let app = spawn_app().await;
    load(&app).await;
    let (status, page) = get(&app, "from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z").await;
    assert_eq!(status, 200);
    assert_eq!(page["events"], Value::Array(vec![]));
    assert_eq!(page["next_cursor"], Value::Null);
    // `from` is inclusive and `to` exclusive: the first event's exact second.
    let first = "2026-11-22T10:00:01Z";
    let (_, page) = get(&app, &format!("from={first}&to=2026-11-22T10:00:02Z")).await;
    let n = sql_messages(
        &app,
        &format!("ts >= '{first}' AND ts < '2026-11-22T10:00:02Z'"),
    )
    .await
    .len();
    assert!(n > 0);
    assert_eq!(page["events"].as_array().unwrap().len(), n);
    let (_, page) = get(&app, &format!("from=2026-11-22T09:00:00Z&to={first}")).await;
    assert_eq!(
        page["events"].as_array().unwrap().len(),
        0,
        "`to` is exclusive"
    );
    app.stop().await.unwrap();
}

/// A read stuck behind a lock on `comm_logs` stands in for a raw read over a huge window: the statement stops at
/// the limit with a 504 naming it, and the pooled connection keeps no trace of the limit or the failure.
#[tokio::test]
async fn a_read_over_the_query_timeout_stops_with_504() {
    let app = spawn_app_with(|c| c.query_timeout_ms = 300).await;
    load(&app).await;
    let window = format!("from=2026-11-22T10:00:00Z&to={END}");
    app.db
        .batch_execute("BEGIN; LOCK TABLE comm_logs IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (status, body) = get(&app, &window).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "query_timeout");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("longer than 300 ms (COLLECTOR_QUERY_TIMEOUT_MS)"),
        "{detail}"
    );
    // Rollup answers do not read comm_logs: they still come back meanwhile.
    let (status, body) = app
        .get_json(&format!("/metrics/volume?{window}&bucket=1h"))
        .await;
    assert_eq!(status, 200, "{body}");
    app.db.batch_execute("ROLLBACK").await.unwrap();
    let (status, page) = get(&app, &format!("{window}&limit=1000")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 1000);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn logs_bad_parameters_and_auth() {
    let app = spawn_app().await;
    let cases = [
        (
            "limit=0",
            "limit: \"0\" is not a page size; accepted: 1-1000",
        ),
        (
            "limit=5000",
            "limit: \"5000\" is not a page size; accepted: 1-1000",
        ),
        (
            "src=10.0.0.0/33",
            "src: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        ("from=tomorrow", "from: \"tomorrow\" is not a time"),
        (
            "status_class=9xx",
            "status_class: \"9xx\" is not a status class",
        ),
        (
            "cursor=abc",
            "cursor: is not a cursor this collector issued",
        ),
        (
            "colour=red",
            "colour: unknown parameter; accepted: cursor, dst, dst_asn, dst_country, dst_port",
        ),
    ];
    for (query, want) in cases {
        let (status, body) = get(&app, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["code"], "invalid_parameter", "{query}");
        assert!(
            body["detail"].as_str().unwrap().starts_with(want),
            "{query}: {body}"
        );
    }
    let r = app
        .http
        .get(format!("{}/api/logs", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn prometheus_metrics_count_what_happened() {
    let app = spawn_app().await;
    let (status, _) = app
        .ingest_json(r#"[{"src_ip":"10.0.0.1"},{"src_port":99999},{"dst_port":1}]"#)
        .await;
    assert_eq!(status, 202);
    let (status, _) = app.ingest_json("[oops").await;
    assert_eq!(status, 400);
    app.wait_rows(2).await;
    app.wait_count("SELECT count(*) FROM ingest_rejects", 2)
        .await;
    // Writers bump their counters just after COMMIT: wait for them rather than race them.
    let mut text = String::new();
    for _ in 0..100 {
        let r = app
            .http
            .get(format!("{}/metrics", app.url))
            .header("x-api-key", crate::support::app::KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        text = r.text().await.unwrap();
        if text.contains("collector_rows_written_total 2\n")
            && text.contains("collector_dead_letters_total 2\n")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("collector_events_accepted_total{producer=\"producer-a\"}"),
        2.0
    );
    // Without a key, the same counts with no producer named.
    let anonymous = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!anonymous.contains("producer-a"), "{anonymous}");
    assert!(
        anonymous.contains("\ncollector_events_accepted_total 2\n"),
        "{anonymous}"
    );
    assert!(
        anonymous.contains("\ncollector_events_rejected_total 1\n"),
        "{anonymous}"
    );
    assert_eq!(
        value("collector_events_rejected_total{producer=\"producer-a\"}"),
        1.0
    );
    assert_eq!(value("collector_batches_total"), 1.0);
    assert_eq!(value("collector_bodies_undecodable_total"), 1.0);
    assert_eq!(value("collector_rows_written_total"), 2.0);
    assert_eq!(value("collector_dead_letters_total"), 2.0);
    assert_eq!(value("collector_http_responses_total{status=\"202\"}"), 1.0);
    assert_eq!(value("collector_http_responses_total{status=\"400\"}"), 1.0);
    assert!(value("collector_copy_rows_count") >= 1.0);
    assert_eq!(
        value("collector_copy_rows_bucket{le=\"+Inf\"}"),
        value("collector_copy_rows_count")
    );
    assert_eq!(value("collector_queue_depth_events"), 0.0);
    // Both ingest answers, the 202 and the 400, were timed.
    assert_eq!(value("collector_ingest_duration_seconds_count"), 2.0);
    assert_eq!(
        value("collector_ingest_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert!(value("collector_ingest_duration_seconds_sum") > 0.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "not a sample: {line}");
    }
    app.stop().await.unwrap();
}
