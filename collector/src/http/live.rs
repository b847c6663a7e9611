//! `GET /api/tail`: committed events as Server-Sent Events, with the read filters; `GET /api/status`: the
//! collector's own counters for the dashboard. Both need the read scope; a tenant's key sees its producers only
//! (and no collector-wide counters).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::auth::Principal;
use crate::pipeline::tail::{Subscription, TailBatch};
use crate::query::filters::Filters;
use crate::query::live;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/tail", get(tail))
        .route("/api/status", get(status))
}

/// Committed events matching the filters (`service`, `protocol`, `host`, `producer`, `src`, `dst`,
/// `dst_port`, `status`, `status_class`, `min_latency_ms`; `from`/`to` are ignored), as `event: events` with a
/// JSON array, at most COLLECTOR_TAIL_EVENTS_PER_SEC a second. Events over that rate, and batches a follower
/// does not read in time, are missed: the next message is `event: missed` with `{"events": n}`. Open tails
/// are limited (COLLECTOR_MAX_TAILS: 429).
#[utoipa::path(get, path = "/api/tail", tag = "read", security(("api_key" = []), ("bearer" = [])),
    params(crate::http::openapi::CommonFilters, ("min_latency_ms" = Option<f64>, Query, description = "Only events at least this slow")),
    responses(
        (status = 200, description = "text/event-stream: `open`, then `events` (a JSON array of committed events) and `missed` (`{\"events\": n}`)", content_type = "text/event-stream"),
        (status = 429, description = "COLLECTOR_MAX_TAILS tails are open", body = super::error::ErrorBody)))]
pub(super) async fn tail(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut f = Filters::parse(&params, &["min_latency_ms"], chrono::Utc::now())?;
    f.producers = state.keys.visible_to(&principal).map(|p| p.to_vec());
    let sub = state
        .tail
        .follow(f)
        .map_err(|e| ApiError::TooManyReads(e.to_string()))?;
    let hello = Event::default()
        .event("open")
        .json_data(json!({ "followers": state.tail.followers(), "max": state.tail.max() }))
        .unwrap_or_default();
    let events = stream::unfold(sub, |mut sub| async move {
        let (batch, position) = sub.next().await?;
        let messages = messages(&sub, &batch, position);
        Some((stream::iter(messages), sub))
    })
    .flatten();
    let all = stream::once(async move { hello })
        .chain(events)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(all).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What one committed batch becomes for a follower: what it missed before it, then its events.
fn messages(sub: &Subscription, batch: &TailBatch, position: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let missed = sub.take_missed();
    if missed > 0 {
        if let Ok(e) = Event::default()
            .event("missed")
            .json_data(json!({ "events": missed }))
        {
            out.push(e);
        }
    }
    let kept: Vec<_> = batch.events_for(position).collect();
    if !kept.is_empty() {
        if let Ok(e) = Event::default().event("events").json_data(&kept) {
            out.push(e);
        }
    }
    out
}

/// The collector's own counters (ingest totals, queue, spool, tails) and whether anything was ever stored.
#[utoipa::path(get, path = "/api/status", tag = "read", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "`now`, `has_events`, `tails`; for a key without tenant also `ingest`, `queue`, `spool`", body = Value)))]
pub(super) async fn status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let producers = state.keys.visible_to(&principal);
    let client = state.read_pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "A read found the database unreachable");
        ApiError::NotReady("database unreachable (the error is in the collector's log)".into())
    })?;
    let has_events = live::has_events(&client, producers.as_deref())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut body = json!({
        "now": chrono::Utc::now(),
        "has_events": has_events,
        "tails": { "open": state.tail.followers(), "max": state.tail.max() },
    });
    if principal.tenant.is_none() {
        let s = &state.stats;
        body["ingest"] = json!({
            "events_accepted": s.events_accepted.get(),
            "events_rejected": s.events_rejected.get(),
            "rows_written": s.rows_written.get(),
            "dead_letters": s.dead_letters.get(),
            "overload_responses": s.overload_responses.get(),
        });
        body["queue"] = json!({ "depth": state.queue.depth(), "capacity": state.queue.capacity() });
        body["spool"] = match &state.spool {
            Some(spool) => {
                let st = spool.status();
                json!({
                    "bytes": st.bytes,
                    "max_bytes": st.max_bytes,
                    "backlog": st.backlog,
                    "oldest_unflushed_secs": st.oldest_unflushed_secs,
                })
            }
            None => Value::Null,
        };
    }
    Ok(Json(body))
}
