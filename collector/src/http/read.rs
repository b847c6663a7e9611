//! The read endpoints: `GET /metrics/volume|error-rate|latency|top-talkers` and `GET /api/logs`. Each is
//! `query::api::execute` of its kind.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::{error::ApiError, AppState};
use crate::query::api::{self, Kind, QueryError};

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for kind in [
        Kind::Volume,
        Kind::ErrorRate,
        Kind::Latency,
        Kind::TopTalkers,
        Kind::Logs,
    ] {
        r = r.route(
            kind.path(),
            get(move |state, params| read(kind, state, params)),
        );
    }
    r
}

async fn read(
    kind: Kind,
    State(state): State<AppState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut client = state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::NotReady(format!("database unreachable: {e}")))?;
    api::execute(kind, &params, &mut client, state.query_timeout)
        .await
        .map(Json)
        .map_err(|e| match e {
            QueryError::Param(p) => ApiError::InvalidParam(p),
            e @ QueryError::TimedOut(_) => ApiError::QueryTimeout(e.to_string()),
            QueryError::Db(d) => ApiError::Internal(d.to_string()),
        })
}
