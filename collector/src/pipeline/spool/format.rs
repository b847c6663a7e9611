//! The spool's on-disk format, and reading it back whatever state a crash or a bad disk left it in.
//!
//! A segment is a file `<its number, 16 hex digits>.spool` (numbered in the order they are made): a 16-byte header (magic, format version), then
//! records. A record is framed as
//!
//! ```text
//! magic u32 | payload length u32 | crc32 of the payload u32 | payload
//! payload: version u8 | sequence u64 | received_at_us i64 | identity [u8; 16]
//!          | producer (u16 length, bytes) | content-type (u16, bytes) | content-encoding (u16, bytes) | body
//! ```
//!
//! all integers little-endian. The body is the request body exactly as received (still compressed), so a record
//! is smaller than the batch it becomes, and replaying it runs the same decoding the request did (version 1).
//! With redaction on, what was sent must not reach the disk: the record holds the batch as built instead, its
//! redacted COPY rows and dead letters (version 2, [`encode_batch`]), and a replay queues them as they are.
//!
//! A segment file is preallocated with zeros (so that an fsync after a write does not also commit the file's
//! new size to the filesystem journal, which waits behind every other writer on the disk); zeros where a frame
//! would start are the end of what was written.
//!
//! Reading stops trusting the bytes at the first frame that does not check (a torn tail from a crash mid-write,
//! a flipped byte): it looks for the next frame that does, and says how many bytes it skipped and why. Every
//! whole record before the damage is returned; a record is returned only if its checksum matches, so damage
//! never yields a record that was not written (short of a 1 in 2^32 checksum collision).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::pipeline::batch::{Batch, Reject, RowRef};
use crate::pipeline::dedup::Digest;

pub const SEGMENT_MAGIC: &[u8; 8] = b"SLSPOOL\0";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 16;
const RECORD_MAGIC: u32 = 0x5245_434c; // "LCER" on disk
const FRAME_LEN: usize = 12;
/// The version of a payload holding a request body.
pub const RECORD_VERSION: u8 = 1;
/// The version of a payload holding a built batch ([`encode_batch`]).
pub const BATCH_VERSION: u8 = 2;

/// What a record's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// The request body as received.
    #[default]
    Request,
    /// A batch as built ([`encode_batch`]): written when redaction is on.
    Batch,
}
/// The fixed part of a payload before the strings: version, sequence, time, identity.
const FIXED_LEN: usize = 1 + 8 + 8 + 16;

/// One acknowledged request, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub received_at_us: i64,
    pub identity: Digest,
    pub producer: String,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub kind: Kind,
    pub body: Bytes,
}

/// The header every segment starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// The file name of segment number `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:016x}.spool")
}

/// A segment's number from its file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".spool")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Appends `record`'s frame to `out`; returns its length. Strings longer than 65,535 bytes are cut (a header
/// value or key name never is).
pub fn encode(out: &mut BytesMut, r: &Record) -> usize {
    let n = encode_head(out, r);
    out.put_slice(&r.body);
    n
}

/// Appends `record`'s frame up to its body, which must follow it on disk (the appender writes the body from
/// the request's own buffer instead of copying it); returns the whole frame's length, body included.
pub fn encode_head(out: &mut BytesMut, r: &Record) -> usize {
    let start = out.len();
    fn field(s: Option<&str>) -> &[u8] {
        let b = s.unwrap_or_default().as_bytes();
        &b[..b.len().min(u16::MAX as usize)]
    }
    let (producer, ctype, cenc) = (
        field(Some(&r.producer)),
        field(r.content_type.as_deref()),
        field(r.content_encoding.as_deref()),
    );
    let payload_len = frame_len(r) - FRAME_LEN;
    out.reserve(FRAME_LEN + payload_len - r.body.len());
    out.put_u32_le(RECORD_MAGIC);
    out.put_u32_le(u32::try_from(payload_len).unwrap_or(u32::MAX));
    out.put_u32_le(0); // checksum, filled below
    let payload_start = out.len();
    out.put_u8(match r.kind {
        Kind::Request => RECORD_VERSION,
        Kind::Batch => BATCH_VERSION,
    });
    out.put_u64_le(r.seq);
    out.put_i64_le(r.received_at_us);
    out.put_slice(&r.identity);
    for s in [producer, ctype, cenc] {
        out.put_u16_le(s.len() as u16);
        out.put_slice(s);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[payload_start..]);
    crc.update(&r.body);
    let crc = crc.finalize();
    out[payload_start - 4..payload_start].copy_from_slice(&crc.to_le_bytes());
    out.len() - start + r.body.len()
}

/// The length of the frame [`encode`] writes for `r`.
pub fn frame_len(r: &Record) -> usize {
    let field = |s: Option<&str>| s.map_or(0, |s| s.len().min(u16::MAX as usize));
    FRAME_LEN
        + FIXED_LEN
        + 6
        + field(Some(&r.producer))
        + field(r.content_type.as_deref())
        + field(r.content_encoding.as_deref())
        + r.body.len()
}

/// Bytes a read skipped, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: usize,
    pub bytes: usize,
    pub reason: String,
}

/// What reading a segment's bytes found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whole records with their offsets, in file order.
    pub records: Vec<(usize, Record)>,
    /// Where the last whole record ends: appending continues here.
    pub end: usize,
    pub damage: Vec<Damage>,
}

impl Scan {
    /// A file none of whose `len` bytes can be read, and why.
    fn unreadable(len: usize, reason: String) -> Scan {
        Scan {
            records: Vec::new(),
            end: 0,
            damage: vec![Damage {
                offset: 0,
                bytes: len,
                reason,
            }],
        }
    }

    pub fn damaged_bytes(&self) -> usize {
        self.damage.iter().map(|d| d.bytes).sum()
    }
}

/// Reads a whole segment (header included).
pub fn scan_segment(bytes: &Bytes) -> Scan {
    if bytes.len() < SEGMENT_HEADER_LEN || bytes[..8] != SEGMENT_MAGIC[..] {
        let reason = if bytes.is_empty() {
            "empty file"
        } else {
            "not a spool segment (no header)"
        };
        return Scan::unreadable(bytes.len(), reason.into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != SEGMENT_VERSION {
        let reason =
            format!("segment format version {version}, this collector reads {SEGMENT_VERSION}");
        return Scan::unreadable(bytes.len(), reason);
    }
    scan_records(bytes, SEGMENT_HEADER_LEN)
}

/// Reads records from `from` to the end of `bytes`.
pub fn scan_records(bytes: &Bytes, from: usize) -> Scan {
    let mut scan = Scan {
        end: from,
        ..Scan::default()
    };
    let mut at = from;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            Ok((record, len)) => {
                scan.records.push((at, record));
                at += len;
                scan.end = at;
            }
            // The zeros a segment is preallocated with: the end of what was written.
            Err(_) if bytes[at..].iter().all(|&b| b == 0) => break,
            Err(reason) => {
                // Resynchronise on the next frame that checks; everything between is reported, except the
                // preallocated zeros at the end.
                let next = (at + 1..bytes.len())
                    .filter(|&i| bytes[i..].starts_with(&RECORD_MAGIC.to_le_bytes()))
                    .find(|&i| frame_at(bytes, i).is_ok());
                let damaged_to = next
                    .unwrap_or_else(|| bytes.iter().rposition(|&b| b != 0).map_or(at, |i| i + 1));
                scan.damage.push(Damage {
                    offset: at,
                    bytes: damaged_to - at,
                    reason,
                });
                at = next.unwrap_or(bytes.len());
            }
        }
    }
    scan
}

/// The record framed at `at`, and the frame's length; or why there is none.
fn frame_at(bytes: &Bytes, at: usize) -> Result<(Record, usize), String> {
    let rest = &bytes[at..];
    if rest.len() < FRAME_LEN {
        return Err(format!(
            "{} bytes, shorter than a record's frame (torn write)",
            rest.len()
        ));
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    if word(0) != RECORD_MAGIC {
        return Err("no record starts here (corrupt bytes)".into());
    }
    let len = word(4) as usize;
    if rest.len() - FRAME_LEN < len {
        return Err(format!(
            "a record of {len} bytes with only {} written (torn write)",
            rest.len() - FRAME_LEN
        ));
    }
    let payload = bytes.slice(at + FRAME_LEN..at + FRAME_LEN + len);
    if crc32fast::hash(&payload) != word(8) {
        return Err("checksum mismatch (corrupt bytes)".into());
    }
    let record = parse_payload(&payload)?;
    Ok((record, FRAME_LEN + len))
}

fn parse_payload(p: &Bytes) -> Result<Record, String> {
    if p.len() < FIXED_LEN + 6 {
        return Err("record too short".into());
    }
    let kind = match p[0] {
        RECORD_VERSION => Kind::Request,
        BATCH_VERSION => Kind::Batch,
        v => {
            return Err(format!(
            "record format version {v}, this collector reads {RECORD_VERSION} and {BATCH_VERSION}"
        ))
        }
    };
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let mut identity = [0u8; 16];
    identity.copy_from_slice(&p[17..33]);
    let mut at = FIXED_LEN;
    let mut text = || -> Result<String, String> {
        if p.len() < at + 2 {
            return Err("record too short".into());
        }
        let n = u16::from_le_bytes([p[at], p[at + 1]]) as usize;
        at += 2;
        let s = p
            .get(at..at + n)
            .ok_or("record too short")
            .and_then(|b| std::str::from_utf8(b).map_err(|_| "a header is not UTF-8"))?;
        at += n;
        Ok(s.to_string())
    };
    let producer = text()?;
    let content_type = Some(text()?).filter(|s| !s.is_empty());
    let content_encoding = Some(text()?).filter(|s| !s.is_empty());
    Ok(Record {
        seq: u64_at(1),
        received_at_us: u64_at(9) as i64,
        identity,
        producer,
        content_type,
        content_encoding,
        kind,
        body: p.slice(at..),
    })
}

/// A batch's rows and dead letters as a record body:
///
/// ```text
/// rows length u32 | rows | row count u32 | (row end u32, event index u32)*
/// | dead letters u32 | (event index i32, -1 for none | truncated u8 | reason (u32 length, bytes) | raw (u32, bytes))*
/// ```
pub fn encode_batch(batch: &Batch) -> Bytes {
    let rejects: usize = batch
        .rejects
        .iter()
        .map(|r| 13 + r.reason.len() + r.raw.len())
        .sum();
    let mut out =
        BytesMut::with_capacity(12 + batch.rows.len() + batch.row_refs.len() * 8 + rejects);
    out.put_u32_le(batch.rows.len() as u32);
    out.put_slice(&batch.rows);
    out.put_u32_le(batch.row_refs.len() as u32);
    for r in &batch.row_refs {
        out.put_u32_le(r.row_end);
        out.put_u32_le(r.event_index);
    }
    out.put_u32_le(batch.rejects.len() as u32);
    for r in &batch.rejects {
        out.put_i32_le(r.event_index.unwrap_or(-1));
        out.put_u8(u8::from(r.raw_truncated));
        for part in [r.reason.as_bytes(), &r.raw[..]] {
            out.put_u32_le(part.len() as u32);
            out.put_slice(part);
        }
    }
    out.freeze()
}

/// The batch [`encode_batch`] wrote, sharing `body`'s bytes.
pub fn decode_batch(
    body: &Bytes,
    producer: Arc<str>,
    received_at_us: i64,
) -> Result<Batch, String> {
    let short = || "batch record too short".to_string();
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<u32, String> {
        let b = body.get(*at..*at + 4).ok_or_else(short)?;
        *at += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let take = |at: &mut usize, n: usize| -> Result<Bytes, String> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= body.len())
            .ok_or_else(short)?;
        let b = body.slice(*at..end);
        *at = end;
        Ok(b)
    };
    let n = u32_at(&mut at)? as usize;
    let rows = take(&mut at, n)?;
    let refs = u32_at(&mut at)? as usize;
    let mut row_refs = Vec::with_capacity(refs.min(body.len() / 8));
    for _ in 0..refs {
        let row_end = u32_at(&mut at)?;
        let event_index = u32_at(&mut at)?;
        if row_end as usize > rows.len() {
            return Err("a row ends past the rows".into());
        }
        row_refs.push(RowRef {
            row_end,
            event_index,
        });
    }
    let count = u32_at(&mut at)? as usize;
    let mut rejects = Vec::with_capacity(count.min(body.len() / 13));
    for _ in 0..count {
        let index = u32_at(&mut at)? as i32;
        let truncated = take(&mut at, 1)?[0] != 0;
        let n = u32_at(&mut at)? as usize;
        let reason = String::from_utf8_lossy(&take(&mut at, n)?).into_owned();
        let n = u32_at(&mut at)? as usize;
        let raw = take(&mut at, n)?;
        rejects.push(Reject {
            producer: producer.clone(),
            received_at_us,
            event_index: (index >= 0).then_some(index),
            reason,
            raw,
            raw_truncated: truncated,
        });
    }
    let mut batch = Batch::rejects_only(producer, received_at_us, rejects);
    batch.rows = rows;
    batch.row_refs = row_refs;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, body: &str) -> Record {
        Record {
            seq,
            received_at_us: 1_700_000_000_000_000 + seq as i64,
            identity: [seq as u8; 16],
            producer: "p".into(),
            content_type: Some("application/json".into()),
            content_encoding: None,
            kind: Kind::Request,
            body: Bytes::from(body.to_string()),
        }
    }

    fn segment(records: &[Record]) -> BytesMut {
        let mut out = BytesMut::from(&segment_header()[..]);
        for r in records {
            encode(&mut out, r);
        }
        out
    }

    #[test]
    fn records_round_trip_and_damage_is_skipped_and_reported() {
        let rs: Vec<Record> = (1..=3)
            .map(|i| record(i, &"x".repeat(i as usize * 10)))
            .collect();
        let whole = segment(&rs).freeze();
        let scan = scan_segment(&whole);
        assert_eq!(
            scan.records
                .iter()
                .map(|(_, r)| r.clone())
                .collect::<Vec<_>>(),
            rs
        );
        assert_eq!(scan.end, whole.len());
        assert!(scan.damage.is_empty());

        // A flipped byte in the second record's body: the first and third are kept.
        let second = scan.records[1].0;
        let mut flipped = BytesMut::from(&whole[..]);
        flipped[second + FRAME_LEN + 40] ^= 0x20;
        let scan = scan_segment(&flipped.freeze());
        let seqs: Vec<u64> = scan.records.iter().map(|(_, r)| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(scan.damage.len(), 1);
        assert!(
            scan.damage[0].reason.contains("checksum"),
            "{:?}",
            scan.damage
        );

        // Torn in the middle of the last record: two whole records, the rest reported.
        let torn = whole.slice(..whole.len() - 5);
        let scan = scan_segment(&torn);
        let third = scan_segment(&whole).records[2].0;
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.end, third);
        assert!(scan.damage[0].reason.contains("torn"), "{:?}", scan.damage);
        assert_eq!(scan.damaged_bytes(), torn.len() - scan.end);

        // Preallocated zeros after the records are not damage; after a torn record they are not counted.
        let mut zeroed = BytesMut::from(&whole[..]);
        zeroed.resize(whole.len() + 4096, 0);
        let scan = scan_segment(&zeroed.freeze());
        assert_eq!((scan.records.len(), scan.end), (3, whole.len()));
        assert!(scan.damage.is_empty(), "{:?}", scan.damage);
        let mut torn_zeroed = BytesMut::from(&torn[..]);
        torn_zeroed.resize(whole.len() + 4096, 0);
        let scan = scan_segment(&torn_zeroed.freeze());
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.damaged_bytes(), torn.len() - third);

        assert!(scan_segment(&Bytes::new()).records.is_empty());
        assert!(
            scan_segment(&Bytes::from_static(b"hello, world, not a segment"))
                .records
                .is_empty()
        );
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("notes.txt"), None);
    }
}
