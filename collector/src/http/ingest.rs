//! `POST /ingest`: decode → validate/encode → queue, then answer at once.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::auth::Producer;
use crate::decode::{self, DecodeError, Encoding, Format};
use crate::pipeline::batch::{Batch, Receipt, Reject};
use crate::pipeline::budget::Reservation;
use crate::pipeline::dedup;
use crate::pipeline::queue::SubmitError;

/// Bytes of body per event at most, for the room taken in the queue before decoding: an underestimate of the
/// events (typical events are 200-400 bytes, less compressed), so that the room taken is never more than the
/// batch needs; the rest is taken once the events are counted.
const BYTES_PER_EVENT_AT_MOST: usize = 4096;

/// Uncompressed bodies up to this size are decoded on the async worker that received them: about a
/// millisecond of work (1,000 typical events).
const INLINE_BODY_BYTES: usize = 512 << 10;

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
    body: Body,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let received_at_us = chrono::Utc::now().timestamp_micros();
    // Room in the queue first, from the size the client announces: when the queue is full the answer is 503
    // before the body is read, decompressed or parsed, so overload costs microseconds a request.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let queue_room = state
        .queue
        .reserve(announced / BYTES_PER_EVENT_AT_MOST)
        .inspect_err(|_| state.stats.overload_responses.add(1))?;
    // Everything this request holds in memory, from its first byte to the batch's commit, is reserved first.
    let mut memory = state.memory.reservation();
    let body = read_body(body, state.max_body_bytes, &mut memory).await?;
    let producer = producer.0;
    // A retry of a batch already accepted is answered as the first was, and not stored again.
    let idempotency_key = headers.get("idempotency-key").map(|v| v.as_bytes());
    let identity = dedup::identity(&body, idempotency_key);
    if !state.seen.first_time(&producer, identity, received_at_us) {
        state.stats.duplicates.add(1);
        tracing::debug!("Batch already accepted; answered as a duplicate");
        let receipt = Receipt {
            duplicate: true,
            ..Receipt::default()
        };
        return Ok((StatusCode::ACCEPTED, Json(receipt)));
    }
    // Until the batch is queued, the identity is forgotten on any way out: the client's retry must be taken.
    let mut remembered = Remembered {
        seen: state.seen.clone(),
        producer: producer.clone(),
        identity,
        kept: false,
    };
    // A large body takes tens of milliseconds to seconds of CPU to decompress and parse: off the async workers,
    // so that health checks and small requests are not held behind it. A small one is done here: handing it to
    // another thread cost more than its work (ack p99 at half load 1.5 → 5 ms, BENCHMARKS.md).
    let small = body.len() <= INLINE_BODY_BYTES && !headers.contains_key(header::CONTENT_ENCODING);
    let decode = {
        let (body, state, producer) = (body.clone(), state.clone(), producer.clone());
        move || {
            let out = prepare(
                &body,
                &headers,
                &producer,
                received_at_us,
                &state,
                &mut memory,
            );
            out.map(|(batch, receipt)| (batch, receipt, memory))
        }
    };
    let prepared = if small {
        decode()
    } else {
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|e| ApiError::Internal(format!("decoding task failed: {e}")))?
    };
    let (mut batch, receipt, memory) = match prepared {
        Ok(prepared) => prepared,
        Err(DecodeError::OverBudget) => {
            state.stats.overload_responses.add(1);
            return Err(DecodeError::OverBudget.into());
        }
        Err(e) => {
            // Undecodable: the client hears 400/413/415, and the raw body is kept so nothing is lost.
            state.stats.bodies_undecodable.add(1);
            let whole = WholeBody {
                producer,
                received_at_us,
                body,
                reason: e.to_string(),
            };
            whole.dead_letter(&state, queue_room)?;
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
        let whole = WholeBody {
            producer,
            received_at_us,
            body,
            reason: e.to_string(),
        };
        whole.dead_letter(&state, queue_room)?;
        return Err(e.into());
    }
    // The batch keeps its share of the budget until the writer commits it, and records its identity then.
    batch.memory = Some(memory);
    batch.identity = state.seen.enabled().then_some(identity);
    state
        .queue
        .submit_reserved(batch, Some(queue_room))
        .inspect_err(|_| state.stats.overload_responses.add(1))?;
    remembered.kept = true;
    state.stats.record_batch(&producer, rows, receipt.rejected);
    tracing::debug!(
        accepted = receipt.accepted,
        rejected = receipt.rejected,
        "Batch queued"
    );
    Ok((StatusCode::ACCEPTED, Json(receipt)))
}

/// A batch identity taken by [`dedup::Seen::first_time`], given back unless the batch was queued.
struct Remembered {
    seen: Arc<dedup::Seen>,
    producer: Arc<str>,
    identity: dedup::Digest,
    kept: bool,
}

impl Drop for Remembered {
    fn drop(&mut self) {
        if !self.kept {
            self.seen.forget(&self.producer, self.identity);
        }
    }
}

/// A body refused as a whole, kept raw with the reason.
struct WholeBody {
    producer: Arc<str>,
    received_at_us: i64,
    body: Bytes,
    reason: String,
}

impl WholeBody {
    /// Queues it for `ingest_rejects`, in the room the request took.
    fn dead_letter(self, state: &AppState, room: OwnedSemaphorePermit) -> Result<(), ApiError> {
        let reject = Reject::new(
            self.producer.clone(),
            self.received_at_us,
            None,
            self.reason,
            self.body,
            state.limits.dead_letter_max_bytes,
        );
        let batch = Batch::rejects_only(self.producer, self.received_at_us, vec![reject]);
        Ok(state.queue.submit_reserved(batch, Some(room))?)
    }
}

/// The request body, read frame by frame into a buffer the reservation covers; past `limit` bytes, 413.
async fn read_body(body: Body, limit: usize, memory: &mut Reservation) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::BodyTooLarge(format!(
            "body is over the limit of {limit} bytes (COLLECTOR_MAX_BODY_BYTES)"
        ))
    };
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                ApiError::BadRequest(format!("could not read the body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large());
        }
        if buf.len() + data.len() > buf.capacity() {
            let capacity = (buf.capacity() * 2).max(buf.len() + data.len()).min(limit);
            memory
                .grow_to(capacity)
                .map_err(|_| ApiError::Decode(DecodeError::OverBudget))?;
            buf.reserve(capacity - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Body bytes → a batch of encoded rows and dead letters, plus the receipt for the client; `memory` grows with
/// the decompressed text and the encoded rows, and ends holding what the batch keeps.
fn prepare(
    body: &Bytes,
    headers: &HeaderMap,
    producer: &Arc<str>,
    received_at_us: i64,
    state: &AppState,
    memory: &mut Reservation,
) -> Result<(Batch, Receipt), DecodeError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let encoding = Encoding::from_header(header(header::CONTENT_ENCODING))?;
    let format = Format::from_content_type(header(header::CONTENT_TYPE));
    let compressed = body.len();
    let plain = match decode::decompress_within(
        body,
        encoding,
        state.max_decompressed_bytes,
        &mut |bytes| memory.grow_to(compressed + bytes).is_ok(),
    )? {
        Cow::Borrowed(_) => body.clone(),
        Cow::Owned(v) => Bytes::from(v),
    };
    let text = decode::to_json(plain, format)?;
    let s = decode::as_text(&text)?;
    if s.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    // The encoded rows take about as much as the text they come from.
    let kept = if encoding == Encoding::Identity {
        text.len()
    } else {
        compressed + text.len()
    };
    memory
        .grow_to(kept + text.len())
        .map_err(|_| DecodeError::OverBudget)?;
    // msgpack was transcoded to a JSON array.
    let format = if format == Format::Msgpack {
        Format::Json
    } else {
        format
    };
    let built = Batch::build(
        text.clone(),
        s,
        format,
        producer.clone(),
        received_at_us,
        &state.limits,
    )?;
    // What stays until the commit: the text and the rows' buffer, sized from the text (the compressed body is
    // dropped with the request).
    let (batch, _) = &built;
    memory.shrink_to(batch.source.len() + s.len() + 1024);
    Ok(built)
}
