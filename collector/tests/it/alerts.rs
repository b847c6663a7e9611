//! Alerts end to end: rules made over the API, evaluated from the rollups, incidents, and notifications to a real
//! local HTTP receiver that checks their signatures the way the README tells a user to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{pg, spawn_app_at, spawn_app_with, TestApp};

const SECRET: &str = "whsec-0123456789abcdef";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    delivery: String,
    body: Value,
    signed: bool,
    /// Answered 2xx.
    accepted: bool,
}

/// A webhook receiver: refuses the first `fail_first` requests with 503, then accepts; records everything.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

/// The receiver's check, as README "Alerts" gives it: HMAC-SHA-256 of `<t>.<body>` under the secret, compared
/// with `v1`, and `t` recent.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(sig) = headers
        .get("x-collector-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

async fn receiver(fail_first: usize) -> Receiver {
    receiver_with(fail_first, false).await
}

/// [`receiver`]; with `hang_first`, the first request is recorded and then never answered in time.
async fn receiver_with(fail_first: usize, hang_first: bool) -> Receiver {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(fail_first));
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(hang_first));
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (record, failures, hang) = (record.clone(), failures.clone(), hang.clone());
            async move {
                let hung = hang.swap(false, Ordering::SeqCst);
                let fail = !hung
                    && failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                record.lock().unwrap().push(Got {
                    delivery: headers
                        .get("x-collector-delivery")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    signed: verify(&headers, &body),
                    accepted: !hung && !fail,
                });
                if hung {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                if fail {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, got }
}

impl Receiver {
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests were accepted.
    async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if got.iter().filter(|g| g.accepted).count() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} accepted deliveries not seen: {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// (rule name, group) of each incident in an `/api/alerts/incidents` answer, sorted.
fn fired(answer: &Value) -> Vec<(String, String)> {
    let mut fired: Vec<(String, String)> = answer["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["rule_name"].as_str().unwrap().to_string(),
                i["group"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    fired.sort();
    fired
}

async fn post_rule(app: &TestApp, rule: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/api/alerts/rules", app.url))
        .header("x-api-key", crate::support::app::KEY)
        .json(&rule)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn events(
    service: &str,
    host: &str,
    statuses: &[i32],
    ts: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let list: Vec<Value> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut e = json!({"src_ip": format!("10.7.0.{}", i % 3 + 1), "dst_ip": "10.0.0.1", "service": service,
                               "host": host, "status": s, "latency_ms": 5.0});
            if let Some(ts) = ts {
                e["timestamp"] = json!(ts.to_rfc3339());
            }
            e
        })
        .collect();
    Value::Array(list).to_string()
}

async fn send(app: &TestApp, body: &str) {
    let (status, receipt) = app.ingest_json(body).await;
    assert_eq!(status, 202, "{receipt}");
}

/// An error-rate threshold per service fires for the failing service only, notifies a receiver that refuses
/// twice (one notification, the same id on every attempt, signed), and resolves when the ratio drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_fires_notifies_once_through_failures_and_resolves() {
    let hook = receiver(2).await;
    let app = spawn_app_with(|c| c.alert_eval_ms = 200).await;
    let (status, rule) = post_rule(
        &app,
        json!({"name": "5xx by service", "kind": "threshold", "query": "error-rate",
               "params": {"group_by": "service"}, "op": ">", "value": 0.2, "min_events": 5,
               "window_secs": 300, "for_secs": 0, "cooldown_secs": 0,
               "webhook": {"url": hook.url, "secret": SECRET}}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    assert!(
        rule["webhook"].get("secret").is_none(),
        "the secret is never shown: {rule}"
    );
    send(
        &app,
        &events(
            "web",
            "h1",
            &[500, 200, 502, 200, 503, 200, 500, 200, 500, 200],
            None,
        ),
    )
    .await;
    send(&app, &events("db", "h1", &[200; 10], None)).await;
    app.wait_rows(20).await;

    let got = hook.wait_accepted(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3, "two refusals then one acceptance: {got:#?}");
    assert!(
        got.iter()
            .all(|g| g.delivery == got[0].delivery && g.signed),
        "{got:#?}"
    );
    let fired = &got[2].body;
    assert_eq!(fired["event"], "fired");
    assert_eq!(
        fired["group"], "web",
        "only the failing service fires: {fired}"
    );
    assert_eq!(fired["value"], 0.5);
    assert_eq!(fired["id"], got[0].delivery.as_str());
    assert!(
        fired["links"]["metrics"]
            .as_str()
            .unwrap()
            .contains("service=web"),
        "{fired}"
    );
    let top = fired["evidence"]["top_talkers"].as_array().unwrap();
    assert!(!top.is_empty(), "{fired}");

    let open = app.ok_json("/api/alerts/incidents?status=open").await;
    let incidents = open["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{open}");
    assert_eq!(incidents[0]["group"], "web");
    let id = incidents[0]["id"].as_i64().unwrap();

    // The ratio drops under the threshold: resolved, and notified once more.
    send(&app, &events("web", "h1", &[200; 40], None)).await;
    let got = hook.wait_accepted(2, Duration::from_secs(30)).await;
    let resolved = &got.last().unwrap().body;
    assert_eq!(resolved["event"], "resolved", "{resolved}");
    assert_eq!(resolved["incident"]["id"], id);
    let detail = app.ok_json(&format!("/api/alerts/incidents/{id}")).await;
    assert_eq!(detail["incident"]["status"], "resolved", "{detail}");
    let kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["fired", "resolved"], "{detail}");
    let deliveries = detail["deliveries"].as_array().unwrap();
    assert_eq!(deliveries[0]["attempts"], 3, "{detail}");
    assert!(
        deliveries.iter().all(|d| !d["delivered_at"].is_null()),
        "{detail}"
    );
    // No further notification: the state is ok, nothing is left to send.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.got().iter().filter(|g| g.accepted).count(), 2);
    let metrics = app.metrics_text().await;
    for line in [
        "collector_alert_notifications_delivered_total 2",
        "collector_alert_notification_failures_total 2",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    assert!(
        !metrics.contains("collector_alert_rule_evaluations_total 0\n"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

/// A host that stopped sending fires `no_data`; a drop against the same window earlier fires `change`; a host
/// still sending fires neither. People acknowledge and comment; a bad rule is a 400 naming its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_and_change_rules_find_the_silent_host() {
    let app = spawn_app_with(|c| c.alert_eval_ms = 200).await;
    let earlier = chrono::Utc::now() - chrono::Duration::minutes(12);
    send(&app, &events("web", "quiet", &[200; 20], Some(earlier))).await;
    send(&app, &events("web", "busy", &[200; 20], Some(earlier))).await;
    send(&app, &events("web", "busy", &[200; 20], None)).await;
    app.wait_rows(60).await;
    let (status, silent) = post_rule(
        &app,
        json!({"name": "silent host", "kind": "no_data", "query": "volume", "params": {"group_by": "host"},
               "window_secs": 300, "lookback_secs": 3600, "cooldown_secs": 0}),
    )
    .await;
    assert_eq!(status, 201, "{silent}");
    let (status, drop) = post_rule(
        &app,
        json!({"name": "traffic halved", "kind": "change", "query": "volume", "params": {"group_by": "host"},
               "field": "events", "op": "<", "value": 0.5, "window_secs": 300, "offset_secs": 600,
               "cooldown_secs": 0}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let open = loop {
        let open = app.ok_json("/api/alerts/incidents?status=open").await;
        if open["incidents"].as_array().unwrap().len() >= 2 {
            break open;
        }
        assert!(Instant::now() < deadline, "{open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let fired = fired(&open);
    assert_eq!(
        fired,
        [
            ("silent host".to_string(), "quiet".to_string()),
            ("traffic halved".into(), "quiet".into())
        ]
    );
    // People's actions go to the timeline.
    let id = open["incidents"][0]["id"].as_i64().unwrap();
    for (action, body) in [
        ("acknowledge", json!({})),
        ("comment", json!({"comment": "looking"})),
    ] {
        let r = app
            .http
            .post(format!("{}/api/alerts/incidents/{id}/{action}", app.url))
            .header("x-api-key", crate::support::app::KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action}");
    }
    let detail = app.ok_json(&format!("/api/alerts/incidents/{id}")).await;
    assert_eq!(detail["incident"]["status"], "acknowledged");
    let last = detail["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["kind"].as_str(), last["comment"].as_str()),
        (Some("comment"), Some("looking"))
    );
    // The same from the command line, straight in the database.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
            .args(["alerts", "--database-url", &app.db_url])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["incidents", "--status", "acknowledged", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["incidents"][0]["id"], id, "{listed}");
    let out = cli(&["resolve", &id.to_string(), "--comment", "fixed the cable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detail = app.ok_json(&format!("/api/alerts/incidents/{id}")).await;
    assert_eq!(detail["incident"]["status"], "resolved", "{detail}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rule.json");
    std::fs::write(
        &file,
        r#"{"name": "x", "kind": "change", "query": "volume", "op": "<"}"#,
    )
    .unwrap();
    let out = cli(&["create", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("value: required"),
        "{out:?}"
    );
    // The quiet host sends again, as much as before: both rules resolve (their states are back to ok).
    send(&app, &events("web", "quiet", &[200; 20], None)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .count(
            "SELECT count(*) FROM alert_transitions WHERE group_key = 'quiet' AND to_state = 'ok'",
        )
        .await
        < 2
    {
        assert!(Instant::now() < deadline, "the rules did not resolve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM alert_states").await, 0);
    // A rule that cannot work says which field and why.
    let (status, bad) = post_rule(
        &app,
        json!({"name": "x", "kind": "threshold", "query": "latency", "field": "error_ratio", "op": ">", "value": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        bad["detail"].as_str().unwrap().starts_with("field:"),
        "{bad}"
    );
    app.stop().await.unwrap();
}

/// Two collectors on one database: the rule is evaluated once a cycle and its notification sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_database_notify_once() {
    two_collectors_notify_once(pg::fresh_database().await, false).await;
}

/// The test above on `db_url` (laid out for Citus when `citus`).
pub async fn two_collectors_notify_once(db_url: String, citus: bool) {
    let hook = receiver(0).await;
    let a = spawn_app_at(db_url.clone(), |c| {
        c.alert_eval_ms = 100;
        c.database.citus = citus;
    })
    .await;
    let b = spawn_app_at(db_url, |c| {
        c.alert_eval_ms = 100;
        c.database.citus = citus;
    })
    .await;
    let (status, rule) = post_rule(
        &a,
        json!({"name": "any traffic", "kind": "threshold", "query": "volume", "op": ">=", "value": 5,
               "window_secs": 300, "webhook": {"url": hook.url, "secret": SECRET}}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    send(&b, &events("web", "h1", &[200; 10], None)).await;
    hook.wait_accepted(1, Duration::from_secs(20)).await;
    // Many cycles of both later, still one notification.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = hook.got();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["group"], "*");
    let transitions = a
        .count("SELECT count(*) FROM alert_transitions WHERE to_state = 'firing'")
        .await;
    assert_eq!(transitions, 1);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Two hours of steady traffic from six services in 5-minute buckets (counts and 2% errors drawn from a seeded
/// generator), then, in the last complete bucket, an error burst on `web`, a port scan from one new source against
/// `ssh` and an address sweep from another (`smb`, a service not seen before). The anomaly detector finds the
/// burst (error ratio) and the port scan (volume of `ssh`) and nothing else (`smb` has no past: it is warming
/// up); the scan and new-talker rules find both scanners, and their incidents resolve once the scanners' events
/// are gone or known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_finds_the_seeded_burst_and_scan_and_stays_quiet_on_steady_traffic() {
    use rand::{Rng, SeedableRng};
    // The last complete bucket must stay the last while the rules run: not within a minute of its end.
    let into = chrono::Utc::now().timestamp().rem_euclid(300);
    if into > 240 {
        tokio::time::sleep(Duration::from_secs((301 - into) as u64)).await;
    }
    let now = chrono::Utc::now().timestamp();
    let last = now.div_euclid(300) * 300 - 300;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut all = Vec::new();
    for b in 0..27 {
        let start = last - (26 - b) * 300;
        for (service, mean) in [
            ("web", 40),
            ("api", 40),
            ("db", 30),
            ("auth", 20),
            ("cache", 60),
            ("ssh", 10),
        ] {
            let n = mean + rng.random_range(-(mean / 5)..=mean / 5);
            for _ in 0..n {
                let burst = b == 26 && service == "web";
                let status = if rng.random::<f64>() < if burst { 0.33 } else { 0.02 } {
                    503
                } else {
                    200
                };
                let ts =
                    chrono::DateTime::from_timestamp(start + rng.random_range(0..300), 0).unwrap();
                all.push(json!({"timestamp": ts.to_rfc3339(), "src_ip": format!("10.1.0.{}", rng.random_range(1..20)),
                                "dst_ip": "10.0.0.9", "dst_port": 443, "service": service, "status": status}));
            }
        }
    }
    for port in 1..=150 {
        let ts = chrono::DateTime::from_timestamp(last + 60 + port / 10, 0).unwrap();
        all.push(
            json!({"timestamp": ts.to_rfc3339(), "src_ip": "203.0.113.50", "dst_ip": "10.0.0.9",
                        "dst_port": 20000 + port, "service": "ssh", "status": 0}),
        );
    }
    for host in 1..=120 {
        let ts = chrono::DateTime::from_timestamp(last + 120 + host / 10, 0).unwrap();
        all.push(json!({"timestamp": ts.to_rfc3339(), "src_ip": "203.0.113.60",
                        "dst_ip": format!("10.2.0.{host}"), "dst_port": 445, "service": "smb", "status": 0}));
    }
    let app = spawn_app_with(|c| c.alert_eval_ms = 300).await;
    for chunk in all.chunks(1000) {
        send(&app, &Value::Array(chunk.to_vec()).to_string()).await;
    }
    app.wait_rows(all.len() as i64).await;
    for rule in [
        json!({"name": "error ratio anomaly", "kind": "anomaly", "query": "error-rate", "params": {"group_by": "service"},
               "op": ">", "value": 5, "min_events": 10, "window_secs": 300, "baseline_buckets": 24}),
        json!({"name": "volume anomaly", "kind": "anomaly", "query": "volume", "params": {"group_by": "service"},
               "op": ">", "value": 5, "window_secs": 300, "baseline_buckets": 24}),
        json!({"name": "port scan", "kind": "scan", "field": "dst_ports", "op": ">=", "value": 100, "window_secs": 900,
               "cooldown_secs": 0}),
        json!({"name": "address sweep", "kind": "scan", "field": "dst_addresses", "op": ">=", "value": 100,
               "window_secs": 900, "cooldown_secs": 0}),
        json!({"name": "new source", "kind": "new_talker", "talker": "src_ip", "op": ">=", "value": 50,
               "window_secs": 900, "history_days": 1, "cooldown_secs": 0}),
    ] {
        let (status, body) = post_rule(&app, rule).await;
        assert_eq!(status, 201, "{body}");
    }
    // Every rule evaluated a few times, then what fired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let open = app.ok_json("/api/alerts/incidents?status=open").await;
    let fired = fired(&open);
    let want: Vec<(String, String)> = [
        ("address sweep", "203.0.113.60"),
        ("error ratio anomaly", "web"),
        ("new source", "203.0.113.50"),
        ("new source", "203.0.113.60"),
        ("port scan", "203.0.113.50"),
        ("volume anomaly", "ssh"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(fired, want, "{open}");
    // The port scan's evidence: the scanner is its own top talker, with its events in the window.
    let scan = open["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["rule_name"] == "port scan")
        .unwrap();
    let scan = app
        .ok_json(&format!("/api/alerts/incidents/{}", scan["id"]))
        .await;
    let evidence = &scan["timeline"][0]["evidence"];
    assert_eq!(
        evidence["top_talkers"][0]["src_ip"], "203.0.113.50",
        "{scan}"
    );
    assert!(
        evidence["top_talkers"][0]["events"].as_i64().unwrap() >= 100,
        "{scan}"
    );
    // No steady service went even pending (the burst and the scan were scored against the same baselines).
    let scored = app
        .count(
            "SELECT count(*) FROM alert_transitions t JOIN alert_rules r ON r.id = t.rule_id
             WHERE r.name LIKE '%anomaly' AND t.group_key NOT IN ('web', 'ssh', 'smb')",
        )
        .await;
    assert_eq!(scored, 0, "no steady service went pending or firing");
    // The scanner's events gone from the window, and the scanner found in the history: both rules resolve.
    app.db
        .batch_execute(
            "DELETE FROM comm_logs WHERE src_ip = '203.0.113.50';
             DELETE FROM comm_rollup_src_port WHERE src_ip = '203.0.113.50';
             DELETE FROM comm_rollup_src_port_delta WHERE src_ip = '203.0.113.50';
             DELETE FROM comm_rollup_pair WHERE src_ip = '203.0.113.60';
             DELETE FROM comm_rollup_pair_delta WHERE src_ip = '203.0.113.60';
             INSERT INTO comm_rollup_src (res, bucket, src_ip, events, bytes_in, bytes_out, errors, client_errors)
             SELECT 3600, date_trunc('hour', now()) - interval '3 hours', ip::inet, 1, 0, 0, 0, 0
             FROM unnest(ARRAY['203.0.113.50', '203.0.113.60']) AS ip",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resolved = app.ok_json("/api/alerts/incidents?status=resolved").await;
        let mut names: Vec<&str> = resolved["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["rule_name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        if names == ["address sweep", "new source", "new source", "port scan"] {
            break;
        }
        assert!(Instant::now() < deadline, "{resolved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.unwrap();
}

/// A daily peak is its own normal for a seasonal anomaly rule, not for one comparing with the buckets just before;
/// a service whose last bucket jumps over its every past day fires under both; one with five past days is still
/// warming up under the seasonal rule (six are needed). Only the buckets the rules read are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seasonal_anomaly_knows_the_daily_peak_and_still_finds_the_spike() {
    let into = chrono::Utc::now().timestamp().rem_euclid(300);
    if into > 240 {
        tokio::time::sleep(Duration::from_secs((301 - into) as u64)).await;
    }
    let last = chrono::Utc::now().timestamp().div_euclid(300) * 300 - 300;
    let mut all = Vec::new();
    let mut bucket = |service: &str, start: i64, n: i64| {
        for i in 0..n {
            let ts = chrono::DateTime::from_timestamp(start + i * 299 / n, 0).unwrap();
            all.push(json!({"timestamp": ts.to_rfc3339(), "src_ip": "10.1.0.1", "service": service, "status": 200}));
        }
    };
    for (service, days, past_day, now) in [
        ("peak", 8, 200, 200),
        ("spike", 8, 20, 200),
        ("young", 5, 20, 200),
    ] {
        for day in 1..=days {
            bucket(service, last - day * 86_400, past_day);
        }
        for back in 1..=24 {
            bucket(service, last - back * 300, 20 + back % 3);
        }
        bucket(service, last, now);
    }
    let app = spawn_app_with(|c| c.alert_eval_ms = 300).await;
    for chunk in all.chunks(1000) {
        send(&app, &Value::Array(chunk.to_vec()).to_string()).await;
    }
    app.wait_rows(all.len() as i64).await;
    for rule in [
        json!({"name": "recent", "kind": "anomaly", "params": {"group_by": "service"}, "op": ">", "value": 5,
               "window_secs": 300}),
        json!({"name": "daily", "kind": "anomaly", "params": {"group_by": "service"}, "op": ">", "value": 5,
               "window_secs": 300, "seasonality": "day", "cooldown_secs": 0}),
    ] {
        let (status, body) = post_rule(&app, rule).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = post_rule(
        &app,
        json!({"name": "x", "kind": "threshold", "op": ">", "value": 1, "seasonality": "week"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("seasonality"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let want: Vec<(String, String)> = [
        ("daily", "spike"),
        ("recent", "peak"),
        ("recent", "spike"),
        ("recent", "young"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    loop {
        let open = app.ok_json("/api/alerts/incidents?status=open").await;
        let got = fired(&open);
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}\n{open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several cycles later, the daily rule still has not fired on the peak or the young service.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = app.ok_json("/api/alerts/incidents?status=open").await;
    assert_eq!(fired(&open), want, "{open}");
    // The evidence says what the score was taken against.
    let spike = open["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["rule_name"] == "daily")
        .unwrap()["id"]
        .clone();
    let detail = app.ok_json(&format!("/api/alerts/incidents/{spike}")).await;
    assert!(
        detail
            .to_string()
            .contains("anomaly score of events per 300 s against the same time of past days > 5"),
        "{detail}"
    );
    // The spike's last bucket back to its usual 20 events (the rollups recomputed from the raw events): the
    // score falls and the incident resolves.
    app.db
        .execute(
            "DELETE FROM comm_logs WHERE service = 'spike' AND ts >= to_timestamp($1::float8)
                 AND ctid NOT IN (SELECT ctid FROM comm_logs WHERE service = 'spike'
                                  AND ts >= to_timestamp($1::float8) LIMIT 20)",
            &[&(last as f64)],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "SELECT comm_rollup_rebuild(date_trunc('hour', to_timestamp($1::float8)),
                                        date_trunc('hour', to_timestamp($1::float8)) + interval '1 hour')",
            &[&(last as f64)],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resolved = app.ok_json("/api/alerts/incidents?status=resolved").await;
        if fired(&resolved) == [("daily".to_string(), "spike".to_string())] {
            break;
        }
        assert!(Instant::now() < deadline, "{resolved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.unwrap();
}

/// On a collector with no history yet, every source would be new: a new-talker rule waits (its warm-up) and
/// fires nothing; the same traffic after an hour of history fires for the source not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_talker_rule_waits_for_history() {
    let app = spawn_app_with(|c| c.alert_eval_ms = 200).await;
    let now = chrono::Utc::now();
    let at = |secs_ago: i64, src: &str| {
        json!({"timestamp": (now - chrono::Duration::seconds(secs_ago)).to_rfc3339(), "src_ip": src,
               "service": "web", "status": 200})
    };
    let fresh: Vec<Value> = (0..40)
        .map(|i| at(i, &format!("10.4.0.{}", i % 4)))
        .collect();
    send(&app, &Value::Array(fresh).to_string()).await;
    app.wait_rows(40).await;
    let (status, body) = post_rule(
        &app,
        json!({"name": "new", "kind": "new_talker", "op": ">=", "value": 5, "window_secs": 300,
               "history_days": 1, "cooldown_secs": 0}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = app.ok_json("/api/alerts/incidents?status=open").await;
    assert!(fired(&open).is_empty(), "no history, nothing new: {open}");
    // History two hours back holding the first three sources.
    let history: Vec<Value> = (0..30)
        .map(|i| at(7200 + i, &format!("10.4.0.{}", i % 3)))
        .collect();
    send(&app, &Value::Array(history).to_string()).await;
    app.wait_rows(70).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = app.ok_json("/api/alerts/incidents?status=open").await;
        let got = fired(&open);
        if !got.is_empty() {
            assert_eq!(got, [("new".to_string(), "10.4.0.3".to_string())], "{open}");
            break;
        }
        assert!(Instant::now() < deadline, "{open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await.unwrap();
}

/// A collector killed (SIGKILL) while its notification is in flight records nothing of that attempt: the next
/// collector sends it, under the same id, and the receiver accepts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_mid_delivery_leaves_the_notification_to_the_next() {
    use crate::support::app::{KEY, PRODUCER};
    use crate::support::binary;
    let hook = receiver_with(0, true).await;
    let db_url = pg::fresh_database().await;
    let env = vec![
        ("DATABASE_URL", db_url.clone()),
        ("COLLECTOR_API_KEYS", format!("{PRODUCER}:{KEY}")),
        ("COLLECTOR_ALERT_EVAL_MS", "200".to_string()),
    ];
    let (mut a, url_a) = binary::serve(&env, &[]).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url_a}/api/alerts/rules"))
        .header("x-api-key", KEY)
        .json(&json!({"name": "any traffic", "kind": "threshold", "query": "volume", "op": ">=", "value": 1,
                      "window_secs": 300, "webhook": {"url": hook.url, "secret": SECRET}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{url_a}/ingest"))
        .header("x-api-key", KEY)
        .body(events("web", "h1", &[200; 3], None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The notification reaches the receiver, which holds it; the collector dies meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.got().is_empty() {
        assert!(Instant::now() < deadline, "no delivery attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill().unwrap();
    let _ = tokio::task::spawn_blocking(move || a.wait()).await;
    let (b, _) = binary::serve(&env, &[]).await;
    let got = hook.wait_accepted(1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_later = hook.got();
    assert_eq!(
        got_later.len(),
        got.len(),
        "nothing more sent: {got_later:#?}"
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].delivery, got[1].delivery, "the same id");
    assert!(got[1].accepted && got[1].signed);
    let db = pg::connect(&db_url).await;
    let row = db
        .query_one(
            "SELECT count(*), min(attempts), bool_and(delivered_at IS NOT NULL) FROM alert_outbox",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        (1, 1, true),
        "one notification, its killed attempt unrecorded"
    );
    binary::terminate(b).await;
}
