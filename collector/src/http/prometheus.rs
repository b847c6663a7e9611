//! `GET /metrics`: the collector's own counters in the Prometheus text format.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::pipeline::spool::SpoolStatus;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// The collector's own counters, Prometheus text format (no key needed; with a read key of no tenant, events
/// are counted per producer).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    // Anyone who reaches the port may scrape; producer names are shown only to a key that may read every
    // producer's events.
    let by_producer = state
        .keys
        .authenticate(&headers)
        .is_some_and(|p| p.scopes.contains(crate::auth::Scope::Read) && p.tenant.is_none());
    let mut body = state
        .stats
        .render_prometheus((state.queue.depth(), state.queue.capacity()), by_producer);
    if let Some(geo) = &state.geo {
        render_geo(&mut body, geo);
    }
    if let Some(threats) = &state.intake.threats {
        render_threats(&mut body, threats);
    }
    if let Some(redactor) = &state.intake.redactor {
        render_redactions(&mut body, redactor);
    }
    state.alerts.render(&mut body);
    crate::pipeline::cost::render(&mut body);
    if let Some(spool) = &state.spool {
        render_spool(&mut body, &spool.status());
        spool.render_sync_histogram(&mut body);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Each GeoIP database's build time (0 while it is not loaded).
fn render_geo(out: &mut String, geo: &crate::enrich::Geo) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP collector_geoip_build_timestamp_seconds When each GeoIP database in use was built; 0: not loaded.\n\
         # TYPE collector_geoip_build_timestamp_seconds gauge"
    );
    for (kind, _, built) in geo.status() {
        let _ = writeln!(
            out,
            "collector_geoip_build_timestamp_seconds{{database=\"{kind}\"}} {}",
            built.unwrap_or(0)
        );
    }
}

/// Each threat list's size and matches.
fn render_threats(out: &mut String, threats: &crate::enrich::Threats) {
    use std::fmt::Write;
    let status = threats.status();
    let _ = writeln!(
        out,
        "# HELP collector_threat_list_networks Networks in each threat list in use; 0: not loaded.\n\
         # TYPE collector_threat_list_networks gauge"
    );
    for (name, networks, _) in &status {
        let _ = writeln!(
            out,
            "collector_threat_list_networks{{list=\"{name}\"}} {}",
            networks.unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP collector_threat_matches_total Event addresses found on each threat list.\n\
         # TYPE collector_threat_matches_total counter"
    );
    for (name, _, hits) in &status {
        let _ = writeln!(
            out,
            "collector_threat_matches_total{{list=\"{name}\"}} {hits}"
        );
    }
}

/// What each redaction rule changed.
fn render_redactions(out: &mut String, redactor: &crate::enrich::Redactor) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP collector_redactions_total Values each redaction rule changed (fields dropped or hashed, \
         matches masked, addresses cut).\n# TYPE collector_redactions_total counter"
    );
    for (rule, n) in redactor.totals() {
        let _ = writeln!(out, "collector_redactions_total{{rule=\"{rule}\"}} {n}");
    }
}

/// The spool's gauges and counters.
fn render_spool(out: &mut String, s: &SpoolStatus) {
    use std::fmt::Write;
    let metrics: [(&str, &str, &str, f64); 12] = [
        (
            "collector_spool_bytes",
            "gauge",
            "Bytes of spool segments on disk.",
            s.bytes as f64,
        ),
        (
            "collector_spool_max_bytes",
            "gauge",
            "COLLECTOR_SPOOL_MAX_BYTES.",
            s.max_bytes as f64,
        ),
        (
            "collector_spool_segments",
            "gauge",
            "Spool segment files.",
            s.segments as f64,
        ),
        (
            "collector_spool_free_disk_bytes",
            "gauge",
            "Free bytes on the spool's disk.",
            s.free_disk_bytes as f64,
        ),
        (
            "collector_spool_oldest_unflushed_seconds",
            "gauge",
            "Age of the oldest spool segment holding a batch not yet in PostgreSQL.",
            s.oldest_unflushed_secs,
        ),
        (
            "collector_spool_backlog",
            "gauge",
            "1 while acknowledged batches wait on disk for room in the queue.",
            f64::from(u8::from(s.backlog)),
        ),
        (
            "collector_spool_fsyncs_total",
            "counter",
            "Spool group commits (one fsync each).",
            s.fsyncs as f64,
        ),
        (
            "collector_spool_records_total",
            "counter",
            "Batches appended to the spool.",
            s.records as f64,
        ),
        (
            "collector_spool_events_total",
            "counter",
            "Events (and dead letters) in the batches appended.",
            s.events as f64,
        ),
        (
            "collector_spool_replayed_total",
            "counter",
            "Batches read back from the spool into the queue (after a restart or a full queue).",
            s.replayed as f64,
        ),
        (
            "collector_spool_kept_decoded_total",
            "counter",
            "Batches that waited behind a backlog already decoded, queued without reading them back.",
            s.kept_decoded as f64,
        ),
        (
            "collector_spool_append_errors_total",
            "counter",
            "Spool writes that failed (answered 503).",
            s.append_errors as f64,
        ),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}
