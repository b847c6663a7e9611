//! The read endpoints: `GET /metrics/volume|error-rate|latency|top-talkers` and `GET /api/logs`. Each is
//! `query::api::execute` of its kind, on a connection of the read pool (the writers have their own), with the
//! calling key's gate on reads of raw events; a tenant's key sees its tenant's producers only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;

use super::{error::ApiError, AppState};
use crate::auth::Principal;
use crate::query::api::{self, Kind, QueryError, RawGate};

/// One [`RawGate`] per API key (keys are few: a map behind a lock).
#[derive(Debug)]
pub struct RawReads {
    per_key: usize,
    gates: Mutex<HashMap<Arc<str>, RawGate>>,
}

impl RawReads {
    /// `per_key` reads of raw events at once for each key; `None` when 0 (no limit).
    pub fn new(per_key: usize) -> Option<Arc<RawReads>> {
        (per_key > 0).then(|| {
            Arc::new(RawReads {
                per_key,
                gates: Mutex::new(HashMap::new()),
            })
        })
    }

    fn gate(&self, key: &Arc<str>) -> RawGate {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(key.clone())
            .or_insert_with(|| RawGate::new(self.per_key))
            .clone()
    }
}

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
            get(move |state, producer, params| read(kind, state, producer, params)),
        );
    }
    r
}

async fn read(
    kind: Kind,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut client = state.read_pool.get().await.map_err(|e| {
        let e = crate::db::DbError::from(e);
        if e.is_pool_busy() {
            ApiError::Busy(
                "every read connection is busy (COLLECTOR_READ_CONNECTIONS, COLLECTOR_READ_POOL_WAIT_MS)"
                    .into(),
            )
        } else {
            tracing::warn!(error = %e, "A read found the database unreachable");
            ApiError::NotReady("database unreachable (the error is in the collector's log)".into())
        }
    })?;
    let gate = state
        .raw_reads
        .as_ref()
        .map(|r| r.gate(&principal.producer.0));
    // A tenant's key reads its tenant's producers only.
    let visible = state.keys.visible_to(&principal);
    api::execute(
        kind,
        &params,
        &mut client,
        state.query_timeout,
        gate.as_ref(),
        visible.as_deref(),
    )
    .await
    .map(Json)
    .map_err(|e| match e {
        QueryError::Param(p) => ApiError::InvalidParam(p),
        e @ QueryError::TimedOut(_) => ApiError::QueryTimeout(e.to_string()),
        e @ QueryError::TooManyRawReads(_) => ApiError::TooManyReads(e.to_string()),
        QueryError::Db(d) => ApiError::Internal(d.to_string()),
    })
}
