//! `GET /healthz`: the process is alive. `GET /readyz`: a batch sent now would be acknowledged, so a load
//! balancer stops sending before producers see 503s: with the spool, while it has room on disk; without it,
//! while the database answers and the queue is below its high-water mark.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::db;
use crate::pipeline::spool::SpoolStatus;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// PostgreSQL answers and the ingest queue is below its high-water mark.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready, with the queue depth"),
    (status = 503, description = "Not ready, and why", body = super::error::ErrorBody)))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(spool) = &state.spool {
        return spool_ready(&state, spool.status()).await;
    }
    if let Err(e) = database(&state).await {
        return Err(ApiError::NotReady(e.to_string()));
    }
    let (failing, _) = state.stats.failing();
    if failing > 0 {
        return Err(ApiError::NotReady(format!(
            "{failing} flush(es) to PostgreSQL keep failing and are being retried (the error is in the \
             collector's log)"
        )));
    }
    let depth = state.queue.depth();
    if depth > state.queue_high_water {
        return Err(ApiError::NotReady(format!(
            "ingest queue holds {depth} events, above its high-water mark of {}",
            state.queue_high_water
        )));
    }
    Ok(Json(json!({
        "status": "ready",
        "queue_depth": depth,
        "queue_capacity": state.queue.capacity(),
        "geoip": geoip(&state),
        "threat_lists": threat_lists(&state),
    })))
}

/// Each GeoIP database: loaded or not, and when it was built (no paths: this answer needs no key).
fn geoip(state: &AppState) -> Value {
    let Some(geo) = &state.geo else {
        return Value::String("off".into());
    };
    let mut out = serde_json::Map::new();
    for (kind, _, built) in geo.status() {
        let built = built
            .and_then(|s| chrono::DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
            .map(|t| t.to_rfc3339());
        out.insert(
            kind.into(),
            json!({ "loaded": built.is_some(), "built": built }),
        );
    }
    Value::Object(out)
}

/// Each threat list: its networks, or null while it is not loaded (names only, no paths).
fn threat_lists(state: &AppState) -> Value {
    let Some(threats) = &state.intake.threats else {
        return Value::String("off".into());
    };
    let lists: serde_json::Map<String, Value> = threats
        .status()
        .into_iter()
        .map(|(name, networks, _)| (name, json!({ "networks": networks })))
        .collect();
    Value::Object(lists)
}

/// With the spool, ready means a batch sent now is acknowledged: the spool has room on disk, whatever the
/// database's state (a batch waits on disk while it is down or slow). The answer says how things stand.
async fn spool_ready(state: &AppState, spool: SpoolStatus) -> Result<Json<Value>, ApiError> {
    let database = match database(state).await {
        Ok(()) => "ok",
        Err(_) => "unreachable",
    };
    let (failing, _) = state.stats.failing();
    let headroom = spool.max_bytes.saturating_sub(spool.bytes) >= spool.max_bytes / 20;
    if !headroom {
        return Err(ApiError::NotReady(format!(
            "the spool holds {} of its {} bytes (COLLECTOR_SPOOL_MAX_BYTES) in batches PostgreSQL has not taken \
             (database: {database}; oldest {:.0} s)",
            spool.bytes, spool.max_bytes, spool.oldest_unflushed_secs
        )));
    }
    Ok(Json(json!({
        "status": "ready",
        "database": database,
        "failing_flushes": failing,
        "queue_depth": state.queue.depth(),
        "queue_capacity": state.queue.capacity(),
        "spool": spool,
        "geoip": geoip(state),
        "threat_lists": threat_lists(state),
    })))
}

/// Whether the database answers. Why not goes to the log, not to the (unauthenticated) caller: errors name
/// servers, databases and SQL.
async fn database(state: &AppState) -> Result<(), &'static str> {
    let answered = match state.pool.get().await {
        Ok(client) => db::ping(&client).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    answered.map_err(|error| {
        tracing::warn!(error = %error, "Readiness: the database does not answer");
        "database unreachable (the error is in the collector's log)"
    })
}
