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
