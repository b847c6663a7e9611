//! One request's worth of work for the writer: validated events already encoded as COPY rows, and the
//! rejected ones kept raw for the dead-letter table.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::decode::Record;
use crate::event::{parse_event, Limits, Scratch};
use crate::pipeline::copy::encode_row;

/// A batch in flight between the request and the database.
pub struct Batch {
    /// The API key's name: stored with every row.
    pub producer: Arc<str>,
    pub received_at_us: i64,
    /// COPY BINARY rows, without header and trailer.
    pub rows: Bytes,
    /// Where each row ends in `rows` and where its source text is in `source`. Only read when PostgreSQL refuses
    /// a row despite validation: the writer then isolates it and dead-letters its source text.
    pub row_refs: Vec<RowRef>,
    /// The decoded body text the rows came from (shared, not copied).
    pub source: Bytes,
    pub rejects: Vec<Reject>,
    /// The batch's share of queue capacity, released when it is committed.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, Copy)]
pub struct RowRef {
    pub row_end: u32,
    pub src_start: u32,
    pub src_end: u32,
    pub event_index: u32,
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

/// What the client is told about one rejected event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventError {
    pub index: usize,
    pub error: String,
}

/// The acknowledgement body of a batch.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Receipt {
    pub accepted: usize,
    pub rejected: usize,
    pub errors: Vec<EventError>,
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
    /// Validates and encodes every record of `text` (which `records` borrow from; `source` holds the same bytes).
    pub fn build(
        source: Bytes,
        text: &str,
        records: &[Record<'_>],
        producer: Arc<str>,
        received_at_us: i64,
        limits: &BuildLimits,
    ) -> (Batch, Receipt) {
        let base = text.as_ptr() as usize;
        // ~200 bytes per encoded row for typical events; one allocation per batch, grown rarely.
        let mut rows = BytesMut::with_capacity(records.len() * 200);
        let mut row_refs = Vec::with_capacity(records.len());
        let mut rejects = Vec::new();
        let mut receipt = Receipt::default();
        let mut scratch = Scratch::default();
        for (index, record) in records.iter().enumerate() {
            let result = match &record.error {
                None => parse_event(record.text, received_at_us, &limits.fields, &mut scratch)
                    .map(|event| encode_row(&mut rows, &event, received_at_us, &producer))
                    .map_err(|e| e.to_string()),
                Some(e) => Err(e.clone()),
            };
            let src_start = record.text.as_ptr() as usize - base;
            let src_end = src_start + record.text.len();
            match result {
                Ok(()) => {
                    receipt.accepted += 1;
                    row_refs.push(RowRef {
                        row_end: rows.len() as u32,
                        src_start: src_start as u32,
                        src_end: src_end as u32,
                        event_index: index as u32,
                    });
                }
                Err(reason) => {
                    receipt.rejected += 1;
                    if receipt.errors.len() < limits.max_errors {
                        receipt.errors.push(EventError {
                            index,
                            error: reason.clone(),
                        });
                    }
                    let raw = source.slice(src_start..src_end);
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
        }
        let batch = Batch {
            producer,
            received_at_us,
            rows: rows.freeze(),
            row_refs,
            source,
            rejects,
            permit: None,
        };
        (batch, receipt)
    }

    /// A batch that only carries dead letters (an undecodable body).
    pub fn rejects_only(producer: Arc<str>, received_at_us: i64, rejects: Vec<Reject>) -> Batch {
        Batch {
            producer,
            received_at_us,
            rows: Bytes::new(),
            row_refs: Vec::new(),
            source: Bytes::new(),
            rejects,
            permit: None,
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
    pub fn single_rows(&self) -> impl Iterator<Item = SingleRow> + '_ {
        let mut start = 0usize;
        self.row_refs.iter().map(move |r| {
            let row = self.rows.slice(start..r.row_end as usize);
            start = r.row_end as usize;
            SingleRow {
                row,
                source: self.source.slice(r.src_start as usize..r.src_end as usize),
                producer: self.producer.clone(),
                received_at_us: self.received_at_us,
                event_index: r.event_index as i32,
            }
        })
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
