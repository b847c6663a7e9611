//! The HTTP boundary's one error type: every failure becomes `{"code": "...", "detail": "..."}` with its status.
//! Client errors say what and where; server errors are opaque to the client and logged once here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::decode::DecodeError;
use crate::pipeline::queue::SubmitError;
use crate::pipeline::spool::SpoolError;
use crate::query::filters::ParamError;

/// Seconds an overloaded client is asked to wait. Agents mostly ignore it (see README), but it is correct HTTP.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key: send X-API-KEY: <key> or Authorization: Bearer <key>")]
    Unauthorized,
    /// Authenticated, without the scope (or tenant) the request needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    BodyTooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    InvalidParam(#[from] ParamError),
    #[error(transparent)]
    Queue(#[from] SubmitError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    DbDiskLow(#[from] crate::pipeline::disk::DiskLow),
    #[error("too many requests for this API key")]
    RateLimited {
        wait_secs: u64,
        headers: Option<axum::http::HeaderMap>,
    },
    #[error("not ready: {0}")]
    NotReady(String),
    /// A resource for reads is taken; the writers are not affected.
    #[error("busy: {0}")]
    Busy(String),
    #[error("{0}")]
    TooManyReads(String),
    #[error("{0}")]
    QueryTimeout(String),
    #[error("internal error")]
    Internal(String),
}

/// Every error answer: a machine-readable code and a sentence naming what is wrong and where.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// e.g. `unauthorized`, `forbidden`, `undecodable_body`, `invalid_parameter`, `body_too_large`, `queue_full`, `spool_full`.
    code: &'static str,
    detail: String,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Decode(
                DecodeError::TooLarge { .. } | DecodeError::DecompressedTooLarge { .. },
            ) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::Decode(DecodeError::OverBudget) => {
                (StatusCode::SERVICE_UNAVAILABLE, "over_memory_budget")
            }
            ApiError::Decode(DecodeError::UnsupportedEncoding(_)) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            ApiError::Decode(_) => (StatusCode::BAD_REQUEST, "undecodable_body"),
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidParam(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            ApiError::Queue(SubmitError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large")
            }
            ApiError::Queue(SubmitError::Full { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "queue_full")
            }
            ApiError::Queue(SubmitError::Closed) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ApiError::Spool(SpoolError::Full { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "spool_full")
            }
            ApiError::Spool(SpoolError::DiskLow { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "spool_disk_low")
            }
            ApiError::Spool(SpoolError::Io(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "spool_io_error")
            }
            ApiError::Spool(SpoolError::Closed) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            ApiError::DbDiskLow(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_disk_low"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::TooManyReads(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_raw_reads"),
            ApiError::QueryTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "query_timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "Request failed");
                "internal error; see the collector's log".to_string()
            }
            ApiError::RateLimited { wait_secs, .. } => {
                format!("too many requests for this API key; retry in {wait_secs}s")
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { code, detail })).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::RateLimited {
                headers: Some(extra),
                ..
            } => headers.extend(extra),
            ApiError::Queue(SubmitError::Full { .. } | SubmitError::Closed)
            | ApiError::Spool(_)
            | ApiError::DbDiskLow(_)
            | ApiError::NotReady(_)
            | ApiError::Busy(_)
            | ApiError::Decode(DecodeError::OverBudget) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        if status == StatusCode::TOO_MANY_REQUESTS && !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
