//! A request body as received → a batch of encoded rows and dead letters, and the receipt for the client. The
//! handler runs it on a request, and the spool runs it again on a record it replays: the same bytes, headers and
//! receive time give the same batch.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::decode::{self, DecodeError, Encoding, Format};
use crate::pipeline::batch::{Batch, BuildLimits, Receipt};
use crate::pipeline::budget::{MemoryBudget, Reservation};

/// What decoding a body needs besides the body.
#[derive(Debug, Clone)]
pub struct Intake {
    pub limits: BuildLimits,
    pub max_decompressed_bytes: usize,
    pub memory: MemoryBudget,
    /// The live tail, whose followers get a copy of each committed batch's events.
    pub tail: Option<std::sync::Arc<crate::pipeline::tail::TailHub>>,
    /// GeoIP and ASN enrichment, when its databases are configured.
    pub geo: Option<std::sync::Arc<crate::enrich::Geo>>,
    /// Redaction rules, when any is set.
    pub redactor: Option<std::sync::Arc<crate::enrich::Redactor>>,
    /// Threat lists, when configured.
    pub threats: Option<std::sync::Arc<crate::enrich::Threats>>,
}

/// The request headers decoding reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyHeaders<'h> {
    pub content_type: Option<&'h str>,
    pub content_encoding: Option<&'h str>,
}

impl Intake {
    /// Decodes `body`; `memory` grows with the decompressed text and the encoded rows, and ends holding what
    /// the batch keeps until it is committed.
    pub fn prepare(
        &self,
        body: &Bytes,
        headers: BodyHeaders<'_>,
        producer: &Arc<str>,
        received_at_us: i64,
        memory: &mut Reservation,
    ) -> Result<(Batch, Receipt), DecodeError> {
        let encoding = Encoding::from_header(headers.content_encoding)?;
        let format = Format::from_content_type(headers.content_type);
        let compressed = body.len();
        let plain = match decode::decompress_within(
            body,
            encoding,
            self.max_decompressed_bytes,
            &mut |bytes| memory.grow_to(compressed + bytes).is_ok(),
        )? {
            Cow::Borrowed(_) => body.clone(),
            Cow::Owned(v) => Bytes::from(v),
        };
        // Transcoding builds trees several times the text's size: that memory is taken before, not found after.
        let transient = plain.len().saturating_mul(format.transcoding_overhead());
        memory
            .grow_to(compressed + plain.len() + transient)
            .map_err(|_| DecodeError::OverBudget)?;
        let (text, bulk_items) = decode::transcode(plain, format)?;
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
        // msgpack, `_bulk` and OTLP were transcoded to a JSON array.
        let format = format.transcoded();
        let mut built = Batch::build_for(
            text.clone(),
            s,
            format,
            producer.clone(),
            received_at_us,
            &self.limits,
            crate::pipeline::batch::Extras {
                tail: self.tail.as_ref(),
                geo: self.geo.as_deref(),
                threats: self.threats.as_deref(),
                redactor: self.redactor.as_deref(),
            },
        )?;
        built.1.bulk_items = bulk_items;
        // What stays until the commit: the text and the rows' buffer, sized from the text (the compressed body
        // is dropped with the request).
        let (batch, _) = &built;
        memory.shrink_to(batch.source.len() + s.len() + 1024);
        Ok(built)
    }
}
