//! `GET /metrics/volume|error-rate|latency|top-talkers`: aggregates over a time window.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::Object;

use super::{error::ApiError, AppState};
use crate::query::filters::Filters;
use crate::query::metrics::{self, ErrorRate, LatencyAnswer, TopTalkers, Volume};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics/volume", get(volume))
        .route("/metrics/error-rate", get(error_rate))
        .route("/metrics/latency", get(latency))
        .route("/metrics/top-talkers", get(top_talkers))
}

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn client(state: &AppState) -> Result<Object, ApiError> {
    state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::NotReady(format!("database unreachable: {e}")))
}

fn internal(e: crate::db::DbError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Filters plus the bucket, with the window widened to whole buckets.
fn bucketed(
    p: &HashMap<String, String>,
    extra: &[&str],
) -> Result<(Filters, metrics::Bucket), ApiError> {
    let mut f = Filters::parse(p, extra, chrono::Utc::now())?;
    let bucket = metrics::parse_bucket(p, &f)?;
    metrics::align(&mut f, bucket.secs);
    Ok((f, bucket))
}

async fn volume(State(state): State<AppState>, p: Params) -> Result<Json<Volume>, ApiError> {
    let p = params(p)?;
    let (f, bucket) = bucketed(&p, &["bucket"])?;
    Ok(Json(
        metrics::volume(&client(&state).await?, &f, bucket)
            .await
            .map_err(internal)?,
    ))
}

async fn error_rate(State(state): State<AppState>, p: Params) -> Result<Json<ErrorRate>, ApiError> {
    let p = params(p)?;
    let (f, bucket) = bucketed(&p, &["bucket", "group_by"])?;
    let by_service = metrics::parse_group_by(&p)?;
    Ok(Json(
        metrics::error_rate(&client(&state).await?, &f, bucket, by_service)
            .await
            .map_err(internal)?,
    ))
}

async fn latency(
    State(state): State<AppState>,
    p: Params,
) -> Result<Json<LatencyAnswer>, ApiError> {
    let p = params(p)?;
    let (f, bucket) = bucketed(&p, &["bucket", "group_by"])?;
    let by_service = metrics::parse_group_by(&p)?;
    Ok(Json(
        metrics::latency(&client(&state).await?, &f, bucket, by_service)
            .await
            .map_err(internal)?,
    ))
}

async fn top_talkers(
    State(state): State<AppState>,
    p: Params,
) -> Result<Json<TopTalkers>, ApiError> {
    let p = params(p)?;
    let mut f = Filters::parse(&p, &["by", "metric", "limit"], chrono::Utc::now())?;
    let q = metrics::parse_top(&p)?;
    // The rollup's grain is a minute.
    metrics::align(&mut f, 60);
    Ok(Json(
        metrics::top_talkers(&client(&state).await?, &f, q)
            .await
            .map_err(internal)?,
    ))
}
