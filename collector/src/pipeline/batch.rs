//! One request's worth of work for the writer: validated events already encoded as COPY rows, and the
//! rejected ones kept raw for the dead-letter table.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::decode::{self, DecodeError, Format};
use crate::enrich::{redact, threat, Enriched, Geo, Redactor, Threats};
use crate::event::{self, finish_event, FieldError, Limits, RawEvent, Scratch};
use crate::pipeline::copy::encode_row;
use crate::pipeline::tail::{Capture, TailBatch, TailHub};

/// What a batch is built with besides its events and limits.
#[derive(Default, Clone, Copy)]
pub struct Extras<'a> {
    /// The live tail, whose followers get a copy of the events they want.
    pub tail: Option<&'a Arc<TailHub>>,
    /// GeoIP and ASN lookups.
    pub geo: Option<&'a Geo>,
    /// Threat lists.
    pub threats: Option<&'a Threats>,
    /// Redaction rules.
    pub redactor: Option<&'a Redactor>,
}

/// A batch in flight between the request and the database.
pub struct Batch {
    /// The API key's name: stored with every row.
    pub producer: Arc<str>,
    pub received_at_us: i64,
    /// COPY BINARY rows, without header and trailer.
    pub rows: Bytes,
    /// Where each row ends in `rows` and which event it is. Only read when PostgreSQL refuses a row despite
    /// validation: the writer then isolates it and dead-letters its source text.
    pub row_refs: Vec<RowRef>,
    /// The decoded body text the rows came from (shared, not copied), and its format, to find an event's text.
    pub source: Bytes,
    pub format: Format,
    pub rejects: Vec<Reject>,
    /// The batch's share of queue capacity, released when it is committed.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Its share of the ingest memory budget (text and rows), released when it is committed.
    pub memory: Option<crate::pipeline::budget::Reservation>,
    /// Its identity (`pipeline::dedup`), recorded with its commit.
    pub identity: Option<crate::pipeline::dedup::Digest>,
    /// Its place in the spool, given back once it is committed.
    pub spooled: Option<crate::pipeline::spool::Ticket>,
    /// Its events for the live tail, published once committed; only while someone follows it.
    pub tail: Option<(Arc<TailHub>, TailBatch)>,
}

#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    pub row_end: u32,
    pub event_index: u32,
}

/// Accumulates one batch's rows and errors while its events stream past.
struct Builder<'l> {
    rows: Vec<u8>,
    row_refs: Vec<RowRef>,
    /// (event index, reason) of each rejected event.
    failed: Vec<(usize, String)>,
    receipt: Receipt,
    /// Bytes of error text listed in the receipt so far.
    listed_bytes: usize,
    producer: &'l Arc<str>,
    received_at_us: i64,
    limits: &'l BuildLimits,
    /// The events copied for the live tail, when it is followed.
    tail: Option<Capture>,
    /// GeoIP and ASN, when enrichment is on.
    geo: Option<&'l Geo>,
    /// The threat lists as loaded when the batch began.
    threats: Option<threat::Snapshot>,
    /// The tags of an event that matched a threat list, with the list's name added.
    tags_buf: String,
    redactor: Option<&'l Redactor>,
    /// What each redaction rule changed in this batch.
    redacted: redact::Counts,
    /// The tags of an event a redaction rule changed.
    redacted_tags: String,
}

impl Builder<'_> {
    fn add<'a>(
        &mut self,
        index: usize,
        collected: Result<&RawEvent<'a>, FieldError>,
        scratch: &'a mut Scratch,
    ) {
        let result = collected
            .and_then(|raw| finish_event(raw, self.received_at_us, &self.limits.fields, scratch));
        match result {
            Ok(mut event) => {
                let place =
                    |ip: Option<std::net::IpAddr>| self.geo.zip(ip).and_then(|(g, ip)| g.place(ip));
                let (src, dst) = (place(event.src_ip), place(event.dst_ip));
                let mut enriched = Enriched {
                    src: src.as_deref(),
                    dst: dst.as_deref(),
                    threat: None,
                };
                // Lists are matched with the addresses as sent, before redaction cuts them.
                let (on_src, on_dst) = match &self.threats {
                    Some(lists) => {
                        let hit =
                            |ip: Option<std::net::IpAddr>| ip.and_then(|ip| lists.matching(ip));
                        (hit(event.src_ip), hit(event.dst_ip))
                    }
                    None => (None, None),
                };
                if let Some(r) = self.redactor {
                    match r.apply(&mut event, &mut self.redacted) {
                        Some(Some(tags)) => {
                            self.redacted_tags = tags;
                            event.tags = Some(&self.redacted_tags);
                        }
                        Some(None) => event.tags = None,
                        None => {}
                    }
                }
                enriched.threat = on_src.or(on_dst).map(|n| &**n);
                if enriched.threat.is_some() {
                    with_threat_tags(&mut self.tags_buf, event.tags, on_src, on_dst);
                    event.tags = Some(&self.tags_buf);
                }
                encode_row(
                    &mut self.rows,
                    &event,
                    self.received_at_us,
                    self.producer,
                    &enriched,
                );
                // Only while a tail is open: its filters per event, and a copy within its rate.
                if let Some(tail) = &mut self.tail {
                    tail.offer(&event, self.producer, &enriched);
                }
                self.receipt.accepted += 1;
                self.row_refs.push(RowRef {
                    row_end: self.rows.len() as u32,
                    event_index: index as u32,
                });
            }
            Err(e) => {
                let reason = e.to_string();
                self.receipt.rejected += 1;
                let error = shortened(&reason);
                if self.receipt.errors.len() < self.limits.max_errors
                    && self.listed_bytes + error.len() <= LISTED_ERROR_BYTES
                {
                    self.listed_bytes += error.len();
                    self.receipt.errors.push(EventError { index, error });
                } else {
                    self.receipt.errors_omitted += 1;
                }
                self.failed.push((index, reason));
            }
        }
    }
}

/// `tags` with the names of the lists each side matched (`threat_src`, `threat_dst`) added, into `out`. List
/// names are letters, digits and `-_.`: nothing to escape.
fn with_threat_tags(
    out: &mut String,
    tags: Option<&str>,
    on_src: Option<&std::sync::Arc<str>>,
    on_dst: Option<&std::sync::Arc<str>>,
) {
    out.clear();
    let body = tags
        .and_then(|t| t.trim_end().strip_suffix('}'))
        .unwrap_or("{");
    out.push_str(body);
    let mut first = body.trim_end() == "{";
    for (key, list) in [("threat_src", on_src), ("threat_dst", on_dst)] {
        if let Some(list) = list {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "\"{key}\":\"{list}\"");
        }
    }
    out.push('}');
}

/// An event (or a whole body) that goes to `ingest_rejects`.
#[derive(Debug, Clone)]
pub struct Reject {
    pub producer: Arc<str>,
    pub received_at_us: i64,
    /// Position in the batch; `None` for a body that could not be decoded at all.
    pub event_index: Option<i32>,
    pub reason: String,
    pub raw: Bytes,
    pub raw_truncated: bool,
}

impl Reject {
    pub fn new(
        producer: Arc<str>,
        received_at_us: i64,
        event_index: Option<i32>,
        reason: String,
        raw: Bytes,
        cap: usize,
    ) -> Self {
        let raw_truncated = raw.len() > cap;
        let raw = if raw_truncated { raw.slice(..cap) } else { raw };
        Self {
            producer,
            received_at_us,
            event_index,
            reason,
            raw,
            raw_truncated,
        }
    }
}

/// Error text listed in one answer at most: with the counts, the answer stays well under the 4,096 bytes
/// Fluent Bit reads of a response (a longer one fails its flush, and it sends the whole batch again).
const LISTED_ERROR_BYTES: usize = 2_048;

/// One listed error's text at most, in bytes.
const ERROR_TEXT_BYTES: usize = 200;

/// `reason`, cut at [`ERROR_TEXT_BYTES`] on a character boundary.
fn shortened(reason: &str) -> String {
    if reason.len() <= ERROR_TEXT_BYTES {
        return reason.to_string();
    }
    let mut end = ERROR_TEXT_BYTES - 3;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// What the client is told about one rejected event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventError {
    pub index: usize,
    pub error: String,
}

/// The acknowledgement body of a batch.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct Receipt {
    pub accepted: usize,
    pub rejected: usize,
    /// The first rejected events, by index, each with its reason; every one is kept in `ingest_rejects`.
    pub errors: Vec<EventError>,
    /// Rejected events not listed in `errors` (the answer stays short); they are in `ingest_rejects` too.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
    /// This very batch was accepted before (a client's retry): it is stored once.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// The actions of an Elasticsearch `_bulk` body, for its per-item answer.
    #[serde(skip)]
    pub bulk_items: Vec<crate::decode::bulk::Item>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Settings for building batches.
#[derive(Debug, Clone, Copy)]
pub struct BuildLimits {
    pub fields: Limits,
    /// Most errors listed in one answer; every rejected event is dead-lettered regardless.
    pub max_errors: usize,
    /// Raw payload bytes kept per dead letter.
    pub dead_letter_max_bytes: usize,
}

impl Batch {
    /// Validates and encodes every event of `text` (the UTF-8 view of `source`). Fails only when the body as a
    /// whole cannot be decoded; a bad event is that event's error.
    pub fn build(
        source: Bytes,
        text: &str,
        format: Format,
        producer: Arc<str>,
        received_at_us: i64,
        limits: &BuildLimits,
    ) -> Result<(Batch, Receipt), DecodeError> {
        Batch::build_for(
            source,
            text,
            format,
            producer,
            received_at_us,
            limits,
            Extras::default(),
        )
    }

    /// [`Batch::build`], with enrichment and a copy of its events for the tail's followers.
    pub fn build_for(
        source: Bytes,
        text: &str,
        format: Format,
        producer: Arc<str>,
        received_at_us: i64,
        limits: &BuildLimits,
        extras: Extras<'_>,
    ) -> Result<(Batch, Receipt), DecodeError> {
        let Extras {
            tail,
            geo,
            threats,
            redactor,
        } = extras;
        let capture = tail.and_then(|t| t.capture());
        let mut b = Builder {
            // A binary row is no longer than its JSON (key names outweigh length prefixes), so this is one
            // allocation per batch; growing it would copy the rows again (10% of build time when sized at half).
            rows: Vec::with_capacity(text.len() + 1024),
            row_refs: Vec::new(),
            failed: Vec::new(),
            receipt: Receipt::default(),
            listed_bytes: 0,
            producer: &producer,
            received_at_us,
            limits,
            tail: capture,
            geo,
            threats: threats.map(Threats::snapshot),
            tags_buf: String::new(),
            redactor,
            redacted: redactor.map(Redactor::counts).unwrap_or_default(),
            redacted_tags: String::new(),
        };
        let mut scratch = Scratch::default();
        if decode::is_array(text, format) {
            event::for_each_in_array(text, &mut scratch, |index, collected, scratch| {
                b.add(index, collected, scratch)
            })
            .map_err(|e| decode::json_error(text, &e))?;
        } else {
            for (index, record) in decode::split(text, format)?.into_iter().enumerate() {
                scratch.clear_unknown();
                let collected = match record.error {
                    None => RawEvent::collect(record.text, scratch.unknown_mut()),
                    Some(e) => Err(FieldError::new("", e)),
                };
                match collected {
                    Ok(raw) => b.add(index, Ok(&raw), &mut scratch),
                    Err(e) => b.add(index, Err(e), &mut scratch),
                }
            }
        }
        let Builder {
            rows,
            row_refs,
            failed,
            receipt,
            tail: tail_events,
            mut redacted,
            ..
        } = b;
        let mut rejects = Vec::with_capacity(failed.len());
        if !failed.is_empty() {
            // The single pass keeps no spans; find the rejected events' text again (rare path).
            let records = decode::split(text, format)?;
            for (index, reason) in failed {
                let raw = records
                    .get(index)
                    .map_or_else(Bytes::new, |r| source.slice_ref(r.text.as_bytes()));
                let raw = match redactor {
                    Some(r) => Bytes::from(r.text(&raw, &mut redacted)),
                    None => raw,
                };
                rejects.push(Reject::new(
                    producer.clone(),
                    received_at_us,
                    Some(index as i32),
                    reason,
                    raw,
                    limits.dead_letter_max_bytes,
                ));
            }
        }
        if let Some(r) = redactor {
            r.record(&redacted);
        }
        let batch = Batch {
            producer,
            received_at_us,
            rows: Bytes::from(rows),
            row_refs,
            // Redacted, a batch keeps no text as sent: a row PostgreSQL refuses is dead-lettered from its
            // (redacted) values instead.
            source: if redactor.is_some() {
                Bytes::new()
            } else {
                source
            },
            format,
            rejects,
            permit: None,
            memory: None,
            identity: None,
            spooled: None,
            tail: tail.cloned().zip(tail_events.and_then(Capture::finish)),
        };
        Ok((batch, receipt))
    }

    /// A batch that only carries dead letters (an undecodable body).
    pub fn rejects_only(producer: Arc<str>, received_at_us: i64, rejects: Vec<Reject>) -> Batch {
        Batch {
            producer,
            received_at_us,
            rows: Bytes::new(),
            row_refs: Vec::new(),
            source: Bytes::new(),
            format: Format::Json,
            rejects,
            permit: None,
            memory: None,
            identity: None,
            spooled: None,
            tail: None,
        }
    }

    pub fn row_count(&self) -> usize {
        self.row_refs.len()
    }

    /// Queue capacity this batch takes: one unit per row or dead letter, at least one.
    pub fn weight(&self) -> usize {
        (self.row_refs.len() + self.rejects.len()).max(1)
    }

    /// Splits into single rows, for isolating a row PostgreSQL refuses.
    pub fn single_rows(&self) -> Vec<SingleRow> {
        let text = decode::as_text(&self.source).ok();
        let records = text
            .and_then(|t| decode::split(t, self.format).ok())
            .unwrap_or_default();
        let mut start = 0usize;
        self.row_refs
            .iter()
            .map(move |r| {
                let row = self.rows.slice(start..r.row_end as usize);
                start = r.row_end as usize;
                let source = records.get(r.event_index as usize).map_or_else(
                    || Bytes::from(crate::pipeline::copy::row_json(&row)),
                    |rec| self.source.slice_ref(rec.text.as_bytes()),
                );
                SingleRow {
                    row,
                    source,
                    producer: self.producer.clone(),
                    received_at_us: self.received_at_us,
                    event_index: r.event_index as i32,
                }
            })
            .collect()
    }
}

/// One encoded row with what is needed to dead-letter it.
#[derive(Clone)]
pub struct SingleRow {
    pub row: Bytes,
    pub source: Bytes,
    pub producer: Arc<str>,
    pub received_at_us: i64,
    pub event_index: i32,
}
