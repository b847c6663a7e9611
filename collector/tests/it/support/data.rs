//! The known data set the read-side tests load: deterministic events over two hours ending at [`END`].

use super::TestApp;

/// Events loaded by [`load`].
pub const EVENTS: usize = 1202;
pub const END: &str = "2026-11-22T12:00:00Z";

/// Loads the data set and waits until every event is committed. Each event has a unique `message`; sources are
/// IPv4 in two /16s and IPv6; statuses, services, ports, bytes and latencies vary; two events sit exactly on
/// and just before a 5-minute boundary.
pub async fn load(app: &TestApp) {
    let end = chrono::DateTime::parse_from_rfc3339(END)
        .unwrap()
        .timestamp();
    let mut events = Vec::new();
    for i in 0..EVENTS - 2 {
        let src = match i % 3 {
            0 => format!("10.0.{}.{}", i % 7, i % 250),
            1 => format!("10.1.{}.{}", i % 5, i % 200),
            _ => format!("2001:db8::{:x}", i % 97),
        };
        let status = [200, 200, 404, 503, 500, 301][i % 6];
        let service = ["web", "api", "dns"][i % 3];
        // 6 seconds apart over two hours; every four events share a timestamp.
        let ts = end - 7200 + (i as i64 / 4 * 4) * 6 + 1;
        let bytes = if i % 10 == 0 {
            String::new()
        } else {
            format!(r#","bytes_in":{},"bytes_out":{}"#, i * 3, i * 7 % 1000)
        };
        let latency = if i % 13 == 0 {
            String::new()
        } else {
            format!(r#","latency_ms":{}"#, ((i * 37) % 500) as f64 * 0.75)
        };
        events.push(format!(
            r#"{{"timestamp":{ts},"src_ip":"{src}","dst_ip":"192.0.2.{}","dst_port":{},"status":{status},"service":"{service}"{bytes}{latency},"message":"e{i}"}}"#,
            i % 11,
            [443, 80, 53, 22][i % 4],
        ));
    }
    events.push(r#"{"timestamp":"2026-11-22T10:05:00Z","src_ip":"10.0.0.1","service":"web","status":500,"bytes_in":1,"latency_ms":1,"message":"on-boundary"}"#.into());
    events.push(r#"{"timestamp":"2026-11-22T10:04:59.999999Z","src_ip":"10.0.0.1","service":"web","status":200,"bytes_in":1,"latency_ms":1,"message":"before-boundary"}"#.into());
    for chunk in events.chunks(400) {
        let (status, receipt) = app.ingest_json(&format!("[{}]", chunk.join(","))).await;
        assert_eq!(
            (status, receipt["rejected"].as_u64()),
            (202, Some(0)),
            "{receipt}"
        );
    }
    assert_eq!(app.wait_rows(EVENTS as i64).await, EVENTS as i64);
}
