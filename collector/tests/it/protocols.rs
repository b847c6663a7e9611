//! The other agents' protocols, with bodies made from their public descriptions (`tests/fixtures/protocols/`):
//! Elasticsearch `_bulk` with its handshake, and OpenTelemetry logs over HTTP, protobuf and JSON.

use std::io::Write;

use bytes::Bytes;
use collector::decode;
use collector::pipeline::spool::format::{self, Record};
use serde_json::Value;

use crate::support::app::{KEY, PRODUCER};
use crate::support::{pg, spawn_app, spawn_app_at};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/protocols/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Basic auth with the key as password, as Fluent Bit's `es` output and Vector's `elasticsearch` sink send it.
fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("fluent:{KEY}"))
    )
}

#[tokio::test]
async fn elasticsearch_bulk_and_its_handshake_are_answered_as_elasticsearch_does() {
    let app = spawn_app().await;
    let get = |path: &str| {
        app.http
            .get(format!("{}{path}", app.url))
            .header("authorization", basic())
            .send()
    };
    let info = get("/").await.unwrap();
    assert_eq!(info.status(), 200);
    assert_eq!(info.headers()["x-elastic-product"], "Elasticsearch");
    let info: Value = info.json().await.unwrap();
    assert!(info["version"]["number"]
        .as_str()
        .unwrap()
        .starts_with("8."));
    let health: Value = get("/_cluster/health").await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "green");
    assert_eq!(get("/_index_template/logs").await.unwrap().status(), 200);
    // Without a key, nothing.
    let anonymous = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // The body gzip-compressed, as agents send it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fixture("es-bulk.ndjson")).unwrap();
    let r = app
        .http
        .post(format!("{}/network-logs/_bulk", app.url))
        .header("authorization", basic())
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["errors"], true);
    let items = answer["items"].as_array().unwrap();
    let statuses: Vec<(String, i64)> = items
        .iter()
        .map(|i| {
            let (action, result) = i.as_object().unwrap().iter().next().unwrap();
            (action.clone(), result["status"].as_i64().unwrap())
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("index", 201),
        ("create", 201),
        ("delete", 400),
        ("update", 400),
        ("index", 400),
        ("index", 201),
    ]
    .map(|(a, s)| (a.to_string(), s))
    .into();
    assert_eq!(statuses, want);
    assert!(
        items[4]["index"]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("dst_port"),
        "{answer}"
    );

    assert_eq!(app.wait_rows(3).await, 3);
    let rows: Vec<String> = app.texts("SELECT concat_ws('|', host(src_ip), src_port, host(dst_ip), dst_port, protocol, service, status,
                              latency_ms, bytes_in, bytes_out, host)
             FROM comm_logs ORDER BY ts").await;
    assert_eq!(
        rows,
        [
            "10.30.0.5|50123|198.51.100.20|443|tcp|checkout|200|12.5|420|5120|edge-1",
            "10.30.0.6|198.51.100.20|443|checkout|503|1500",
            // Elastic Common Schema objects.
            "10.30.0.8|40000|192.0.2.9|53|udp|dns",
        ]
    );
    // The refused document is a dead letter, raw, with the reason.
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 1)
            .await,
        1
    );
    app.stop().await.unwrap();
}

async fn otlp(
    app: &crate::support::TestApp,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/logs", app.url))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Both encodings of the same request store the same rows, and the refused record is counted.
#[tokio::test]
async fn opentelemetry_logs_over_http_in_protobuf_and_json() {
    let mut stored = Vec::new();
    for (content_type, file) in [
        ("application/x-protobuf", "otlp-logs.pb"),
        ("application/json", "otlp-logs.json"),
    ] {
        let app = spawn_app().await;
        let r = otlp(&app, content_type, fixture(file)).await;
        assert_eq!(r.status(), 200, "{file}");
        if content_type == "application/json" {
            let answer: Value = r.json().await.unwrap();
            assert_eq!(
                answer["partialSuccess"]["rejectedLogRecords"], "1",
                "{answer}"
            );
            assert!(answer["partialSuccess"]["errorMessage"]
                .as_str()
                .unwrap()
                .contains("log record 2"));
        } else {
            assert_eq!(r.headers()["content-type"], "application/x-protobuf");
            let answer = r.bytes().await.unwrap();
            let answer: collector::decode::otlp::ExportLogsResponse =
                prost::Message::decode(answer).unwrap();
            assert_eq!(answer.partial_success.unwrap().rejected_log_records, 1);
        }
        assert_eq!(app.wait_rows(2).await, 2);
        let rows: Vec<String> = app.texts("SELECT concat_ws('|', (extract(epoch FROM ts) * 1e6)::int8, host(src_ip), src_port, host(dst_ip),
                                  dst_port, protocol, service, status, latency_ms, bytes_in, bytes_out, host,
                                  message, tags->>'severity', tags->>'k8s.namespace.name', tags->>'client.address')
                 FROM comm_logs ORDER BY ts").await;
        stored.push(rows);
        app.stop().await.unwrap();
    }
    assert_eq!(
        stored[0],
        [
            "1795856400250000|10.40.0.11|53211|10.40.1.2|8443|tcp|payments|201|41.5|734|88|pay-7|POST /charge 201|INFO|prod",
            "1795856401000000|5432|payments|504|pay-7|upstream timeout|ERROR|prod|pay-7.internal",
        ]
    );
    assert_eq!(
        stored[0], stored[1],
        "protobuf and JSON store the same rows"
    );
}

/// A `_bulk` or OTLP request waiting in the spool is decoded as such when it is replayed.
#[tokio::test]
async fn spooled_bulk_and_otlp_requests_replay_in_their_own_format() {
    let spool = tempfile::tempdir().unwrap();
    let mut bytes = bytes::BytesMut::from(&format::segment_header()[..]);
    for (seq, content_type, body) in [
        (1, decode::ES_BULK, fixture("es-bulk.ndjson")),
        (2, decode::OTLP_PROTOBUF, fixture("otlp-logs.pb")),
    ] {
        format::encode(
            &mut bytes,
            &Record {
                seq,
                received_at_us: chrono::Utc::now().timestamp_micros(),
                identity: [seq as u8; 16],
                producer: PRODUCER.to_string(),
                content_type: Some(content_type.to_string()),
                content_encoding: None,
                kind: Default::default(),
                body: Bytes::from(body),
            },
        );
    }
    std::fs::write(spool.path().join(format::segment_name(1)), &bytes).unwrap();
    let app = spawn_app_at(pg::fresh_database().await, |c| {
        c.spool_dir = Some(spool.path().to_path_buf())
    })
    .await;
    // Three documents of the bulk body and two log records.
    assert_eq!(app.wait_rows(5).await, 5);
    let services: Vec<String> = app
        .texts("SELECT service FROM comm_logs ORDER BY service")
        .await;
    assert_eq!(
        services,
        ["checkout", "checkout", "dns", "payments", "payments"]
    );
    app.stop().await.unwrap();
}

/// Decoding an OTLP body builds trees several times its size: that memory is counted against the ingest
/// budget before it is taken, so a body whose transcoding would pass the budget is answered 503 (while plain
/// JSON of the same size, which needs no such trees, is taken).
#[tokio::test]
async fn otlp_transcoding_is_counted_in_the_memory_budget() {
    let app = crate::support::spawn_app_with(|c| c.memory_budget_bytes = 1 << 20).await;
    let records: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                r#"{{"timeUnixNano":"1795856400250000000","body":{{"stringValue":"record {i}"}},"attributes":[{{"key":"client.address","value":{{"stringValue":"10.40.0.{}"}}}}]}}"#,
                i % 250
            )
        })
        .collect();
    let body = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#,
        records.join(",")
    );
    assert!(
        body.len() > 150_000 && body.len() < 400_000,
        "{}",
        body.len()
    );
    let r = otlp(&app, "application/json", body.clone().into_bytes()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["code"], "over_memory_budget", "{answer}");
    let events: Vec<String> = (0..1500)
        .map(|i| {
            format!(
                r#"{{"message":"record {i}","src_ip":"10.40.0.{}","pad":"{}"}}"#,
                i % 250,
                "x".repeat(120)
            )
        })
        .collect();
    let plain = format!("[{}]", events.join(","));
    assert!(plain.len() >= body.len());
    let (status, _) = app.ingest_json(&plain).await;
    assert_eq!(status, 202);
    app.stop().await.unwrap();
}
