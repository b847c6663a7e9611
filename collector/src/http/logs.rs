//! `GET /api/logs`: raw events matching the filters, newest first, with keyset pagination.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{error::ApiError, AppState};
use crate::db::queries::{self, LogRow};
use crate::query::cursor;
use crate::query::filters::{Filters, ParamError};

/// Page size when `limit` is not given, and the most one page may hold.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/logs", get(logs))
}

#[derive(Serialize)]
struct Page {
    events: Vec<LogRow>,
    /// Pass as `cursor` (with the same filters) for the next page; null on the last page.
    next_cursor: Option<String>,
}

async fn logs(
    State(state): State<AppState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filters = Filters::parse(
        &params,
        &["min_latency_ms", "limit", "cursor"],
        chrono::Utc::now(),
    )?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ParamError::new(
                    "limit",
                    format!("{v:?} is not a page size"),
                    format!("1-{MAX_LIMIT}"),
                )
            })?,
    };
    let after = params
        .get("cursor")
        .map(|c| cursor::decode(c))
        .transpose()?;
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::NotReady(format!("database unreachable: {e}")))?;
    // One row more than asked tells whether there is a next page.
    let mut events = queries::logs(&client, &filters, after.as_ref(), limit + 1)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let next_cursor = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|r| cursor::encode(&r.position))
    } else {
        None
    };
    Ok(Json(Page {
        events,
        next_cursor,
    }))
}
