//! Enrichment with MaxMind DB files the tests write themselves (`mmdb-writer`): exact columns for IPv4 and IPv6
//! addresses, labelled special ranges, queries by country and network, a database replaced under load, and a
//! missing or corrupt database (the collector runs on without it); threat lists matched at their prefixes'
//! boundaries and reloaded.

use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use mmdb_writer::Writer;
use serde_json::{json, Value};

use crate::support::spawn_app_with;

/// A country/city database: (network, country code, city) and its build time.
fn city_db(path: &Path, entries: &[(&str, &str, &str)], built: u64) {
    let mut w = Writer::builder("Test-City")
        .build_epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(built))
        .build();
    for (net, country, city) in entries {
        let record = json!({"country": {"iso_code": country}, "city": {"names": {"en": city}}});
        w.insert(net.parse::<IpNet>().unwrap(), &record).unwrap();
    }
    write_atomically(path, &w.to_bytes().unwrap());
}

fn asn_db(path: &Path, entries: &[(&str, u32, &str)]) {
    let mut w = Writer::new("Test-ASN");
    for (net, asn, org) in entries {
        let record =
            json!({"autonomous_system_number": asn, "autonomous_system_organization": org});
        w.insert(net.parse::<IpNet>().unwrap(), &record).unwrap();
    }
    write_atomically(path, &w.to_bytes().unwrap());
}

/// As an operator replaces a file: a new one renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const EVENTS: &str = r#"[
  {"src_ip": "81.2.69.10", "dst_ip": "2a02:ff::5", "service": "web", "message": "public"},
  {"src_ip": "10.1.2.3", "dst_ip": "8.8.8.8", "service": "web", "message": "private to unknown"},
  {"src_ip": "127.0.0.1", "dst_ip": "192.0.2.9", "service": "web", "message": "loopback to documentation"},
  {"src_ip": "fd00::1", "dst_ip": "::ffff:81.2.69.77", "service": "web", "message": "v6 private to mapped v4"}
]"#;

/// The collector's /readyz answer (its `geoip` part says which databases are loaded).
async fn readyz(app: &crate::support::TestApp) -> Value {
    app.http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn rows(app: &crate::support::TestApp) -> Vec<Vec<Option<String>>> {
    app.db
        .query(
            "SELECT message, src_country, src_city, src_asn::text, src_as_org, dst_country, dst_city,
                    dst_asn::text, dst_as_org
             FROM comm_logs ORDER BY message",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..9).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect()
}

fn row(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|s| s.map(String::from)).collect()
}

#[tokio::test]
async fn addresses_get_their_country_city_and_network() {
    let dir = tempfile::tempdir().unwrap();
    let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
    city_db(
        &city,
        &[
            ("81.2.69.0/24", "GB", "London"),
            ("2a02:ff::/32", "DE", "Berlin"),
        ],
        1_790_000_000,
    );
    asn_db(
        &asn,
        &[
            ("81.2.69.0/24", 64500, "Example Transit"),
            ("2a02:ff::/32", 64501, "Example Six"),
        ],
    );
    let app = spawn_app_with(|c| {
        c.geoip_city_db = Some(city.clone());
        c.geoip_asn_db = Some(asn.clone());
        c.geoip_city = true;
    })
    .await;
    assert_eq!(app.ingest_json(EVENTS).await.0, 202);
    app.wait_rows(4).await;
    let n = None;
    assert_eq!(
        rows(&app).await,
        vec![
            row(&[
                Some("loopback to documentation"),
                Some("loopback"),
                n,
                n,
                n,
                Some("documentation"),
                n,
                n,
                n
            ]),
            row(&[
                Some("private to unknown"),
                Some("private"),
                n,
                n,
                n,
                n,
                n,
                n,
                n
            ]),
            row(&[
                Some("public"),
                Some("GB"),
                Some("London"),
                Some("64500"),
                Some("Example Transit"),
                Some("DE"),
                Some("Berlin"),
                Some("64501"),
                Some("Example Six")
            ]),
            row(&[
                Some("v6 private to mapped v4"),
                Some("private"),
                n,
                n,
                n,
                Some("GB"),
                Some("London"),
                Some("64500"),
                Some("Example Transit")
            ]),
        ]
    );
    // Queries by country and network, from their rollup, which holds exactly what the rows do.
    app.assert_rollup_matches_raw().await;
    let (status, top) = app.get_json("/metrics/top-talkers?by=src_country").await;
    assert_eq!(status, 200, "{top}");
    let mut by: Vec<(String, i64)> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["src_country"].as_str().unwrap().to_string(),
                t["events"].as_i64().unwrap(),
            )
        })
        .collect();
    by.sort();
    assert_eq!(
        by,
        [
            ("GB".into(), 1),
            ("loopback".into(), 1),
            ("private".into(), 2)
        ]
    );
    // The same from the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "query",
            "volume",
            "--json",
            "--src-country",
            "GB",
            "--database-url",
            &app.db_url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["events"], 1, "{v}");
    // Grouped, as a table: one row per country, named by it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["query", "volume", "--group-by", "src_country"])
        .args(["--database-url", &app.db_url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][..2], ["src_country", "events"], "{table}");
    assert!(lines.contains(&vec!["private", "2", "0", "0"]), "{table}");
    let (_, logs) = app.get_json("/api/logs?dst_asn=AS64500").await;
    let events = logs["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{logs}");
    assert_eq!(events[0]["dst_as_org"], "Example Transit");
    let (_, volume) = app.get_json("/metrics/volume?src_country=private").await;
    assert_eq!(volume["total"]["events"], 2, "{volume}");
    // Grouped by country and network: every event in exactly one group, largest first.
    let (status, volume) = app.get_json("/metrics/volume?group_by=src_country").await;
    assert_eq!(status, 200, "{volume}");
    let groups: Vec<(Value, Value)> = volume["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["src_country"].clone(), g["total"]["events"].clone()))
        .collect();
    assert_eq!(groups[0], (json!("private"), json!(2)), "{volume}");
    assert_eq!(groups.len(), 3, "{volume}");
    assert_eq!(volume["source"], "comm_rollup_geo", "{volume}");
    assert_eq!(volume["total"]["events"], 4);
    let (status, errors) = app.get_json("/metrics/error-rate?group_by=dst_asn").await;
    assert_eq!(status, 200, "{errors}");
    let mut groups: Vec<(Value, Value)> = errors["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["dst_asn"].clone(), g["overall"]["total"].clone()))
        .collect();
    groups.sort_by_key(|g| g.0.to_string());
    assert_eq!(
        groups,
        [
            (json!("64500"), json!(1)),
            (json!("64501"), json!(1)),
            (Value::Null, json!(2))
        ],
        "{errors}"
    );
    let (status, bad) = app.get_json("/metrics/latency?group_by=src_country").await;
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = app.get_json("/api/logs?src_asn=ASX").await;
    assert_eq!(status, 400);
    assert!(
        bad["detail"].as_str().unwrap().starts_with("src_asn:"),
        "{bad}"
    );
    // The databases in /readyz (no paths) and /metrics.
    let ready = readyz(&app).await;
    assert_eq!(ready["geoip"]["city"]["loaded"], true, "{ready}");
    assert_eq!(
        ready["geoip"]["city"]["built"], "2026-09-21T14:13:20+00:00",
        "{ready}"
    );
    assert!(!ready.to_string().contains("city.mmdb"));
    assert!(app
        .metrics_text()
        .await
        .contains("collector_geoip_build_timestamp_seconds{database=\"city\"} 1790000000"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_database_replaced_under_load_is_used_for_later_events_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    city_db(&city, &[("81.2.69.0/24", "GB", "London")], 1_790_000_000);
    let app = spawn_app_with(|c| c.geoip_city_db = Some(city.clone())).await;
    let batch = r#"[{"src_ip": "81.2.69.10", "service": "web"}]"#;
    let load = {
        let (http, url) = (app.http.clone(), app.url.clone());
        tokio::spawn(async move {
            for _ in 0..200 {
                let r = http
                    .post(format!("{url}/ingest"))
                    .header("x-api-key", crate::support::app::KEY)
                    .body(batch)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    city_db(&city, &[("81.2.69.0/24", "FR", "Paris")], 1_800_000_000);
    let mut reloaded = false;
    for _ in 0..100 {
        let ready = readyz(&app).await;
        if ready["geoip"]["city"]["built"] == "2027-01-15T08:00:00+00:00" {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the replaced database was never loaded");
    load.await.unwrap();
    assert_eq!(
        app.ingest_json(r#"[{"src_ip": "81.2.69.11", "service": "after"}]"#)
            .await
            .0,
        202
    );
    assert_eq!(app.wait_rows(201).await, 201, "no event lost");
    let after = app
        .texts("SELECT src_country FROM comm_logs WHERE service = 'after'")
        .await;
    assert_eq!(after, ["FR"]);
    // Every event has one country or the other: none was left without while the file changed.
    assert_eq!(
        app.count("SELECT count(*) FROM comm_logs WHERE src_country IN ('GB', 'FR')")
            .await,
        201
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_corrupt_database_leaves_the_collector_running_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"this is not a MaxMind database").unwrap();
    let missing = dir.path().join("missing.mmdb");
    let app = spawn_app_with(|c| {
        c.geoip_city_db = Some(corrupt.clone());
        c.geoip_asn_db = Some(missing.clone());
    })
    .await;
    assert_eq!(app.ingest_json(EVENTS).await.0, 202);
    app.wait_rows(4).await;
    // Special ranges are still labelled; public addresses stay unknown.
    let public = app
        .texts("SELECT coalesce(src_country, '-') || '/' || coalesce(dst_country, '-') FROM comm_logs WHERE message = 'public'")
        .await;
    assert_eq!(public, ["-/-"]);
    let ready = readyz(&app).await;
    assert_eq!(ready["geoip"]["city"]["loaded"], false, "{ready}");
    assert_eq!(ready["geoip"]["asn"]["loaded"], false, "{ready}");
    // Once a good file is in place, it is taken up.
    city_db(&corrupt, &[("81.2.69.0/24", "GB", "London")], 1_790_000_000);
    let mut loaded = false;
    for _ in 0..100 {
        let ready = readyz(&app).await;
        if ready["geoip"]["city"]["loaded"] == true {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(loaded);
    app.stop().await.unwrap();
}

/// The flat layout of the files `scripts/geoip.sh` installs (`country_code`), as well as GeoIP2's.
#[tokio::test]
async fn the_flat_layout_of_the_installed_country_database_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("country.mmdb");
    let mut w = Writer::new("ip-location-db");
    w.insert(
        "193.0.0.0/21".parse::<IpNet>().unwrap(),
        &json!({"country_code": "NL"}),
    )
    .unwrap();
    w.insert(
        "2001:67c::/32".parse::<IpNet>().unwrap(),
        &json!({"country_code": "NL"}),
    )
    .unwrap();
    write_atomically(&path, &w.to_bytes().unwrap());
    let app = spawn_app_with(|c| c.geoip_city_db = Some(path.clone())).await;
    let (status, _) = app
        .ingest_json(
            r#"[{"src_ip": "193.0.6.139", "dst_ip": "2001:67c:2e8::1"}, {"src_ip": "193.0.8.1"}]"#,
        )
        .await;
    assert_eq!(status, 202);
    app.wait_rows(2).await;
    let got = app
        .texts("SELECT host(src_ip) || ' ' || coalesce(src_country, '-') || ' ' || coalesce(dst_country, '-') FROM comm_logs ORDER BY 1")
        .await;
    assert_eq!(got, ["193.0.6.139 NL NL", "193.0.8.1 - -"]);
    app.stop().await.unwrap();
}

/// Writes a list the way an operator would, replacing the file.
fn list(path: &Path, text: &str) {
    write_atomically(path, text.as_bytes());
}

#[tokio::test]
async fn threat_lists_mark_events_at_their_boundaries_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (drop, tor) = (dir.path().join("drop.txt"), dir.path().join("exits.list"));
    list(
        &drop,
        "; Spamhaus DROP style\n192.0.2.0/25 ; SBL1\n2001:db8:1::/48 ; SBL2\nnot-a-network\n",
    );
    // Overlaps the first list: the first configured list names the match.
    list(&tor, "# exits\n198.51.100.7\n192.0.2.0/24\n");
    let missing = dir.path().join("absent.txt");
    let lists = vec![
        drop.to_str().unwrap().parse().unwrap(),
        format!("tor={}", tor.display()).parse().unwrap(),
        format!("absent={}", missing.display()).parse().unwrap(),
    ];
    let app = spawn_app_with(|c| c.threat_lists = lists).await;
    let events = r#"[
      {"src_ip": "192.0.2.127", "dst_ip": "10.0.0.9", "message": "last of drop's /25"},
      {"src_ip": "192.0.2.128", "dst_ip": "198.51.100.7", "message": "past drop, in tor", "tags": {"k": "v"}},
      {"src_ip": "10.0.0.1", "dst_ip": "2001:db8:1:ffff::5", "message": "destination on drop"},
      {"src_ip": "10.0.0.2", "dst_ip": "198.51.100.8", "message": "next to tor's address"},
      {"src_ip": "2001:db8:2::1", "message": "past drop's /48"}
    ]"#;
    assert_eq!(app.ingest_json(events).await.0, 202);
    app.wait_rows(5).await;
    let stored = app
        .db
        .query(
            "SELECT message, threat, tags::text FROM comm_logs ORDER BY message COLLATE \"C\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
            )
        })
        .collect::<Vec<_>>();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        stored,
        vec![
            (
                "destination on drop".into(),
                some("drop"),
                some(r#"{"threat_dst": "drop"}"#)
            ),
            (
                "last of drop's /25".into(),
                some("drop"),
                some(r#"{"threat_src": "drop"}"#)
            ),
            ("next to tor's address".into(), None, None),
            ("past drop's /48".into(), None, None),
            (
                "past drop, in tor".into(),
                some("tor"),
                some(r#"{"k": "v", "threat_dst": "tor", "threat_src": "tor"}"#)
            ),
        ]
    );
    // Who hit what.
    let (status, top) = app.get_json("/metrics/top-talkers?threat=any").await;
    assert_eq!(status, 200, "{top}");
    let mut sources: Vec<&str> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["src_ip"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, ["10.0.0.1", "192.0.2.127", "192.0.2.128"], "{top}");
    let top = app.ok_json("/metrics/top-talkers?by=threat").await;
    assert_eq!(top["source"], "comm_rollup_geo", "{top}");
    app.assert_rollup_matches_raw().await;
    let mut by: Vec<(String, i64)> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| Some((t["threat"].as_str()?.to_string(), t["events"].as_i64()?)))
        .collect();
    by.sort();
    assert_eq!(by, [("drop".into(), 2), ("tor".into(), 1)], "{top}");
    let logs = app.ok_json("/api/logs?threat=tor").await;
    assert_eq!(logs["events"].as_array().unwrap().len(), 1, "{logs}");
    // Loaded lists in /readyz and /metrics; the missing one says so, and the collector runs.
    let ready = readyz(&app).await;
    assert_eq!(ready["threat_lists"]["drop"]["networks"], 2, "{ready}");
    assert_eq!(ready["threat_lists"]["tor"]["networks"], 2, "{ready}");
    assert_eq!(
        ready["threat_lists"]["absent"]["networks"],
        Value::Null,
        "{ready}"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("collector_threat_matches_total{list=\"drop\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("collector_threat_matches_total{list=\"tor\"} 2"),
        "{metrics}"
    );
    // A list changed on disk is used for later events without a restart.
    list(&tor, "198.51.100.7\n198.51.100.8\n203.0.113.0/24\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while readyz(&app).await["threat_lists"]["tor"]["networks"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the changed list was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = r#"[{"src_ip": "10.0.0.3", "dst_ip": "198.51.100.8", "message": "after reload"}]"#;
    assert_eq!(app.ingest_json(probe).await.0, 202);
    app.wait_rows(6).await;
    assert_eq!(
        app.texts("SELECT threat FROM comm_logs WHERE message = 'after reload'")
            .await,
        ["tor"]
    );
    assert_eq!(app.count("SELECT count(*) FROM comm_logs").await, 6);
    app.stop().await.unwrap();
}

/// Rules used by the redaction tests.
fn redaction(c: &mut collector::config::ServeConfig) {
    c.redact_drop = vec!["tags.session".into(), "protocol".into()];
    c.redact_hash = vec!["host".into(), "tags.user".into()];
    c.redact_hash_key = Some("a-secret-of-16-bytes-or-more".into());
    c.redact_mask = vec!["email".into(), "bearer".into(), "ipv4".into()];
    c.redact_mask_regex = Some(r"secret=\S+".into());
    c.redact_ipv4_prefix = 24;
    c.redact_ipv6_prefix = 48;
}

const SENSITIVE: &str = r#"[
  {"src_ip": "203.0.113.77", "dst_ip": "2001:db8:1:2::9", "host": "db-primary", "session": "s-1",
   "protocol": "tcp", "user": "mallory", "keep": "yes",
   "message": "login alice@example.com Authorization: Bearer tok.SECRET-123 from 10.9.8.7 secret=hunter2"},
  {"src_ip": "198.51.100.200", "dst_port": "not-a-port", "message": "bob@example.org failed"}
]"#;

/// Each rule applied to the rows as stored, to the dead letter, and to the spool on disk; enrichment reads the
/// addresses before they are cut.
#[tokio::test]
async fn redaction_applies_before_anything_is_stored_or_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("one.txt");
    list(&lists, "203.0.113.77\n");
    let lists = vec![lists.to_str().unwrap().parse().unwrap()];
    let app = spawn_app_with(|c| {
        redaction(c);
        c.threat_lists = lists;
    })
    .await;
    let (status, receipt) = app.ingest_json(SENSITIVE).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["errors"][0]["index"], 1, "{receipt}");
    app.wait_rows(1).await;
    let row = app
        .db
        .query_one(
            "SELECT host(src_ip), host(dst_ip), host, message, tags::text, threat, protocol FROM comm_logs",
            &[],
        )
        .await
        .unwrap();
    let text = |i: usize| row.get::<_, Option<String>>(i).unwrap_or_default();
    assert_eq!(text(0), "203.0.113.0");
    assert_eq!(text(1), "2001:db8:1::");
    assert_eq!(text(2).len(), 32, "host hashed: {}", text(2));
    assert!(text(2).bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        text(3),
        "login [email] Authorization: Bearer [redacted] from [ipv4] [redacted]"
    );
    let tags: Value = serde_json::from_str(&text(4)).unwrap();
    let user = tags["user"].as_str().unwrap_or_default().to_string();
    assert_eq!(user.len(), 32, "{tags}");
    assert_ne!(user, text(2), "each value has its own hash");
    assert_eq!(
        tags,
        json!({"keep": "yes", "user": user, "threat_src": "one"}),
        "session dropped, user hashed"
    );
    // Matched on the address as sent, a /32 the cut address is not.
    assert_eq!(text(5), "one");
    assert_eq!(text(6), "", "protocol dropped");
    // The dead letter: the event's text with the same rules, as far as its text allows.
    app.wait_count("SELECT count(*) FROM ingest_rejects", 1)
        .await;
    let raw = app
        .texts("SELECT convert_from(raw, 'UTF8') FROM ingest_rejects")
        .await
        .remove(0);
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        raw,
        json!({"src_ip": "198.51.100.0", "dst_port": "not-a-port", "message": "[email] failed"})
    );
    // Nothing as sent reached the spool: its records hold the redacted batch.
    let spooled: Vec<u8> = std::fs::read_dir(app.spool_dir.as_ref().unwrap())
        .unwrap()
        .flat_map(|f| std::fs::read(f.unwrap().path()).unwrap())
        .collect();
    let spooled = String::from_utf8_lossy(&spooled);
    assert!(spooled.contains("[email]"), "the batch is in the spool");
    for secret in [
        "alice@",
        "bob@",
        "SECRET",
        "db-primary",
        "s-1",
        "203.0.113.77",
        "198.51.100.200",
    ] {
        assert!(!spooled.contains(secret), "{secret} reached the spool");
    }
    let metrics = app.metrics_text().await;
    for (rule, n) in [
        ("drop:tags.session", 1),
        ("drop:protocol", 1),
        ("hash:host", 1),
        ("hash:tags.user", 1),
        ("mask:email", 2),
        ("mask:bearer", 1),
        ("mask:ipv4", 1),
        ("mask:regex", 1),
        ("truncate:ipv4/24", 2),
        ("truncate:ipv6/48", 1),
    ] {
        assert!(
            metrics.contains(&format!(
                "collector_redactions_total{{rule=\"{rule}\"}} {n}\n"
            )),
            "{rule} {n}: {metrics}"
        );
    }
    app.stop().await.unwrap();
}

/// A redacted batch left in the spool by a crash is replayed as it was built: the same rows, nothing decoded
/// again.
#[tokio::test]
async fn a_redacted_batch_in_the_spool_is_replayed_as_built() {
    use collector::pipeline::spool::format;
    let mut cfg = collector::config::ServeConfig::defaults();
    redaction(&mut cfg);
    let redactor = collector::enrich::Redactor::new(&cfg.redact_rules())
        .unwrap()
        .unwrap();
    let text = bytes::Bytes::from_static(SENSITIVE.as_bytes());
    let (batch, _) = collector::pipeline::batch::Batch::build_for(
        text.clone(),
        SENSITIVE,
        collector::decode::Format::Json,
        "replayer".into(),
        chrono::Utc::now().timestamp_micros(),
        &cfg.build_limits(),
        collector::pipeline::batch::Extras {
            redactor: Some(&redactor),
            ..Default::default()
        },
    )
    .unwrap();
    let record = format::Record {
        seq: 1,
        received_at_us: batch.received_at_us,
        identity: [9; 16],
        producer: "replayer".into(),
        content_type: None,
        content_encoding: None,
        kind: format::Kind::Batch,
        body: format::encode_batch(&batch),
    };
    let spool = tempfile::tempdir().unwrap();
    let mut bytes = bytes::BytesMut::from(&format::segment_header()[..]);
    format::encode(&mut bytes, &record);
    std::fs::write(spool.path().join(format::segment_name(1)), &bytes).unwrap();
    let app = spawn_app_with(|c| c.spool_dir = Some(spool.path().to_path_buf())).await;
    app.wait_rows(1).await;
    app.wait_count("SELECT count(*) FROM ingest_rejects", 1)
        .await;
    assert_eq!(
        app.texts("SELECT producer || ' ' || host(src_ip) || ' ' || message FROM comm_logs")
            .await,
        ["replayer 203.0.113.0 login [email] Authorization: Bearer [redacted] from [ipv4] [redacted]"]
    );
    assert_eq!(
        app.texts(
            "SELECT event_index::text || ' ' || convert_from(raw, 'UTF8') FROM ingest_rejects"
        )
        .await,
        [r#"1 {"dst_port":"not-a-port","message":"[email] failed","src_ip":"198.51.100.0"}"#]
    );
    app.stop().await.unwrap();
}
