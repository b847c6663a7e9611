//! The other agents' protocols, answered as their servers answer, over the same ingest as `POST /ingest`
//! (authentication, rate limit, spool, receipt): Elasticsearch's `_bulk` with the handshake endpoints its
//! clients call first, and OpenTelemetry's `POST /v1/logs`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use super::ingest::accept;
use super::AppState;
use crate::auth::Producer;
use crate::decode::{self, bulk::Item};

/// The Elasticsearch version the handshake reports: 8.x, so that clients send typeless `_bulk` requests.
const ES_VERSION: &str = "8.11.0";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_bulk", post(bulk))
        .route("/{index}/_bulk", post(bulk))
        .route("/", get(es_info).head(es_ok))
        .route("/_cluster/health", get(es_health))
        .route("/_license", get(es_license))
        .route("/_xpack", get(es_xpack))
        .route(
            "/_index_template/{name}",
            get(es_empty).head(es_ok).put(es_acknowledged),
        )
        .route(
            "/_template/{name}",
            get(es_empty).head(es_ok).put(es_acknowledged),
        )
        .route(
            "/_ilm/policy/{name}",
            get(es_empty).head(es_ok).put(es_acknowledged),
        )
        .route("/v1/logs", post(otlp_logs))
}

/// Every answer to an Elasticsearch client says it is one (its clients since 7.14 check).
fn es(body: Value) -> Response {
    let mut r = (StatusCode::OK, Json(body)).into_response();
    r.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    r
}

async fn es_info() -> Response {
    es(json!({
        "name": "server-logger",
        "cluster_name": "server-logger",
        "cluster_uuid": "server-logger",
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "lucene_version": "9.8.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0"
        },
        "tagline": "You Know, for Search"
    }))
}

/// `HEAD`: the thing exists (an answer without a body).
async fn es_ok() -> Response {
    es(json!({}))
}

async fn es_health() -> Response {
    es(
        json!({"cluster_name": "server-logger", "status": "green", "timed_out": false,
              "number_of_nodes": 1, "number_of_data_nodes": 1}),
    )
}

async fn es_license() -> Response {
    es(json!({"license": {"status": "active", "type": "basic", "uid": "server-logger"}}))
}

async fn es_xpack() -> Response {
    es(json!({"build": {}, "features": {}, "license": {"status": "active", "type": "basic"}}))
}

/// Templates and policies: the collector has its own schema, so any is taken and none is stored.
async fn es_empty() -> Response {
    es(json!({}))
}

async fn es_acknowledged() -> Response {
    es(json!({"acknowledged": true}))
}

/// `POST /_bulk`: each `index`/`create` document is an event. Answered as Elasticsearch does: 200 with one
/// item per action, `"errors": true` when any item failed (an invalid event, kept in `ingest_rejects`; or an
/// action that would change stored events). A retry of a batch already accepted is answered with no items.
/// `POST /{index}/_bulk` is the same. `GET /`, `/_cluster/health`, `/_license`, `/_xpack` and the template and
/// ILM endpoints answer the handshakes of Elasticsearch clients.
#[utoipa::path(post, path = "/_bulk", tag = "ingest",
    request_body(content = String, description = "NDJSON action and document lines", content_type = "application/x-ndjson"),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "One item per action, as Elasticsearch answers"),
        (status = 400, description = "A line is not JSON (the body is kept as a dead letter)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = super::error::ErrorBody),
        (status = 503, description = "As POST /ingest; see Retry-After", body = super::error::ErrorBody)))]
pub(super) async fn bulk(
    State(state): State<AppState>,
    Extension(producer): Extension<Producer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let accepted = accept(&state, producer, &headers, body, Some(decode::ES_BULK)).await?;
    let rejected: std::collections::HashMap<usize, &str> = accepted
        .rejected
        .iter()
        .map(|(i, reason)| (*i, reason.as_str()))
        .collect();
    let mut errors = false;
    let items: Vec<Value> = accepted
        .receipt
        .bulk_items
        .iter()
        .map(|item| match item {
            Item::Doc {
                action,
                index,
                event,
            } => match rejected.get(event) {
                Some(reason) => {
                    errors = true;
                    json!({action: {"_index": index, "status": 400, "error": {
                        "type": "document_parsing_exception", "reason": reason}}})
                }
                None => json!({action: {"_index": index, "_id": format!("{event}"), "_version": 1,
                    "result": "created", "status": 201, "_seq_no": event, "_primary_term": 1,
                    "_shards": {"total": 1, "successful": 1, "failed": 0}}}),
            },
            Item::Refused { action, index } => {
                errors = true;
                json!({action: {"_index": index, "status": 400, "error": {
                    "type": "action_request_validation_exception",
                    "reason": format!("`{action}` is not supported: the collector stores events and never changes them")}}})
            }
        })
        .collect();
    Ok(es(json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": items,
    })))
}

/// `POST /v1/logs` (OTLP/HTTP), protobuf (`application/x-protobuf`) or JSON: 200 with an
/// `ExportLogsServiceResponse` in the request's encoding, whose partial success counts the log records
/// refused (each kept in `ingest_rejects`).
#[utoipa::path(post, path = "/v1/logs", tag = "ingest",
    request_body(content = String, description = "ExportLogsServiceRequest", content_type = "application/x-protobuf"),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "ExportLogsServiceResponse: the partial success counts refused records"),
        (status = 400, description = "Not an OTLP request (kept as a dead letter)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = super::error::ErrorBody),
        (status = 503, description = "As POST /ingest; see Retry-After", body = super::error::ErrorBody)))]
pub(super) async fn otlp_logs(
    State(state): State<AppState>,
    Extension(producer): Extension<Producer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-protobuf"));
    let format = if protobuf {
        decode::OTLP_PROTOBUF
    } else {
        decode::OTLP_JSON
    };
    let accepted = accept(&state, producer, &headers, body, Some(format)).await?;
    let receipt = &accepted.receipt;
    let message = receipt
        .errors
        .iter()
        .map(|e| format!("log record {}: {}", e.index, e.error))
        .collect::<Vec<_>>()
        .join("; ");
    if protobuf {
        let response = decode::otlp::ExportLogsResponse {
            partial_success: (receipt.rejected > 0).then_some(decode::otlp::PartialSuccess {
                rejected_log_records: receipt.rejected as i64,
                error_message: message,
            }),
        };
        let bytes = prost::Message::encode_to_vec(&response);
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            bytes,
        )
            .into_response());
    }
    let body = if receipt.rejected > 0 {
        json!({"partialSuccess": {"rejectedLogRecords": receipt.rejected.to_string(), "errorMessage": message}})
    } else {
        json!({})
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}
