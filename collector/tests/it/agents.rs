//! Payloads recorded from real agents (tests/fixtures/agents), replayed byte for byte with their headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{spawn_app, TestApp};

fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agents");
    assert!(
        dir.is_dir(),
        "agent fixtures not found at {}",
        dir.display()
    );
    dir
}

/// Replays every request of one fixture folder; returns (accepted, rejected) summed over its requests.
async fn replay(app: &TestApp, folder: &str) -> (u64, u64) {
    let dir = fixtures().join(folder);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".headers.json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no requests in {folder}");
    let (mut accepted, mut rejected) = (0, 0);
    for headers_path in names {
        let recorded: Value =
            serde_json::from_str(&std::fs::read_to_string(&headers_path).unwrap()).unwrap();
        let body_path = headers_path
            .to_string_lossy()
            .replace(".headers.json", ".body");
        let body = std::fs::read(&body_path).unwrap();
        let mut req = app
            .http
            .post(format!("{}{}", app.url, recorded["path"].as_str().unwrap()));
        let mut has_auth = false;
        for (k, v) in recorded["headers"].as_object().unwrap() {
            let lk = k.to_ascii_lowercase();
            // Transport headers are the client's business; everything else is sent as recorded.
            if matches!(lk.as_str(), "host" | "content-length" | "connection") {
                continue;
            }
            has_auth |= lk == "x-api-key" || lk == "authorization";
            req = req.header(k.as_str(), v.as_str().unwrap());
        }
        if !has_auth {
            // Recorded with no key configured (fixtures README): add the test key as a user would.
            req = req.header("x-api-key", crate::support::app::KEY);
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status();
        let receipt: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "{}: {receipt}", headers_path.display());
        accepted += receipt["accepted"].as_u64().unwrap();
        rejected += receipt["rejected"].as_u64().unwrap();
    }
    (accepted, rejected)
}

async fn rows(app: &TestApp, sql: &str) -> Vec<BTreeMap<String, String>> {
    let wrapped = format!("SELECT to_jsonb(x)::text FROM ({sql}) x");
    app.db
        .query(&wrapped, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .collect()
}

/// The comm record that the dummy/demo sources of both agents send.
fn assert_demo_record(r: &BTreeMap<String, String>) {
    assert_eq!(r["src_ip"], "10.1.2.3");
    assert_eq!(r["src_port"], "51544");
    assert_eq!(r["dst_ip"], "10.0.0.5");
    assert_eq!(r["dst_port"], "443");
    assert_eq!(r["protocol"], "tcp");
    assert_eq!(r["service"], "web");
    assert_eq!(r["status"], "200");
    assert_eq!(r["bytes_in"], "512");
    assert_eq!(r["bytes_out"], "2048");
    assert_eq!(r["latency_ms"], "12.5");
    assert_eq!(r["message"], "GET /api/items");
}

const DEMO_COLUMNS: &str = "host(src_ip) AS src_ip, src_port, host(dst_ip) AS dst_ip, dst_port, protocol, service, \
     status, bytes_in, bytes_out, latency_ms, message, host, producer, tags::text AS tags, ts, received_at";

#[tokio::test]
async fn fluent_bit_json_formats_land_as_records() {
    for folder in [
        "json",
        "default-format",
        "json-gzip",
        "json_lines",
        "basic-auth",
        "msgpack-explicit",
    ] {
        let app = spawn_app().await;
        let (accepted, rejected) = replay(&app, &format!("fluent-bit-5.1.1/{folder}")).await;
        assert!(accepted > 0, "{folder}");
        assert_eq!(rejected, 0, "{folder}");
        assert_eq!(
            app.wait_rows(accepted as i64).await,
            accepted as i64,
            "{folder}"
        );
        let rows = rows(&app, &format!("SELECT {DEMO_COLUMNS} FROM comm_logs")).await;
        for r in &rows {
            assert_demo_record(r);
            assert_eq!(r["producer"], "producer-a", "{folder}");
            // The agent's record time (`date`, or msgpack EventTime), not the receive time.
            assert!(r["ts"].starts_with("2026-11-2"), "{folder}: {}", r["ts"]);
            assert_ne!(r["ts"], r["received_at"]);
        }
        app.stop().await.unwrap();
    }
}

#[tokio::test]
async fn fluent_bit_msgpack_event_time_is_kept_to_the_microsecond() {
    let app = spawn_app().await;
    let (accepted, _) = replay(&app, "fluent-bit-5.1.1/msgpack-explicit").await;
    app.wait_rows(accepted as i64).await;
    // First entry's EventTime: 0x6b02c51b s + 0x050665a0 ns (bytes 4..12 of 000.body).
    let body =
        std::fs::read(fixtures().join("fluent-bit-5.1.1/msgpack-explicit/000.body")).unwrap();
    let secs = u32::from_be_bytes(body[4..8].try_into().unwrap()) as f64;
    let nanos = u32::from_be_bytes(body[8..12].try_into().unwrap()) as f64;
    let first: f64 = app
        .db
        .query_one(
            "SELECT extract(epoch FROM min(ts))::float8 FROM comm_logs",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (first - (secs + nanos / 1e9)).abs() < 1e-6,
        "{first} vs {}",
        secs + nanos / 1e9
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn fluent_bit_nginx_tail_with_string_numbers() {
    let app = spawn_app().await;
    let (accepted, rejected) = replay(&app, "fluent-bit-5.1.1/tail-nginx").await;
    assert_eq!(rejected, 0);
    let lines =
        std::fs::read_to_string(fixtures().join("fluent-bit-5.1.1/tail-nginx/access.log")).unwrap();
    assert_eq!(
        accepted as usize,
        lines.lines().filter(|l| !l.trim().is_empty()).count()
    );
    app.wait_rows(accepted as i64).await;
    let r = rows(&app, "SELECT host(src_ip) AS ip, status, bytes_out, host, tags::jsonb->>'path' AS path, tags::jsonb->>'user' AS user_field FROM comm_logs ORDER BY ts LIMIT 1").await;
    // {"date":1795341610.0,"remote":"198.51.100.23","host":"-","user":"-","method":"GET","path":"/api/orders","code":"404","size":"17094",...,"source_host":"edge-1"}
    assert_eq!(r[0]["ip"], "198.51.100.23");
    assert_eq!(r[0]["status"], "404");
    assert_eq!(r[0]["bytes_out"], "17094");
    assert_eq!(r[0]["host"], "edge-1");
    assert_eq!(r[0]["path"], "/api/orders");
    assert_eq!(r[0]["user_field"], "-");
    let v6 = app
        .count("SELECT count(*) FROM comm_logs WHERE family(src_ip) = 6")
        .await;
    assert!(v6 > 0, "IPv6 clients in the log arrive as IPv6");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn vector_payloads_land_as_records() {
    // json/ndjson/gzip carry the record as a JSON string in `message`: it is unpacked.
    for folder in ["json", "ndjson", "gzip", "headers", "structured"] {
        let app = spawn_app().await;
        let (accepted, rejected) = replay(&app, &format!("vector-0.58.0/{folder}")).await;
        assert!(accepted > 0, "{folder}");
        assert_eq!(rejected, 0, "{folder}");
        assert_eq!(
            app.wait_rows(accepted as i64).await,
            accepted as i64,
            "{folder}"
        );
        let rows = rows(&app, &format!("SELECT {DEMO_COLUMNS} FROM comm_logs")).await;
        for r in &rows {
            assert_demo_record(r);
            assert_eq!(r["host"], "localhost", "{folder}");
            let tags: Value = serde_json::from_str(&r["tags"]).unwrap();
            assert_eq!(tags["source_type"], "demo_logs", "{folder}");
            assert!(r["ts"].starts_with("2026-11-22"), "{folder}: {}", r["ts"]);
        }
        app.stop().await.unwrap();
    }
}

#[tokio::test]
async fn vector_nginx_file_source() {
    let app = spawn_app().await;
    let (accepted, rejected) = replay(&app, "vector-0.58.0/file-nginx").await;
    assert_eq!(rejected, 0);
    app.wait_rows(accepted as i64).await;
    let r = rows(&app, "SELECT host(src_ip) AS ip, status, bytes_out, host, ts, tags::jsonb->>'request' AS request FROM comm_logs WHERE bytes_out = 6588").await;
    // {"client":"10.1.2.3",...,"request":"POST /login HTTP/1.1","size":6588,...,"status":302,"timestamp":"2026-08-21T12:03:01Z"}
    assert_eq!(r[0]["ip"], "10.1.2.3");
    assert_eq!(r[0]["status"], "302");
    assert_eq!(r[0]["bytes_out"], "6588");
    assert_eq!(r[0]["host"], "vm");
    assert_eq!(r[0]["request"], "POST /login HTTP/1.1");
    assert!(
        r[0]["ts"].starts_with("2026-08-21T12:03:01"),
        "{}",
        r[0]["ts"]
    );
    app.stop().await.unwrap();
}

/// Fluent Bit reads at most 4,096 bytes of an answer; a longer one fails its flush and the whole chunk is sent
/// again (and stored again). 200 invalid events among 2,000, with long bad values: the answer stays short,
/// says how many errors it does not list, and the chunk is stored once.
#[tokio::test]
async fn answers_to_many_invalid_events_fit_in_what_fluent_bit_reads() {
    let app = spawn_app().await;
    let long = "x".repeat(500);
    let events: Vec<String> = (0..2000)
        .map(|i| {
            if i % 10 == 0 {
                format!(r#"{{"src_ip":"{long}","service":"fb"}}"#)
            } else {
                r#"{"service":"fb","status":200}"#.to_string()
            }
        })
        .collect();
    let resp = app
        .ingest(
            format!("[{}]", events.join(",")),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(resp.status(), 202);
    let text = resp.text().await.unwrap();
    assert!(text.len() < 4096, "{} bytes: {text}", text.len());
    let receipt: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (receipt["accepted"].as_u64(), receipt["rejected"].as_u64()),
        (Some(1800), Some(200))
    );
    let listed = receipt["errors"].as_array().unwrap().len() as u64;
    assert!(listed >= 1);
    assert_eq!(receipt["errors_omitted"].as_u64(), Some(200 - listed));
    assert_eq!(app.wait_rows(1800).await, 1800);
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", 200)
            .await,
        200
    );
}

fn agent_config(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent-configs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `[SECTION]` → its `key value` lines (classic Fluent Bit format), in order.
fn classic_sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.to_uppercase(), Vec::new()));
            continue;
        }
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let section = sections.last_mut().expect("a key outside any section");
        section.1.push((k.to_lowercase(), v.trim().to_string()));
    }
    sections
}

/// The shipped configs parse, take the collector's address and key from the environment (never a literal
/// key), and keep data across a collector or database outage: Vector with acknowledgements and a disk buffer,
/// Fluent Bit with filesystem storage, tail offsets and unlimited retries, its parser file beside it.
#[test]
fn shipped_agent_configs_parse_and_use_the_environment() {
    let vector: serde_yaml::Value = serde_yaml::from_str(&agent_config("vector.yaml")).unwrap();
    let sink = &vector["sinks"]["server_logger"];
    assert_eq!(sink["uri"], "${SERVER_LOGGER_URL}/ingest");
    assert_eq!(
        sink["request"]["headers"]["X-API-KEY"],
        "${SERVER_LOGGER_API_KEY}"
    );
    assert_eq!(sink["acknowledgements"]["enabled"], true);
    assert_eq!(sink["buffer"]["type"], "disk");
    assert!(vector["data_dir"]
        .as_str()
        .unwrap()
        .contains("VECTOR_DATA_DIR"));
    let remap = vector["transforms"]["parse"]["source"].as_str().unwrap();
    assert!(
        remap.contains("del(.message)"),
        "the raw line is dropped once parsed"
    );

    let classic = classic_sections(&agent_config("fluent-bit.conf"));
    let get = |section: &str, key: &str| -> Vec<String> {
        classic
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, kv)| kv.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()))
            .collect()
    };
    let parsers = get("SERVICE", "parsers_file");
    assert_eq!(parsers, ["parsers.conf"]);
    let parser_file = classic_sections(&agent_config("parsers.conf"));
    assert!(parser_file
        .iter()
        .any(|(s, kv)| s == "PARSER" && kv.contains(&("name".into(), "json".into()))));
    assert_eq!(get("INPUT", "parser"), ["json"]);
    assert_eq!(get("INPUT", "storage.type"), ["filesystem"]);
    assert_eq!(get("INPUT", "db").len(), 1);
    assert_eq!(get("OUTPUT", "retry_limit"), ["no_limits"]);
    assert_eq!(get("OUTPUT", "host"), ["${SERVER_LOGGER_HOST}"]);
    assert_eq!(get("OUTPUT", "port"), ["${SERVER_LOGGER_PORT}"]);
    assert_eq!(
        get("OUTPUT", "header"),
        ["X-API-KEY ${SERVER_LOGGER_API_KEY}"]
    );
    assert_eq!(get("SERVICE", "storage.path").len(), 1);

    let yaml: serde_yaml::Value = serde_yaml::from_str(&agent_config("fluent-bit.yaml")).unwrap();
    let output = &yaml["pipeline"]["outputs"][0];
    assert_eq!(output["retry_limit"], "no_limits");
    assert_eq!(output["header"], "X-API-KEY ${SERVER_LOGGER_API_KEY}");
    assert_eq!(output["host"], "${SERVER_LOGGER_HOST}");
    assert_eq!(yaml["pipeline"]["inputs"][0]["parser"], "json");
    assert_eq!(yaml["parsers"][0]["name"], "json");
    assert_eq!(yaml["pipeline"]["inputs"][0]["storage.type"], "filesystem");
    // No literal key anywhere.
    for name in ["vector.yaml", "fluent-bit.conf", "fluent-bit.yaml"] {
        assert!(
            !agent_config(name).contains("change-me"),
            "{name} holds a literal key"
        );
    }
}

/// An agent resends a chunk whose answer it did not get: the recorded Fluent Bit and Vector requests, replayed
/// twice, are stored once (the second time every request is a duplicate).
#[tokio::test]
async fn recorded_agent_requests_replayed_twice_are_stored_once() {
    let app = crate::support::spawn_app_with(|c| c.dedup_window_secs = 3600).await;
    let mut first = 0;
    for folder in ["fluent-bit-5.1.1/json", "vector-0.58.0/json"] {
        let (accepted, _) = replay(&app, folder).await;
        assert!(accepted > 0);
        first += accepted;
        let (again, rejected) = replay(&app, folder).await;
        assert_eq!(
            (again, rejected),
            (0, 0),
            "{folder}: the replay is all duplicates"
        );
    }
    assert_eq!(app.wait_rows(first as i64).await, first as i64);
}
