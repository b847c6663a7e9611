//! Network logs shipped as they are written, with a bare tail config and no transform: Zeek's `conn.log` and
//! Suricata's EVE JSON, mapped field by field by the collector (README, "Sources").

use crate::support::spawn_app;

/// One stored row, as text, in a fixed column order.
type Row = (
    i64,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<String>,
);

async fn stored(app: &crate::support::TestApp) -> Vec<(Row, serde_json::Value)> {
    app.db
        .query(
            "SELECT (extract(epoch FROM ts) * 1e6)::int8, host(src_ip), src_port, host(dst_ip), dst_port,
                    protocol, service, status, bytes_in, bytes_out, latency_ms, message, tags
             FROM comm_logs ORDER BY ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let row: Row = (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                r.get(9),
                r.get(10),
                r.get(11),
            );
            (row, r.get::<_, Option<serde_json::Value>>(12).unwrap_or_default())
        })
        .collect()
}

async fn ship(file: &str) -> (crate::support::TestApp, Vec<(Row, serde_json::Value)>) {
    let app = spawn_app().await;
    let body = std::fs::read(format!(
        "{}/tests/fixtures/sources/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let lines = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as i64;
    let r = app
        .ingest(body, &[("content-type", "application/x-ndjson")])
        .await;
    assert_eq!(r.status(), 202);
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["accepted"], lines, "{receipt}");
    assert_eq!(app.wait_rows(lines).await, lines);
    let rows = stored(&app).await;
    (app, rows)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn zeek_conn_log_lands_field_by_field() {
    let (app, rows) = ship("zeek-conn.json").await;
    let want: Vec<Row> = vec![
        (
            1764324000104812,
            s("10.20.0.15"),
            Some(51744),
            s("198.51.100.7"),
            Some(443),
            s("tcp"),
            s("ssl"),
            None,
            Some(1824),
            Some(48213),
            Some(1532.417),
            None,
        ),
        (
            1764324001883020,
            s("10.20.0.31"),
            Some(36015),
            s("10.20.0.2"),
            Some(53),
            s("udp"),
            s("dns"),
            None,
            Some(44),
            Some(60),
            Some(0.412),
            None,
        ),
        (
            1764324002250000,
            s("203.0.113.50"),
            Some(40112),
            s("10.20.0.15"),
            Some(22),
            s("tcp"),
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            1764324003500000,
            s("fd00::15"),
            Some(58000),
            s("2001:db8::80"),
            Some(80),
            s("tcp"),
            s("http"),
            None,
            Some(512),
            Some(0),
            Some(250.0),
            None,
        ),
    ];
    let got: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let mut g = g.clone();
        // Float milliseconds from seconds: compared to the microsecond.
        g.10 = g.10.map(|v| (v * 1000.0).round() / 1000.0);
        assert_eq!(&g, w);
    }
    // What has no column is kept in tags.
    assert_eq!(rows[0].1["conn_state"], "SF");
    assert_eq!(rows[0].1["uid"], "CqL9xK2mBv0aQ1fZ3e");
    assert_eq!(rows[2].1["history"], "S");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn suricata_eve_lands_field_by_field() {
    let (app, rows) = ship("suricata-eve.json").await;
    let want: Vec<Row> = vec![
        (
            1795860000123456,
            s("10.20.0.15"),
            Some(51744),
            s("198.51.100.7"),
            Some(443),
            s("tcp"),
            s("tls"),
            None,
            Some(2780),
            Some(50301),
            None,
            None,
        ),
        (
            1795860001000001,
            s("10.20.0.31"),
            Some(40022),
            s("192.0.2.80"),
            Some(80),
            s("tcp"),
            None,
            Some(404),
            None,
            None,
            None,
            None,
        ),
        (
            1795860002500000,
            s("203.0.113.50"),
            Some(40112),
            s("10.20.0.15"),
            Some(22),
            s("tcp"),
            None,
            None,
            None,
            None,
            None,
            s("ET SCAN Potential SSH Scan"),
        ),
        (
            1795860003750000,
            s("10.20.0.31"),
            Some(36015),
            s("10.20.0.2"),
            Some(53),
            s("udp"),
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    ];
    let got: Vec<Row> = rows.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(got, want);
    // The nested objects stay whole in tags, beside the fields taken from them.
    assert_eq!(rows[0].1["event_type"], "flow");
    assert_eq!(rows[0].1["flow"]["pkts_toserver"], 18);
    assert_eq!(rows[1].1["http"]["url"], "/missing");
    assert_eq!(rows[2].1["alert"]["severity"], 2);
    assert_eq!(rows[3].1["dns"]["rrname"], "updates.example");
    app.stop().await.unwrap();
}

fn config(source: &str, agent: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../agent-configs/sources/{source}/{agent}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const SOURCES: [&str; 5] = ["nginx", "haproxy", "zeek", "suricata", "firewall"];

/// Every source's pair of configs parses, reads the collector's address and key from the environment (no
/// literal key), keeps what it has not delivered on disk, and retries until the collector takes it.
#[test]
fn every_source_config_parses_and_reads_the_environment() {
    for source in SOURCES {
        let vector: serde_yaml::Value =
            serde_yaml::from_str(&config(source, "vector.yaml")).unwrap();
        let sink = &vector["sinks"]["server_logger"];
        assert_eq!(sink["uri"], "${SERVER_LOGGER_URL}/ingest", "{source}");
        assert_eq!(
            sink["request"]["headers"]["X-API-KEY"], "${SERVER_LOGGER_API_KEY}",
            "{source}"
        );
        assert_eq!(sink["acknowledgements"]["enabled"], true, "{source}");
        assert_eq!(sink["buffer"]["type"], "disk", "{source}");
        assert!(
            vector["data_dir"]
                .as_str()
                .unwrap()
                .contains("VECTOR_DATA_DIR"),
            "{source}"
        );
        // The sink reads what the source (through its transform) produces.
        let input = sink["inputs"][0].as_str().unwrap();
        assert!(
            !vector["transforms"][input].is_null() || !vector["sources"][input].is_null(),
            "{source}"
        );

        let fb: serde_yaml::Value =
            serde_yaml::from_str(&config(source, "fluent-bit.yaml")).unwrap();
        let output = &fb["pipeline"]["outputs"][0];
        assert_eq!(output["host"], "${SERVER_LOGGER_HOST}", "{source}");
        assert_eq!(output["port"], "${SERVER_LOGGER_PORT}", "{source}");
        assert_eq!(
            output["header"], "X-API-KEY ${SERVER_LOGGER_API_KEY}",
            "{source}"
        );
        assert_eq!(output["retry_limit"], "no_limits", "{source}");
        let input = &fb["pipeline"]["inputs"][0];
        assert_eq!(input["storage.type"], "filesystem", "{source}");
        let parser = input["parser"].as_str().unwrap();
        let parsers = fb["parsers"].as_sequence().unwrap();
        assert!(
            parsers.iter().any(|p| p["name"] == parser),
            "{source}: parser {parser} defined"
        );
        for agent in ["vector.yaml", "fluent-bit.yaml"] {
            assert!(
                !config(source, agent).contains("change-me"),
                "{source}/{agent}"
            );
        }
    }
}

/// The regex a Fluent Bit parser of `source` uses, checked to be the one its Vector config uses too.
fn shipped_regex(source: &str) -> regex::Regex {
    let fb: serde_yaml::Value = serde_yaml::from_str(&config(source, "fluent-bit.yaml")).unwrap();
    let text = fb["parsers"][0]["regex"].as_str().unwrap().to_string();
    if source == "haproxy" {
        assert!(
            config(source, "vector.yaml").contains(&format!("r'{text}'")),
            "one regex for both agents"
        );
    }
    regex::Regex::new(&text).unwrap()
}

/// Lines of `file` as the parser makes them: named groups as fields, converted as its `types` says.
fn parsed_lines(source: &str, file: &str) -> String {
    let re = shipped_regex(source);
    let fb: serde_yaml::Value = serde_yaml::from_str(&config(source, "fluent-bit.yaml")).unwrap();
    let integers: Vec<String> = fb["parsers"][0]["types"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|t| t.strip_suffix(":integer").map(str::to_string))
        .collect();
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/sources/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut out = String::new();
    for line in text.lines() {
        // A line the parser does not match is not sent (firewall: the grep filter; HAProxy: status lines).
        let Some(caps) = re.captures(line) else {
            continue;
        };
        let mut object = serde_json::Map::new();
        for name in re.capture_names().flatten() {
            let Some(m) = caps.name(name) else { continue };
            let value = match integers.iter().any(|i| i == name) {
                true => serde_json::Value::from(m.as_str().parse::<i64>().unwrap()),
                false => serde_json::Value::from(m.as_str()),
            };
            object.insert(name.to_string(), value);
        }
        out.push_str(&serde_json::Value::Object(object).to_string());
        out.push('\n');
    }
    out
}

async fn rows_of(app: &crate::support::TestApp) -> Vec<String> {
    app.texts("SELECT concat_ws('|', host(src_ip), src_port, host(dst_ip), dst_port, protocol, service, status,
                              latency_ms, bytes_in, bytes_out, host, message)
             FROM comm_logs ORDER BY ts, src_port").await
}

async fn ingest_ndjson(body: String, n: i64) -> crate::support::TestApp {
    let app = spawn_app().await;
    let r = app
        .ingest(body, &[("content-type", "application/x-ndjson")])
        .await;
    assert_eq!(r.status(), 202);
    let receipt: serde_json::Value = r.json().await.unwrap();
    assert_eq!(receipt["accepted"], n, "{receipt}");
    assert_eq!(app.wait_rows(n).await, n);
    app
}

#[tokio::test]
async fn nginx_json_access_log_lands_field_by_field() {
    let body = std::fs::read_to_string(format!(
        "{}/tests/fixtures/sources/nginx-access.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let app = ingest_ndjson(body, 3).await;
    assert_eq!(
        rows_of(&app).await,
        [
            "203.0.113.77|52114|10.50.0.10|443|shop.example|200|42|512|10240|web-a|GET /cart HTTP/2.0",
            "2001:db8::77|40001|10.50.0.10|443|shop.example|502|1503|388|157|web-a|POST /checkout HTTP/2.0",
            "198.51.100.9|61000|10.50.0.10|80|shop.example|301|0|95|0|web-a|GET / HTTP/1.1",
        ]
    );
    let upstream = app
        .texts("SELECT tags->>'upstream_addr' FROM comm_logs ORDER BY ts LIMIT 1")
        .await;
    assert_eq!(upstream, ["10.50.1.21:8080"]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn haproxy_lines_parsed_by_the_shipped_regex_land_field_by_field() {
    let app = ingest_ndjson(parsed_lines("haproxy", "haproxy.log"), 2).await;
    let mut rows = rows_of(&app).await;
    rows.sort();
    assert_eq!(
        rows,
        [
            "198.51.100.23|40222|api|504|5003|194|POST /v1/orders HTTP/1.1",
            "203.0.113.40|33317|api|200|109|2750|GET /v1/items HTTP/1.1",
        ]
    );
    let server = app
        .texts("SELECT tags->>'server' FROM comm_logs WHERE status = 504")
        .await;
    assert_eq!(server, ["srv2"]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn firewall_lines_land_field_by_field_from_either_agent() {
    // Fluent Bit: the shipped regex.
    let app = ingest_ndjson(parsed_lines("firewall", "kern.log"), 3).await;
    let mut fluent = rows_of(&app).await;
    fluent.sort();
    assert_eq!(
        fluent,
        [
            "10.60.0.5|51515|192.0.2.53|53|udp|73|ACCEPT-OUT:",
            "198.51.100.1|10.60.0.5|icmp|84|DROP-IN:",
            "203.0.113.66|44321|10.60.0.5|22|tcp|60|DROP-IN:",
        ]
    );
    app.stop().await.unwrap();
    // Vector: the key=value pairs as they are (SRC, DST, SPT, DPT, PROTO), split here as its
    // parse_key_value does for these lines.
    let pairs: String = std::fs::read_to_string(format!(
        "{}/tests/fixtures/sources/kern.log",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .lines()
    .filter(|l| l.contains(" SRC="))
    .map(|l| {
        let mut object = serde_json::Map::new();
        for (k, v) in l.split_whitespace().filter_map(|w| w.split_once('=')) {
            object
                .entry(k.to_string())
                .or_insert(serde_json::Value::from(v));
        }
        format!("{}\n", serde_json::Value::Object(object))
    })
    .collect();
    let app = ingest_ndjson(pairs, 3).await;
    let mut vector = rows_of(&app).await;
    vector.sort();
    assert_eq!(
        vector,
        [
            "10.60.0.5|51515|192.0.2.53|53|udp",
            "198.51.100.1|10.60.0.5|icmp",
            "203.0.113.66|44321|10.60.0.5|22|tcp",
        ]
    );
    app.stop().await.unwrap();
}
