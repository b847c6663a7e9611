//! `GET /healthz`: the process is alive. `GET /readyz`: the database answers and the queue is below its
//! high-water mark, so a load balancer stops sending before producers see 503s.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::db;

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
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::NotReady(format!("database unreachable: {e}")))?;
    db::ping(&client)
        .await
        .map_err(|e| ApiError::NotReady(format!("database unreachable: {e}")))?;
    let (failing, error) = state.stats.failing();
    if failing > 0 {
        return Err(ApiError::NotReady(format!(
            "{failing} flush(es) to PostgreSQL keep failing and are being retried: {}",
            error.unwrap_or_default()
        )));
    }
    let depth = state.queue.depth();
    if depth > state.queue_high_water {
        return Err(ApiError::NotReady(format!(
            "ingest queue holds {depth} events, above its high-water mark of {}",
            state.queue_high_water
        )));
    }
    Ok(Json(
        json!({"status": "ready", "queue_depth": depth, "queue_capacity": state.queue.capacity()}),
    ))
}
