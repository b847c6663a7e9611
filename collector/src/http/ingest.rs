//! `POST /ingest`: decode → validate/encode → spool (on disk) → queue, then answer at once.

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
use crate::decode::DecodeError;
use crate::pipeline::batch::{Batch, Receipt, Reject};
use crate::pipeline::budget::Reservation;
use crate::pipeline::dedup;
use crate::pipeline::intake::BodyHeaders;
use crate::pipeline::queue::SubmitError;
use crate::pipeline::spool::format::{encode_batch, Kind as RecordKind};
use crate::pipeline::spool::Record;

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
        (status = 202, description = "On disk (the spool) and queued; per-event errors listed", body = Receipt),
        (status = 400, description = "The body cannot be decoded at all (kept as a dead letter)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over the size limit, before or after decompression", body = ErrorBody),
        (status = 415, description = "Unknown Content-Encoding", body = ErrorBody),
        (status = 429, description = "This key's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, description = "Spool full, disk short of room, spool write failed, memory budget spent, queue full (memory durability) or shutting down; see Retry-After", body = ErrorBody)))]
#[tracing::instrument(name = "ingest", skip_all, fields(producer = %producer.0))]
pub(super) async fn ingest(
    State(state): State<AppState>,
    Extension(producer): Extension<Producer>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let accepted = accept(&state, producer, &headers, body, None).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted.receipt)))
}

/// What [`accept`] made of a batch.
pub(super) struct Accepted {
    pub receipt: Receipt,
    /// For a `_bulk` body: each rejected event's index and reason.
    pub rejected: Vec<(usize, String)>,
}

/// The whole of ingest, whatever the route: room, body, deduplication, decoding, the spool, the queue.
/// `format`: the content type the route imposes (`_bulk`, OTLP), else the request's own.
pub(super) async fn accept(
    state: &AppState,
    producer: Producer,
    headers: &HeaderMap,
    body: Body,
    format: Option<&'static str>,
) -> Result<Accepted, ApiError> {
    let received_at_us = chrono::Utc::now().timestamp_micros();
    // Room first, from the size the client announces: when the spool (or, without it, the queue) is full the
    // answer is 503 before the body is read, decompressed or parsed, so overload costs microseconds a request.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    if let Some(disk) = &state.db_disk {
        disk.check()
            .inspect_err(|_| state.stats.overload_responses.add(1))?;
    }
    let queue_room = match &state.spool {
        Some(spool) => {
            spool
                .admit(announced)
                .inspect_err(|_| state.stats.overload_responses.add(1))?;
            None
        }
        None => Some(
            state
                .queue
                .reserve(announced / BYTES_PER_EVENT_AT_MOST)
                .inspect_err(|_| state.stats.overload_responses.add(1))?,
        ),
    };
    // Everything this request holds in memory, from its first byte to the batch's commit, is reserved first.
    let mut memory = state.intake.memory.reservation();
    let body = read_body(body, state.max_body_bytes, announced, &mut memory).await?;
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
        return Ok(Accepted {
            receipt,
            rejected: Vec::new(),
        });
    }
    // Until the batch is kept, the identity is forgotten on any way out: the client's retry must be taken.
    let mut remembered = Remembered {
        seen: state.seen.clone(),
        producer: producer.clone(),
        identity,
        kept: false,
    };
    let text_header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let request = Request {
        producer: producer.clone(),
        received_at_us,
        content_type: format
            .map(str::to_string)
            .or_else(|| text_header(header::CONTENT_TYPE)),
        content_encoding: text_header(header::CONTENT_ENCODING),
        body,
    };
    // A large body takes tens of milliseconds to seconds of CPU to decompress and parse: off the async workers,
    // so that health checks and small requests are not held behind it. A small one is done here: handing it to
    // another thread cost more than its work (ack p99 at half load 1.5 → 5 ms, BENCHMARKS.md).
    let small = request.body.len() <= INLINE_BODY_BYTES && request.content_encoding.is_none();
    let decode = {
        let (request, state) = (request.clone(), state.clone());
        move || {
            let headers = BodyHeaders {
                content_type: request.content_type.as_deref(),
                content_encoding: request.content_encoding.as_deref(),
            };
            let out = state.intake.prepare(
                &request.body,
                headers,
                &request.producer,
                request.received_at_us,
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
            request
                .dead_letter(state, e.to_string(), queue_room)
                .await?;
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
        request
            .dead_letter(state, e.to_string(), queue_room)
            .await?;
        return Err(e.into());
    }
    let rejected = if receipt.bulk_items.is_empty() {
        Vec::new()
    } else {
        batch
            .rejects
            .iter()
            .filter_map(|r| Some((usize::try_from(r.event_index?).ok()?, r.reason.clone())))
            .collect()
    };
    // The batch keeps its share of the budget until the writer commits it, and records its identity then.
    batch.memory = Some(memory);
    match &state.spool {
        Some(spool) => {
            // The identity a replay looks for: the deduplication digest, else one of this batch alone.
            let identity = if state.seen.enabled() {
                identity
            } else {
                rand::random()
            };
            let record = request.record(identity, &batch, state.intake.redactor.is_some());
            spool
                .append(record, batch)
                .await
                .inspect_err(|_| state.stats.overload_responses.add(1))?;
        }
        None => {
            batch.identity = state.seen.enabled().then_some(identity);
            state
                .queue
                .submit_reserved(batch, queue_room)
                .inspect_err(|_| state.stats.overload_responses.add(1))?;
        }
    }
    remembered.kept = true;
    state.stats.record_batch(&producer, rows, receipt.rejected);
    tracing::debug!(
        accepted = receipt.accepted,
        rejected = receipt.rejected,
        "Batch accepted"
    );
    Ok(Accepted { receipt, rejected })
}

/// A batch identity taken by [`dedup::Seen::first_time`], given back unless the batch was kept.
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

/// A request as the spool keeps it.
#[derive(Clone)]
struct Request {
    producer: Arc<str>,
    received_at_us: i64,
    content_type: Option<String>,
    content_encoding: Option<String>,
    body: Bytes,
}

impl Request {
    /// The record of this request, which became `batch`: the body as received, or, when redacted (what was
    /// sent must not reach the disk), the batch as built.
    fn record(self, identity: dedup::Digest, batch: &Batch, redacted: bool) -> Record {
        let (kind, body, content_type, content_encoding) = if redacted {
            (RecordKind::Batch, encode_batch(batch), None, None)
        } else {
            (
                RecordKind::Request,
                self.body,
                self.content_type,
                self.content_encoding,
            )
        };
        Record {
            seq: 0,
            received_at_us: self.received_at_us,
            identity,
            producer: self.producer.to_string(),
            content_type,
            content_encoding,
            kind,
            body,
        }
    }

    /// Keeps a body refused as a whole, raw with the reason, in `ingest_rejects`: through the spool (a replay
    /// refuses it again, the same way), or through the queue in the room the request took.
    async fn dead_letter(
        self,
        state: &AppState,
        reason: String,
        room: Option<OwnedSemaphorePermit>,
    ) -> Result<(), ApiError> {
        let raw = match &state.intake.redactor {
            Some(r) => {
                let mut counts = r.counts();
                let raw = r.text(&self.body, &mut counts);
                r.record(&counts);
                Bytes::from(raw)
            }
            None => self.body.clone(),
        };
        let reject = Reject::new(
            self.producer.clone(),
            self.received_at_us,
            None,
            reason,
            raw,
            state.intake.limits.dead_letter_max_bytes,
        );
        let batch = Batch::rejects_only(self.producer.clone(), self.received_at_us, vec![reject]);
        match (&state.spool, room) {
            // Its identity is its own: a client resending the body must hear the same refusal.
            (Some(spool), _) => {
                let record = self.record(rand::random(), &batch, state.intake.redactor.is_some());
                Ok(spool.append(record, batch).await?)
            }
            (None, Some(room)) => Ok(state.queue.submit_reserved(batch, Some(room))?),
            (None, None) => Ok(state.queue.try_submit(batch)?),
        }
    }
}

/// The request body, read frame by frame into a buffer the reservation covers; past `limit` bytes, 413. The
/// buffer is sized from the announced length (within the limit and the budget) up front: grown by doubling from
/// empty, a 250 KB body was reallocated four times, copying about one more body's worth.
async fn read_body(
    body: Body,
    limit: usize,
    announced: usize,
    memory: &mut Reservation,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::BodyTooLarge(format!(
            "body is over the limit of {limit} bytes (COLLECTOR_MAX_BODY_BYTES)"
        ))
    };
    let mut body = body;
    let mut buf = BytesMut::new();
    let expected = announced.min(limit);
    if expected > 0 && memory.grow_to(expected).is_ok() {
        buf.reserve(expected);
    }
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
