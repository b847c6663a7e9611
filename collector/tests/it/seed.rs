//! `collector seed`, the real binary, against a collector: what the collector reports equals what the generator
//! says it sent.

use serde_json::Value;

use crate::support::{app::KEY, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_traffic_is_reported_exactly_as_the_generator_expects() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let expect_path = dir.path().join("expect.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "seed",
            "--url",
            &app.url,
            "--api-key",
            KEY,
            "--count",
            "6000",
            "--batch-size",
            "500",
        ])
        .args([
            "--seed",
            "42",
            "--bad-ratio",
            "0.01",
            "--start",
            "-50m",
            "--spread",
            "1800",
            "--expect",
        ])
        .arg("--expect-json")
        .arg(&expect_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap()).unwrap();
    let valid = expected["valid_events"].as_i64().unwrap();
    let malformed = expected["malformed_events"].as_i64().unwrap();
    assert_eq!(valid + malformed, 6000);
    assert!(
        printed.contains(&format!(
            "{valid} acknowledged, {malformed} rejected, 0 retries"
        )),
        "{printed}"
    );
    assert!(printed.contains("Top talkers by events:"), "{printed}");

    assert_eq!(app.wait_rows(valid).await, valid);
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", malformed)
            .await,
        malformed
    );
    let get = |path: String| {
        let http = app.http.clone();
        async move {
            http.get(path)
                .header("x-api-key", KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let top = get(format!(
        "{}/metrics/top-talkers?by=src_ip&limit=10&from=-2h",
        app.url
    ))
    .await;
    let got: Vec<(String, i64)> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["src_ip"].as_str().unwrap().to_string(),
                t["events"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = expected["top_talkers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_i64().unwrap()))
        .collect();
    assert_eq!(got, want);
    let rate = get(format!("{}/metrics/error-rate?from=-2h", app.url)).await;
    assert_eq!(rate["overall"]["total"].as_i64().unwrap(), valid);
    assert_eq!(rate["overall"]["errors"], expected["errors"]);
    app.stop().await.unwrap();
}
