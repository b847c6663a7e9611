//! `GET /openapi.json`: the OpenAPI 3.1 description of the API, generated from the handlers' annotations and
//! the response types' schemas; `GET /docs`: the same description rendered as a plain page (no assets from
//! elsewhere, so it works on a machine without internet).
//!
//! The read endpoints share one handler (`read.rs`), so their operations are declared here; tests check that
//! the documented paths are exactly the routed ones and that each lists exactly the parameters its parser takes.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, Modify, OpenApi};

use super::error::ErrorBody;
use super::AppState;
use crate::auth::store::{CreatedKey, KeyInfo, NewKey};
use crate::pipeline::batch::{EventError, Receipt};
use crate::query::answers::{
    ErrorGroup, ErrorPoint, ErrorRate, LatencyAnswer, LatencyGroup, LatencyPoint, TopTalker,
    TopTalkers, Volume, VolumePoint, Window,
};
use crate::query::logs::LogRow;
use crate::query::plan::Table;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Server Logger collector",
        description = "Ingest of network-communication events and queries over them."
    ),
    paths(
        super::ingest::ingest,
        super::compat::bulk,
        super::compat::otlp_logs,
        volume,
        error_rate,
        latency,
        top_talkers,
        logs,
        super::live::tail,
        super::live::status,
        super::keys::create,
        super::keys::list,
        super::keys::revoke,
        super::keys::rotate,
        super::alerts::list_rules,
        super::alerts::create_rule,
        super::alerts::get_rule,
        super::alerts::update_rule,
        super::alerts::delete_rule,
        super::alerts::list_incidents,
        super::alerts::get_incident,
        super::alerts::act,
        super::prometheus::metrics,
        super::health::healthz,
        super::health::readyz
    ),
    components(schemas(
        Receipt, EventError, ErrorBody, Volume, VolumePoint, Window, Table, ErrorRate, ErrorPoint, ErrorGroup,
        LatencyAnswer, LatencyPoint, LatencyGroup, TopTalkers, TopTalker, LogsPage, LogRow, NewKey, KeyInfo, CreatedKey,
        crate::alerts::rules::Rule, crate::alerts::rules::RuleSpec, crate::alerts::rules::RuleKind,
        crate::alerts::rules::Op, crate::alerts::rules::Webhook, crate::alerts::rules::WebhookFormat,
        crate::alerts::incidents::Incident, crate::alerts::incidents::TimelineEntry,
        crate::alerts::incidents::Delivery
    )),
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-KEY"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The window and filters every read takes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CommonFilters {
    /// Start (inclusive): RFC 3339 or relative to now (`now`, `-30s`, `-15m`, `-1h`, `-7d`). Default: `to` − 1h.
    from: Option<String>,
    /// End (exclusive), same forms. Default: now.
    to: Option<String>,
    service: Option<String>,
    protocol: Option<String>,
    host: Option<String>,
    /// The API key's name the events came with.
    producer: Option<String>,
    /// Source IP or CIDR (IPv4 or IPv6). Reads raw events instead of the rollup.
    src: Option<String>,
    /// Destination IP or CIDR. Reads raw events instead of the rollup.
    dst: Option<String>,
    dst_port: Option<u16>,
    /// One status code.
    status: Option<i32>,
    /// `1xx` … `5xx` (not with `status`).
    status_class: Option<String>,
    /// Source country: an ISO 3166 code (`DE`) or a range label (`private`); needs enrichment. Reads raw events.
    src_country: Option<String>,
    /// Destination country, as `src_country`.
    dst_country: Option<String>,
    /// Source network's AS number; needs enrichment. Reads raw events.
    src_asn: Option<i64>,
    /// Destination network's AS number.
    dst_asn: Option<i64>,
    /// `any`, or a threat list's name: events whose source or destination is on a list. Reads raw events.
    threat: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SeriesGroupParams {
    /// `1m`, `5m`, `1h` or `1d`; default: the smallest giving at most 360 buckets. The window widens to whole buckets.
    bucket: Option<String>,
    /// `service`, `producer`, `host`, `src_country`, `dst_country`, `src_asn` or `dst_asn`: one series per
    /// value.
    group_by: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct GroupParams {
    /// `1m`, `5m`, `1h` or `1d`.
    bucket: Option<String>,
    /// `service`: one series per service.
    group_by: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TopParams {
    /// `src_ip` (default), `dst_ip`, `pair`, `dst_port`, `service`, `protocol`, `src_country`, `dst_country`,
    /// `src_asn`, `dst_asn` or `threat`.
    by: Option<String>,
    /// `events` (default) or `bytes` (in + out).
    metric: Option<String>,
    /// 1–1000, default 10.
    limit: Option<u32>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogsParams {
    /// Only events at least this slow.
    min_latency_ms: Option<f64>,
    /// 1–1000, default 100.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of raw events.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LogsPage {
    events: Vec<LogRow>,
    /// Pass as `cursor` with the same filters for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Events and bytes per time bucket.
#[utoipa::path(get, path = "/metrics/volume", tag = "read", params(CommonFilters, SeriesGroupParams),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Volume), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 504, description = "A statement ran over COLLECTOR_QUERY_TIMEOUT_MS", body = ErrorBody)))]
#[allow(dead_code)]
fn volume() {}

/// Errors (status ≥ 500), client errors (4xx) and totals per bucket and overall.
#[utoipa::path(get, path = "/metrics/error-rate", tag = "read", params(CommonFilters, SeriesGroupParams),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = ErrorRate), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 504, description = "A statement ran over COLLECTOR_QUERY_TIMEOUT_MS", body = ErrorBody)))]
#[allow(dead_code)]
fn error_rate() {}

/// Latency p50/p90/p95/p99 (within 1% from the rollup; exact from raw events) and max per bucket.
#[utoipa::path(get, path = "/metrics/latency", tag = "read", params(CommonFilters, GroupParams),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = LatencyAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 504, description = "A statement ran over COLLECTOR_QUERY_TIMEOUT_MS", body = ErrorBody)))]
#[allow(dead_code)]
fn latency() {}

/// The top N talkers with counts, bytes, errors and share of the total.
#[utoipa::path(get, path = "/metrics/top-talkers", tag = "read", params(CommonFilters, TopParams),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TopTalkers), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 504, description = "A statement ran over COLLECTOR_QUERY_TIMEOUT_MS", body = ErrorBody)))]
#[allow(dead_code)]
fn top_talkers() {}

/// Raw events, newest first, with keyset pagination.
#[utoipa::path(get, path = "/api/logs", tag = "read", params(CommonFilters, LogsParams),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = LogsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 504, description = "A statement ran over COLLECTOR_QUERY_TIMEOUT_MS", body = ErrorBody)))]
#[allow(dead_code)]
fn logs() {}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(spec))
        .route("/docs", get(docs))
}

pub fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

async fn spec() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], spec_json())
}

async fn docs() -> Html<&'static str> {
    static PAGE: OnceLock<String> = OnceLock::new();
    Html(PAGE.get_or_init(|| render(&ApiDoc::openapi())))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The description as one readable page: each operation with its parameters and answers.
fn render(api: &utoipa::openapi::OpenApi) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Server Logger collector API</title><style>\
         body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         h2{margin-top:2.5rem;border-bottom:1px solid #ddd}code{background:#f4f4f4;padding:0 .2rem}\
         table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}\
         .m{font-weight:bold;color:#0a5}</style></head><body>",
    );
    out.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>",
        esc(&api.info.title),
        esc(api.info.description.as_deref().unwrap_or(""))
    ));
    for (path, item) in api.paths.paths.iter() {
        for (method, op) in [("GET", &item.get), ("POST", &item.post)] {
            let Some(op) = op else { continue };
            out.push_str(&format!(
                "<h2><span class=\"m\">{method}</span> <code>{}</code></h2>",
                esc(path)
            ));
            if let Some(s) = &op.summary {
                out.push_str(&format!("<p>{}</p>", esc(s)));
            }
            if let Some(d) = &op.description {
                out.push_str(&format!("<p>{}</p>", esc(d)));
            }
            if op.security.is_some() {
                out.push_str("<p>Needs an API key: <code>X-API-KEY</code> or <code>Authorization: Bearer</code>.</p>");
            }
            let params = op.parameters.as_deref().unwrap_or(&[]);
            if !params.is_empty() {
                out.push_str("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>");
                for p in params {
                    let place = match p.parameter_in {
                        ParameterIn::Query => "query",
                        ParameterIn::Header => "header",
                        ParameterIn::Path => "path",
                        ParameterIn::Cookie => "cookie",
                    };
                    out.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{place}</td><td>{}</td></tr>",
                        esc(&p.name),
                        esc(p.description.as_deref().unwrap_or(""))
                    ));
                }
                out.push_str("</table>");
            }
            out.push_str("<table><tr><th>answer</th><th>meaning</th></tr>");
            for (status, resp) in op.responses.responses.iter() {
                let desc = match resp {
                    RefOr::T(r) => r.description.clone(),
                    RefOr::Ref(r) => r.ref_location.clone(),
                };
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(status),
                    esc(&desc)
                ));
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>");
    out
}
