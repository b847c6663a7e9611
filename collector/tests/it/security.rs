//! Keys with scopes and tenants: every route checked against every kind of key, tenants reading only their
//! own producers, the admin API and `collector keys`, and revocation reaching another collector process.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::{KEY, PRODUCER};
use crate::support::{binary, pg, spawn_app, TestApp};

/// Makes a stored key over the admin API with `admin_key`; returns (id, secret).
async fn make_key(
    app: &TestApp,
    admin_key: &str,
    name: &str,
    scopes: &[&str],
    tenant: Option<&str>,
) -> (String, String) {
    let (status, body) = post(
        app,
        admin_key,
        "/api/keys",
        json!({"name": name, "scopes": scopes, "tenant": tenant}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_string(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}{path}", app.url))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.url))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    Scope(&'static str),
}

#[tokio::test]
async fn every_route_admits_exactly_the_scopes_it_needs() {
    let app = spawn_app().await;
    let (_, ingest_key) = make_key(&app, KEY, "scoped-ingest", &["ingest"], None).await;
    let (_, read_key) = make_key(&app, KEY, "scoped-read", &["read"], None).await;
    let (_, admin_key) = make_key(&app, KEY, "scoped-admin", &["admin"], None).await;
    let keys: [(&str, Option<&str>, &[&str]); 6] = [
        ("no key", None, &[]),
        ("a wrong key", Some("not-a-key-at-all"), &[]),
        ("ingest", Some(&ingest_key), &["ingest"]),
        ("read", Some(&read_key), &["read"]),
        ("admin", Some(&admin_key), &["admin"]),
        ("bootstrap", Some(KEY), &["ingest", "read", "admin"]),
    ];
    let event = r#"[{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","service":"web","status":200}]"#;
    let bulk = "{\"index\":{}}\n{\"src_ip\":\"10.0.0.1\",\"service\":\"web\"}\n";
    // (method, path, body, content type, what it needs). Bodies are valid where a route stores something, and
    // the admin routes are asked for what does not exist (404) or is invalid (400), so the table changes
    // nothing whoever is allowed.
    let routes: [(&str, &str, &str, &str, Needs); 33] = [
        (
            "POST",
            "/ingest",
            event,
            "application/json",
            Needs::Scope("ingest"),
        ),
        (
            "POST",
            "/_bulk",
            bulk,
            "application/x-ndjson",
            Needs::Scope("ingest"),
        ),
        (
            "POST",
            "/logs/_bulk",
            bulk,
            "application/x-ndjson",
            Needs::Scope("ingest"),
        ),
        (
            "POST",
            "/v1/logs",
            r#"{"resourceLogs":[]}"#,
            "application/json",
            Needs::Scope("ingest"),
        ),
        ("GET", "/", "", "", Needs::Scope("ingest")),
        ("GET", "/_cluster/health", "", "", Needs::Scope("ingest")),
        ("GET", "/_license", "", "", Needs::Scope("ingest")),
        ("GET", "/_xpack", "", "", Needs::Scope("ingest")),
        (
            "GET",
            "/_index_template/logs",
            "",
            "",
            Needs::Scope("ingest"),
        ),
        ("GET", "/metrics/volume", "", "", Needs::Scope("read")),
        ("GET", "/metrics/error-rate", "", "", Needs::Scope("read")),
        ("GET", "/metrics/latency", "", "", Needs::Scope("read")),
        ("GET", "/metrics/top-talkers", "", "", Needs::Scope("read")),
        ("GET", "/api/logs", "", "", Needs::Scope("read")),
        ("GET", "/api/tail", "", "", Needs::Scope("read")),
        ("GET", "/api/status", "", "", Needs::Scope("read")),
        ("GET", "/api/keys", "", "", Needs::Scope("admin")),
        (
            "POST",
            "/api/keys",
            r#"{"name":"","scopes":["read"]}"#,
            "application/json",
            Needs::Scope("admin"),
        ),
        (
            "POST",
            "/api/keys/nope/revoke",
            "",
            "",
            Needs::Scope("admin"),
        ),
        (
            "POST",
            "/api/keys/nope/rotate",
            "",
            "",
            Needs::Scope("admin"),
        ),
        ("GET", "/api/alerts/rules", "", "", Needs::Scope("read")),
        (
            "POST",
            "/api/alerts/rules",
            "{}",
            "application/json",
            Needs::Scope("admin"),
        ),
        (
            "GET",
            "/api/alerts/rules/nope",
            "",
            "",
            Needs::Scope("read"),
        ),
        (
            "PUT",
            "/api/alerts/rules/nope",
            "{}",
            "application/json",
            Needs::Scope("admin"),
        ),
        (
            "DELETE",
            "/api/alerts/rules/nope",
            "",
            "",
            Needs::Scope("admin"),
        ),
        ("GET", "/api/alerts/incidents", "", "", Needs::Scope("read")),
        (
            "GET",
            "/api/alerts/incidents/nope",
            "",
            "",
            Needs::Scope("read"),
        ),
        (
            "POST",
            "/api/alerts/incidents/nope/acknowledge",
            "",
            "",
            Needs::Scope("admin"),
        ),
        ("GET", "/metrics", "", "", Needs::Nothing),
        ("GET", "/healthz", "", "", Needs::Nothing),
        ("GET", "/readyz", "", "", Needs::Nothing),
        ("GET", "/openapi.json", "", "", Needs::Nothing),
        ("GET", "/docs", "", "", Needs::Nothing),
    ];
    // Every documented path is in the table: a new route cannot skip it.
    let (_, spec) = get(&app, KEY, "/openapi.json").await;
    for path in spec["paths"].as_object().unwrap().keys() {
        let concrete = path
            .replace("{id}", "nope")
            .replace("{index}", "logs")
            .replace("{action}", "acknowledge");
        assert!(
            routes.iter().any(|r| r.1 == concrete),
            "{path} is routed but not in this table"
        );
    }
    let mut failures = Vec::new();
    for (method, path, body, content_type, needs) in routes {
        for (who, key, scopes) in &keys {
            let mut req = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.url));
            if let Some(k) = key {
                req = req.header("x-api-key", *k);
            }
            if !content_type.is_empty() {
                req = req.header("content-type", content_type);
            }
            let status = req
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let expected_ok = match needs {
                Needs::Nothing => true,
                Needs::Scope(s) => scopes.contains(&s),
            };
            let ok = match (needs, key, expected_ok) {
                (Needs::Nothing, _, _) => status != 401 && status != 403,
                (_, None, _) => status == 401,
                (_, Some(_), true) => status != 401 && status != 403 && status < 500,
                (_, Some(_), false) if scopes.is_empty() => status == 401,
                (_, Some(_), false) => status == 403,
            };
            if !ok {
                failures.push(format!("{method} {path} with {who}: {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The 403 says what was missing.
    let (status, body) = get(&app, &ingest_key, "/api/logs").await;
    assert_eq!(status, 403);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("scoped-ingest") && detail.contains("needs the read scope"),
        "{detail}"
    );
}

/// Events from `key`'s producer: `n` of them.
async fn send(app: &TestApp, key: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"src_ip": format!("10.9.0.{}", i + 1), "dst_ip": "10.0.0.2", "service": "web", "status": 200}))
        .collect();
    let r = app
        .http
        .post(format!("{}/ingest", app.url))
        .header("x-api-key", key)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// Every event `key` can read: (producer, count) from /api/logs, and the volume total.
async fn visible(app: &TestApp, key: &str, extra: &str) -> (Vec<String>, i64) {
    let (status, logs) = get(app, key, &format!("/api/logs?limit=1000{extra}")).await;
    assert_eq!(status, 200, "{logs}");
    let mut producers: Vec<String> = logs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["producer"].as_str().unwrap().to_string())
        .collect();
    producers.sort();
    let (status, volume) = get(app, key, &format!("/metrics/volume?from=-1h{extra}")).await;
    assert_eq!(status, 200, "{volume}");
    (producers, volume["total"]["events"].as_i64().unwrap())
}

#[tokio::test]
async fn a_tenants_keys_read_only_that_tenants_producers() {
    let app = spawn_app().await;
    let (_, acme_edge) = make_key(&app, KEY, "acme-edge", &["ingest"], Some("acme")).await;
    let (_, beta_edge) = make_key(&app, KEY, "beta-edge", &["ingest"], Some("beta")).await;
    let (_, acme_reader) = make_key(&app, KEY, "acme-reader", &["read"], Some("acme")).await;
    let (_, acme_admin) = make_key(&app, KEY, "acme-admin", &["admin"], Some("acme")).await;
    send(&app, &acme_edge, 3).await;
    send(&app, &beta_edge, 5).await;
    send(&app, KEY, 7).await;
    app.wait_rows(15).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the rollups' compaction

    let (producers, total) = visible(&app, &acme_reader, "").await;
    assert_eq!(producers, vec!["acme-edge"; 3]);
    assert_eq!(total, 3);
    // Naming another tenant's producer finds nothing, in raw events and in rollups alike.
    assert_eq!(
        visible(&app, &acme_reader, "&producer=beta-edge").await,
        (vec![], 0)
    );
    let (producers, total) = visible(&app, KEY, "").await;
    assert_eq!((producers.len(), total), (15, 15));
    // Top talkers and their shares: of the tenant's own total.
    let (status, top) = get(
        &app,
        &acme_reader,
        "/metrics/top-talkers?by=src_ip&from=-1h",
    )
    .await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["total_events"], 3, "{top}");
    let talkers = top["top"].as_array().unwrap();
    assert_eq!(talkers.len(), 3, "{top}");
    let shares: f64 = talkers.iter().map(|t| t["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{top}");
    // The collector's own metrics name no producer for a tenant's key.
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .header("x-api-key", &acme_reader)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("producer=\""), "{text}");

    // A tenant's admin manages its tenant's keys only.
    let (_, listed) = get(&app, &acme_admin, "/api/keys").await;
    let mut names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["acme-admin", "acme-edge", "acme-reader"]);
    let (status, body) = post(
        &app,
        &acme_admin,
        "/api/keys",
        json!({"name": "x", "scopes": ["read"], "tenant": "beta"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // Without a tenant, its own is given.
    let (status, body) = post(
        &app,
        &acme_admin,
        "/api/keys",
        json!({"name": "acme-2", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(
        (status, body["tenant"].as_str()),
        (201, Some("acme")),
        "{body}"
    );
    let beta_id = app
        .db
        .query_one("SELECT id FROM api_keys WHERE name = 'beta-edge'", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    let (status, _) = post(
        &app,
        &acme_admin,
        &format!("/api/keys/{beta_id}/revoke"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    // A producer's events belong to one tenant: its name cannot be taken by another.
    let (status, body) = post(
        &app,
        KEY,
        "/api/keys",
        json!({"name": "acme-edge", "scopes": ["ingest"], "tenant": "beta"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("tenant \"acme\""),
        "{body}"
    );
    // Precise 400s.
    let (status, body) = post(
        &app,
        KEY,
        "/api/keys",
        json!({"name": "a", "scopes": ["write"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("scopes: \"write\" is not a scope"),
        "{body}"
    );
    let (status, body) = post(
        &app,
        KEY,
        "/api/keys",
        json!({"name": "a", "scopes": ["read"], "admin": true}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `admin`"),
        "{body}"
    );
    // Only digests are stored.
    let stored: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM api_keys WHERE position($1::bytea IN secret_sha256) > 0",
            &[&acme_edge.as_bytes()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
    app.stop().await.unwrap();
}

/// Waits until `key` is answered `want` at `url`/api/logs, polling; false if it never is within a minute.
async fn until_status(http: &reqwest::Client, url: &str, key: &str, want: u16) -> bool {
    for _ in 0..600 {
        let s = http
            .get(format!("{url}/api/logs?limit=1"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if s == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn keys_made_and_revoked_anywhere_apply_on_every_collector() {
    let db_url = pg::fresh_database().await;
    let env = |refresh: &str| {
        vec![
            ("DATABASE_URL", db_url.clone()),
            ("COLLECTOR_API_KEYS", format!("{PRODUCER}:{KEY}")),
            ("COLLECTOR_KEY_REFRESH_MS", refresh.to_string()),
        ]
    };
    let (a, url_a) = binary::serve(&env("500"), &[]).await;
    let (b, url_b) = binary::serve(&env("500"), &[]).await;
    let http = reqwest::Client::new();

    // Made with the command line, straight in the database.
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "keys",
            "create",
            "--name",
            "ops",
            "--scopes",
            "read,ingest",
            "--json",
        ])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    );
    assert!(
        until_status(&http, &url_a, &secret, 200).await,
        "A never accepted the new key"
    );
    assert!(
        until_status(&http, &url_b, &secret, 200).await,
        "B never accepted the new key"
    );

    // Revoked through A's API: B stops accepting it at its next refresh.
    let r = http
        .post(format!("{url_a}/api/keys/{id}/revoke"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        until_status(&http, &url_b, &secret, 401).await,
        "B still accepts a revoked key"
    );
    assert!(until_status(&http, &url_a, &secret, 401).await);

    // Rotation with a grace period: both secrets work, then only the new one.
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["keys", "create", "--name", "edge", "--json"])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    let old: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "keys",
            "rotate",
            old["id"].as_str().unwrap(),
            "--grace",
            "3s",
            "--json",
        ])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(new["replaces"], old["id"]);
    assert_eq!(new["scopes"], json!(["ingest"]));
    let ingest = |key: String| {
        let http = http.clone();
        let url = url_b.clone();
        async move {
            http.post(format!("{url}/ingest"))
                .header("x-api-key", key)
                .body(r#"{"src_ip":"10.0.0.1","service":"web"}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let new_secret = new["secret"].as_str().unwrap().to_string();
    let old_secret = old["secret"].as_str().unwrap().to_string();
    let mut both = false;
    for _ in 0..100 {
        if ingest(new_secret.clone()).await == 202 {
            both = ingest(old_secret.clone()).await == 202;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(both, "the old key stopped before its grace period ended");
    let mut old_refused = false;
    for _ in 0..300 {
        if ingest(old_secret.clone()).await == 401 {
            old_refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(old_refused, "the old key outlived its grace period");
    assert_eq!(ingest(new_secret.clone()).await, 202);

    // The list shows each key's last use (recorded by B's refresh) and never a secret.
    terminate_both(a, b).await;
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["keys", "list"])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("slk_"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(new["id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split("  ").filter(|c| !c.trim().is_empty()).collect();
    // ID, NAME, TENANT, SCOPES, CREATED, LAST USED, REVOKED
    assert_eq!(cells[1].trim(), "edge", "{row}");
    assert_ne!(cells[5].trim(), "-", "no last use recorded: {row}");
    assert_eq!(cells[6].trim(), "-", "{row}");
}

async fn terminate_both(a: std::process::Child, b: std::process::Child) {
    binary::terminate(a).await;
    binary::terminate(b).await;
}
