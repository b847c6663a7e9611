//! The dashboard in a real headless Chromium: the numbers it shows are the API's, a CIDR filter narrows the
//! tables, a new event arrives in the live tail, a wrong key is told, the page fits a phone, and nothing is
//! logged as an error. A screenshot of the overview is kept in the test's temporary directory.

use serde_json::{json, Value};

use crate::support::app::KEY;
use crate::support::browser::Browser;
use crate::support::spawn_app;

fn traffic() -> String {
    let mut events = Vec::new();
    for i in 0..50 {
        events.push(json!({"src_ip": "10.0.0.1", "dst_ip": "10.9.0.1", "dst_port": 443, "protocol": "tcp",
            "service": "web", "status": 200, "latency_ms": 10 + i, "bytes_in": 100, "bytes_out": 1000}));
    }
    for i in 0..30 {
        let status = if i < 10 { 500 } else { 200 };
        events.push(
            json!({"src_ip": "10.0.0.2", "dst_ip": "10.9.0.2", "dst_port": 5432, "protocol": "tcp",
            "service": "db", "status": status, "latency_ms": 3, "bytes_in": 50, "bytes_out": 50}),
        );
    }
    for _ in 0..20 {
        events.push(json!({"src_ip": "192.168.1.5", "dst_ip": "10.9.0.1", "dst_port": 443, "protocol": "tcp",
            "service": "web", "status": 404, "latency_ms": 7, "message": "not found"}));
    }
    serde_json::to_string(&events).unwrap()
}

#[tokio::test]
async fn the_dashboard_shows_what_the_api_answers() {
    let app = spawn_app().await;
    assert_eq!(app.ingest_json(&traffic()).await.0, 202);
    app.wait_rows(100).await;
    // The rollups are compacted within a second or two.
    let mut api: Value = Value::Null;
    for _ in 0..100 {
        api = app.ok_json("/metrics/volume?from=-1h").await;
        if api["total"]["events"] == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(api["total"]["events"], 100);
    let errors = app.ok_json("/metrics/error-rate?from=-1h").await;
    let top = app
        .ok_json("/metrics/top-talkers?from=-1h&by=src_ip&limit=10")
        .await;

    let mut b = Browser::start(1280, 900).await;
    // A wrong key first: the page says it was refused.
    b.goto(&format!("{}/#key=not-a-key-at-all", app.url)).await;
    let message = b
        .wait_for(
            "document.getElementById('key-dialog').open && document.getElementById('key-message').textContent",
            30,
        )
        .await;
    assert!(message.as_str().unwrap().contains("refused"), "{message}");

    // The right key, given the same way (the page stores it for the tab and takes it off the address).
    b.goto(&format!("{}/?range=1h#key={KEY}", app.url)).await;
    b.wait_for("Number(document.body.dataset.refreshes) >= 1", 30)
        .await;
    assert_eq!(b.eval("location.hash").await, "");
    let shown = b
        .eval("document.getElementById('total-events').dataset.value")
        .await;
    assert_eq!(shown, api["total"]["events"].to_string());
    let rate: f64 = b
        .eval("document.getElementById('error-rate').dataset.value")
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((rate - errors["overall"]["error_ratio"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(
        b.eval("document.getElementById('error-rate').textContent")
            .await,
        "10.00%"
    );
    let rows = b
        .eval("[...document.querySelectorAll('#top-table tbody tr')].map(r => r.dataset.key)")
        .await;
    let expected: Vec<Value> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["src_ip"].clone())
        .collect();
    assert_eq!(rows, Value::Array(expected));
    assert_eq!(rows[0], "10.0.0.1");
    // The explorer lists the raw events, newest first.
    let listed = b
        .eval("document.querySelectorAll('#logs-table tbody tr').length")
        .await;
    assert_eq!(listed, 50);

    // The live tail follows; a new event arrives.
    b.wait_for(
        "document.getElementById('tail-state').textContent.includes('following')",
        30,
    )
    .await;
    let (s, _) = app
        .ingest_json(r#"[{"src_ip":"10.0.0.3","service":"web","message":"tail-probe-7731"}]"#)
        .await;
    assert_eq!(s, 202);
    b.wait_for(
        "document.getElementById('tail-list').textContent.includes('tail-probe-7731')",
        30,
    )
    .await;

    let png = b.screenshot().await;
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    std::fs::write(&artifact, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    println!("screenshot: {}", artifact.display());

    // A CIDR filter: typed into the form and applied; every panel narrows, and the address keeps it.
    let before = b.eval("document.body.dataset.refreshes").await;
    b.eval(
        "document.getElementById('f-src').value = '192.168.0.0/16'; \
         document.getElementById('apply').click(); true",
    )
    .await;
    b.wait_for(&format!("document.body.dataset.refreshes !== {before}"), 30)
        .await;
    b.wait_for(
        "document.getElementById('total-events').dataset.value === '20'",
        30,
    )
    .await;
    let rows = b
        .eval("[...document.querySelectorAll('#top-table tbody tr')].map(r => r.dataset.key)")
        .await;
    assert_eq!(rows, json!(["192.168.1.5"]));
    assert!(b
        .eval("location.search")
        .await
        .as_str()
        .unwrap()
        .contains("src=192.168.0.0%2F16"));
    // 4xx apart: all of this source's events are 404s.
    assert_eq!(
        b.eval("document.getElementById('client-error-rate').textContent")
            .await,
        "100.00%"
    );

    // Phone width: nothing wider than the screen.
    b.set_width(390, 800).await;
    b.wait_for("document.documentElement.clientWidth === 390", 10)
        .await;
    let wide = b.eval("document.documentElement.scrollWidth").await;
    assert!(
        wide.as_u64().unwrap() <= 390,
        "page is {wide} px wide at 390"
    );

    let errors: Vec<&String> = b
        .errors
        .iter()
        // The wrong key's refusal is a failed load Chromium logs; it is the case under test.
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    drop(b);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_browser_gets_the_page_and_an_elasticsearch_client_the_handshake() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(format!("{}/", app.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/ui/app.js\"></script>"));
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let r = app
            .http
            .get(format!("{}{asset}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
    // No key, no HTML: the Elasticsearch handshake, which needs an ingest key.
    let es = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(es.status(), 401);
    let (status, info) = app.get_json("/").await;
    assert_eq!(status, 200);
    assert_eq!(info["tagline"], "You Know, for Search");
    app.stop().await.unwrap();
}
