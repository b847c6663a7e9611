//! `collector import` (the real binary) into a running collector: Zeek's tab-separated log, Suricata's EVE JSON
//! and NDJSON, and a file that grew imported again from where the last import stopped.

use std::process::Command;

use crate::support::app::KEY;
use crate::support::spawn_app;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/sources/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn import(url: &str, state: &std::path::Path, files: &[&std::path::Path]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("import")
        .args([
            "--url",
            url,
            "--api-key",
            KEY,
            "--batch-size",
            "2",
            "--state-file",
        ])
        .arg(state)
        .args(files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_backfills_files_and_resumes_where_it_stopped() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("positions.json");
    let zeek = std::path::PathBuf::from(fixture("zeek-conn.log"));
    let eve = std::path::PathBuf::from(fixture("suricata-eve.json"));
    let growing = dir.path().join("app.ndjson");
    std::fs::write(&growing, "{\"service\":\"grow\",\"message\":\"g1\"}\n{\"service\":\"grow\",\"message\":\"g2\"}\n{\"service\":\"grow\",\"message\":\"g3\"}\n").unwrap();
    let (url, zeek2, eve2, growing2, state2) = (
        app.url.clone(),
        zeek.clone(),
        eve.clone(),
        growing.clone(),
        state.clone(),
    );
    let out =
        tokio::task::spawn_blocking(move || import(&url, &state2, &[&zeek2, &eve2, &growing2]))
            .await
            .unwrap();
    assert!(out.contains("Imported 10 lines"), "{out}");
    assert!(out.contains("10 events accepted, 0 rejected"), "{out}");
    assert_eq!(app.wait_rows(10).await, 10);
    // The Zeek tab-separated lines, typed and mapped as their JSON form is.
    let zeek_rows: Vec<String> = app.texts("SELECT concat_ws('|', host(src_ip), src_port, host(dst_ip), dst_port, protocol, service, latency_ms,
                              bytes_in, bytes_out, tags->>'conn_state', tags->>'local_orig')
             FROM comm_logs WHERE tags ? 'uid' ORDER BY ts").await;
    assert_eq!(
        zeek_rows,
        [
            "10.20.0.15|51744|198.51.100.7|443|tcp|ssl|1532.417|1824|48213|SF|true",
            "10.20.0.31|36015|10.20.0.2|53|udp|dns|0.412|44|60|SF|true",
            "203.0.113.50|40112|10.20.0.15|22|tcp|S0|false",
        ]
    );

    // The file grows; the next import sends only the new lines (the harness stores resent bytes twice, so
    // a resend would show).
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&growing)
        .unwrap();
    f.write_all(b"{\"service\":\"grow\",\"message\":\"g4\"}\n")
        .unwrap();
    drop(f);
    let (url, growing2, state2, zeek2) = (
        app.url.clone(),
        growing.clone(),
        state.clone(),
        zeek.clone(),
    );
    let out = tokio::task::spawn_blocking(move || import(&url, &state2, &[&zeek2, &growing2]))
        .await
        .unwrap();
    assert!(out.contains("already imported"), "{out}");
    assert!(out.contains("resuming at byte"), "{out}");
    assert!(out.contains("Imported 1 lines"), "{out}");
    assert_eq!(app.wait_rows(11).await, 11);
    assert_eq!(
        app.count("SELECT count(*) FROM comm_logs WHERE service = 'grow'")
            .await,
        4
    );
    app.stop().await.unwrap();
}
