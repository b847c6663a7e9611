//! The real `collector serve` binary as a child process, for what only a process shows (exit codes, signals,
//! its own memory, its private PostgreSQL).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `collector serve` with `env` set and `unset` removed, on a free port; returns once /readyz answers
/// 200, with the child and its URL.
pub async fn serve(env: &[(&str, String)], unset: &[&str]) -> (Child, String) {
    serve_on(free_port(), env, unset).await
}

/// A port free now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// [`serve`] on `port` (a restarted collector keeps its address).
pub async fn serve_on(port: u16, env: &[(&str, String)], unset: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_collector"));
    cmd.arg("serve")
        .env("COLLECTOR_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for name in unset {
        cmd.env_remove(name);
    }
    // Each collector its own spool (a spool directory has one owner), unless the test places it.
    let placed = env
        .iter()
        .any(|(n, _)| *n == "COLLECTOR_SPOOL_DIR" || *n == "COLLECTOR_DATA_DIR");
    if !placed {
        let dir = std::env::temp_dir().join(format!("collector-spool-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        cmd.env("COLLECTOR_SPOOL_DIR", dir);
    }
    // Small segments: the 64 MiB each one is zero-filled to is disk the tests do not need.
    if !env
        .iter()
        .any(|(n, _)| *n == "COLLECTOR_SPOOL_SEGMENT_BYTES")
    {
        cmd.env("COLLECTOR_SPOOL_SEGMENT_BYTES", (1 << 20).to_string());
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let child = cmd.spawn().unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..600 {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "collector did not become ready");
    (child, url)
}

/// SIGTERM to a `collector serve` child, and its exit, asserted clean (status 0).
pub async fn terminate(mut child: Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
