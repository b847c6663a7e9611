//! `GET /api/tail` on its own: filters, a follower that does not read (ingest goes on, what it missed is
//! counted and told), disconnects, and the limit on open tails.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::app::KEY;
use crate::support::spawn_app_with;

/// Reads server-sent events from `resp` until `done` says so (given every (event, data) so far), or panics
/// after a minute.
async fn read_events(
    resp: reqwest::Response,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut resp = resp;
    let mut buf = String::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&got) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("the tail sent nothing more")
            .unwrap()
            .expect("the tail ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = (String::new(), String::new());
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !event.is_empty() {
                got.push((event, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
        }
    }
    got
}

fn events(got: &[(String, Value)]) -> Vec<Value> {
    got.iter()
        .filter(|(e, _)| e == "events")
        .flat_map(|(_, d)| d.as_array().unwrap().clone())
        .collect()
}

async fn status(app: &crate::support::TestApp) -> Value {
    app.get_json("/api/status").await.1
}

#[tokio::test]
async fn the_tail_sends_committed_events_that_pass_its_filters() {
    let app = spawn_app_with(|_| {}).await;
    let resp = app
        .http
        .get(format!(
            "{}/api/tail?service=web&src=10.1.0.0/16&status_class=5",
            app.url
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = json!([
        {"src_ip": "10.1.2.3", "service": "web", "status": 503, "message": "kept"},
        {"src_ip": "10.2.2.3", "service": "web", "status": 503, "message": "other network"},
        {"src_ip": "10.1.2.4", "service": "dns", "status": 503, "message": "other service"},
        {"src_ip": "10.1.2.5", "service": "web", "status": 200, "message": "not an error"},
        {"src_ip": "10.1.9.9", "service": "web", "status": 500, "message": "kept too", "tags": {"k": "v"}}
    ]);
    let (s, _) = app.ingest_json(&body.to_string()).await;
    assert_eq!(s, 202);
    let got = read_events(resp, |g| events(g).len() >= 2).await;
    assert_eq!(got[0].0, "open");
    let kept = events(&got);
    let messages: Vec<&str> = kept
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["kept", "kept too"]);
    assert_eq!(kept[1]["tags"], json!({"k": "v"}));
    assert_eq!(kept[0]["producer"], "producer-a");
    // Committed: the rows are there.
    assert_eq!(app.wait_rows(5).await, 5);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_follower_that_does_not_read_never_slows_ingest_and_is_told_what_it_missed() {
    let app = spawn_app_with(|c| c.max_tails = 2).await;
    // A client that asks for the tail and then reads nothing.
    let host = app.url.trim_start_matches("http://").to_string();
    let mut stuck = tokio::net::TcpStream::connect(&host).await.unwrap();
    stuck
        .write_all(
            format!("GET /api/tail HTTP/1.1\r\nHost: {host}\r\nX-API-KEY: {KEY}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // Its place is taken once the request is in.
    for _ in 0..100 {
        if status(&app).await["tails"]["open"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(&app).await["tails"]["open"], 1);
    // Far more than its queue and the socket's buffers hold: 200 batches of 500 events with long messages.
    let message = "x".repeat(400);
    let batch: Vec<Value> = (0..500)
        .map(|i| json!({"src_ip": format!("10.0.{}.{}", i / 250, i % 250), "service": "web", "message": message}))
        .collect();
    let body = serde_json::to_string(&batch).unwrap();
    for _ in 0..200 {
        assert_eq!(app.ingest_json(&body).await.0, 202);
    }
    assert_eq!(app.wait_rows(100_000).await, 100_000, "ingest went on");

    // A second follower works meanwhile; a third is refused (COLLECTOR_MAX_TAILS=2).
    let second = app
        .http
        .get(format!("{}/api/tail", app.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let third = app
        .http
        .get(format!("{}/api/tail", app.url))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    drop(third);

    // The stuck client reads at last: after what was queued for it, it is told how many events it missed.
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut missed = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // One more batch makes the tail move on to the next message after the queued ones.
    let mut nudged = false;
    while missed.is_none() {
        let n = match tokio::time::timeout(Duration::from_millis(500), stuck.read(&mut chunk)).await
        {
            Ok(r) => r.unwrap(),
            Err(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never told what it missed"
                );
                if !nudged {
                    assert_eq!(app.ingest_json(r#"[{"service":"web"}]"#).await.0, 202);
                    nudged = true;
                }
                continue;
            }
        };
        assert!(n > 0, "the tail closed");
        text.extend_from_slice(&chunk[..n]);
        let s = String::from_utf8_lossy(&text);
        if let Some(at) = s.find("event: missed\ndata: ") {
            let rest = &s[at + "event: missed\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                let v: Value = serde_json::from_str(&rest[..end]).unwrap();
                missed = v["events"].as_u64();
            }
        }
    }
    let missed = missed.unwrap();
    assert!(missed > 0 && missed < 100_000, "missed {missed}");

    // Leaving frees the place (noticed at the next write to the closed connection: a batch, or the 15 s
    // keep-alive).
    drop(stuck);
    drop(second);
    let mut open = Value::Null;
    for _ in 0..200 {
        open = status(&app).await["tails"]["open"].clone();
        if open == 0 {
            break;
        }
        assert_eq!(app.ingest_json(r#"[{"service":"web"}]"#).await.0, 202);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0, "disconnected followers were not removed");
    app.stop().await.unwrap();
}
