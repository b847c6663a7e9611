//! `POST /ingest`: decode → validate/encode → queue, then answer at once.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::Producer;
use crate::decode::{self, DecodeError, Encoding, Format};
use crate::pipeline::batch::{Batch, Receipt, Reject};
use crate::pipeline::queue::SubmitError;

pub fn router() -> Router<AppState> {
    Router::new().route("/ingest", post(ingest))
}

/// Accepts a batch of events: a JSON array, `{"events":[…]}`, `{"logs":[…]}`, one object, NDJSON, or Fluent
/// Bit msgpack; optionally gzip, zstd or deflate. Valid events are queued for COPY at once; invalid ones are
/// listed by index and kept in the dead-letter table.
#[utoipa::path(post, path = "/ingest", tag = "ingest", request_body(content = String, description = "The batch", content_type = "application/json"),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Queued; per-event errors listed", body = Receipt),
        (status = 400, description = "The body cannot be decoded at all (kept as a dead letter)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over the size limit, before or after decompression", body = ErrorBody),
        (status = 415, description = "Unknown Content-Encoding", body = ErrorBody),
        (status = 429, description = "This key's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, description = "Ingest queue full or shutting down; see Retry-After", body = ErrorBody)))]
#[tracing::instrument(name = "ingest", skip_all, fields(producer = %producer.0))]
pub(super) async fn ingest(
    State(state): State<AppState>,
    Extension(producer): Extension<Producer>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let received_at_us = chrono::Utc::now().timestamp_micros();
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge(format!(
            "body is over the limit of {} bytes (COLLECTOR_MAX_BODY_BYTES)",
            state.max_body_bytes
        )),
        _ => ApiError::BadRequest(format!(
            "could not read the body: {}",
            rejection.body_text()
        )),
    })?;
    let producer = producer.0;
    let (batch, receipt) = match prepare(&body, &headers, &producer, received_at_us, &state) {
        Ok(prepared) => prepared,
        Err(e) => {
            // Undecodable: the client hears 400/413/415, and the raw body is kept so nothing is lost.
            state.stats.bodies_undecodable.add(1);
            let reject = Reject::new(
                producer.clone(),
                received_at_us,
                None,
                e.to_string(),
                body,
                state.limits.dead_letter_max_bytes,
            );
            state
                .queue
                .try_submit(Batch::rejects_only(producer, received_at_us, vec![reject]))?;
            return Err(e.into());
        }
    };
    let rows = batch.row_count();
    if batch.weight() > state.queue.capacity() {
        // It can never be queued: the client hears 413, and the body is kept, as an undecodable one is.
        let e = SubmitError::TooLarge {
            weight: batch.weight(),
            capacity: state.queue.capacity(),
        };
        let reject = Reject::new(
            producer.clone(),
            received_at_us,
            None,
            e.to_string(),
            body,
            state.limits.dead_letter_max_bytes,
        );
        state
            .queue
            .try_submit(Batch::rejects_only(producer, received_at_us, vec![reject]))?;
        return Err(e.into());
    }
    state
        .queue
        .try_submit(batch)
        .inspect_err(|_| state.stats.overload_responses.add(1))?;
    state.stats.record_batch(&producer, rows, receipt.rejected);
    tracing::debug!(
        accepted = receipt.accepted,
        rejected = receipt.rejected,
        "Batch queued"
    );
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// Body bytes → a batch of encoded rows and dead letters, plus the receipt for the client.
fn prepare(
    body: &Bytes,
    headers: &HeaderMap,
    producer: &Arc<str>,
    received_at_us: i64,
    state: &AppState,
) -> Result<(Batch, Receipt), DecodeError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let encoding = Encoding::from_header(header(header::CONTENT_ENCODING))?;
    let format = Format::from_content_type(header(header::CONTENT_TYPE));
    let plain = match decode::decompress(body, encoding, state.max_decompressed_bytes)? {
        Cow::Borrowed(_) => body.clone(),
        Cow::Owned(v) => Bytes::from(v),
    };
    let text = decode::to_json(plain, format)?;
    let s = decode::as_text(&text)?;
    if s.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    // msgpack was transcoded to a JSON array.
    let format = if format == Format::Msgpack {
        Format::Json
    } else {
        format
    };
    Batch::build(
        text.clone(),
        s,
        format,
        producer.clone(),
        received_at_us,
        &state.limits,
    )
}
