//! Bytes → records: decompression with size caps, then the body's shape (JSON array, `{"events":[…]}` /
//! `{"logs":[…]}` / any object whose only member is an array, a single object, NDJSON, Fluent Bit msgpack,
//! Elasticsearch `_bulk`, OTLP) → one JSON object text per event.

pub mod bulk;
mod compress;
mod msgpack;
pub mod otlp;

use bytes::Bytes;
use serde_json::value::RawValue;

pub use compress::{decompress, decompress_within, Encoding};

/// Why a body cannot be decoded at all. Each message says where (byte offset, line, column).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported Content-Encoding {0:?}: use gzip, zstd, deflate, snappy or none")]
    UnsupportedEncoding(String),
    #[error("body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("{encoding} body is corrupt: {detail}")]
    Corrupt {
        encoding: &'static str,
        detail: String,
    },
    #[error("body is not valid UTF-8 at byte offset {offset}")]
    NotUtf8 { offset: usize },
    #[error("body is empty")]
    Empty,
    /// Memory for it is not available now (see `pipeline::budget`): the client retries.
    #[error(
        "the collector holds its whole ingest memory budget (COLLECTOR_MEMORY_BUDGET_BYTES) in requests and \
         queued batches; retry shortly"
    )]
    OverBudget,
    #[error("invalid JSON at byte offset {offset} (line {line}, column {column}): {detail}")]
    Json {
        offset: usize,
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("expected a JSON array of events, an object, or NDJSON; found {found:?} at byte offset {offset}")]
    Shape { found: char, offset: usize },
    #[error("invalid msgpack at byte offset {offset}: {detail}")]
    Msgpack { offset: usize, detail: String },
}

/// The body's declared format, from Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON of any accepted shape, told apart by content.
    Json,
    /// One JSON object per line, declared.
    NdJson,
    /// Fluent Bit's `Format msgpack`.
    Msgpack,
    /// Elasticsearch's `_bulk` NDJSON (`POST /_bulk`).
    EsBulk,
    /// OpenTelemetry logs (`POST /v1/logs`), JSON or protobuf.
    OtlpJson,
    OtlpProtobuf,
}

/// Content types that name the formats only some routes receive, as the spool keeps them with a request.
pub const ES_BULK: &str = "application/x-elasticsearch-bulk";
pub const OTLP_JSON: &str = "application/x-otlp-logs+json";
pub const OTLP_PROTOBUF: &str = "application/x-otlp-logs+protobuf";

impl Format {
    pub fn from_content_type(ct: Option<&str>) -> Self {
        let ct = ct
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-lines" => Format::NdJson,
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Format::Msgpack
            }
            ES_BULK => Format::EsBulk,
            OTLP_JSON => Format::OtlpJson,
            OTLP_PROTOBUF => Format::OtlpProtobuf,
            _ => Format::Json,
        }
    }

    /// Bytes [`transcode`] holds at most, besides its input and output, per byte of input: the decoded trees
    /// (msgpack values; OTLP messages and the JSON values made of them) outweigh the text several times.
    pub fn transcoding_overhead(self) -> usize {
        match self {
            Format::Json | Format::NdJson => 0,
            Format::EsBulk => 1,
            Format::Msgpack => 4,
            Format::OtlpJson | Format::OtlpProtobuf => 8,
        }
    }

    /// The format of the text [`to_json`] makes of a body in this one.
    pub fn transcoded(self) -> Format {
        match self {
            Format::NdJson => Format::NdJson,
            _ => Format::Json,
        }
    }
}

/// One event's source text, and why it could not be read when it is an unparsable NDJSON line (the rest of the
/// body still goes through).
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub text: &'a str,
    pub error: Option<String>,
}

impl<'a> Record<'a> {
    fn ok(text: &'a str) -> Self {
        Record { text, error: None }
    }
}

/// Turns a decompressed body into JSON text bytes: msgpack, `_bulk` and OTLP are transcoded to a JSON array of
/// events, JSON passes through unchanged.
pub fn to_json(body: Bytes, format: Format) -> Result<Bytes, DecodeError> {
    transcode(body, format).map(|(text, _)| text)
}

/// [`to_json`], with the actions of a `_bulk` body (empty for the other formats).
pub fn transcode(body: Bytes, format: Format) -> Result<(Bytes, Vec<bulk::Item>), DecodeError> {
    let text = match format {
        Format::Msgpack => Bytes::from(msgpack::to_json_array(&body)?),
        Format::EsBulk => {
            let (array, items) = bulk::to_json_array(as_text(&body)?)?;
            return Ok((Bytes::from(array), items));
        }
        Format::OtlpJson => Bytes::from(otlp::json_to_json_array(as_text(&body)?)?),
        Format::OtlpProtobuf => Bytes::from(otlp::protobuf_to_json_array(&body)?),
        Format::Json | Format::NdJson => body,
    };
    Ok((text, Vec::new()))
}

/// Checks that JSON bytes are UTF-8 and borrows them as text, without a leading byte-order mark (which some
/// Windows tools write and JSON parsers refuse).
pub fn as_text(body: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// The events of a wrapper object: `{"events":[…]}`, `{"logs":[…]}`, or an object whose only member is an array
/// (what Vector's `payload_prefix`/`payload_suffix` make of its JSON array, e.g. `{"data":` … `}`).
fn wrapped(object: &str) -> Option<Vec<&RawValue>> {
    let members: std::collections::BTreeMap<&str, &RawValue> = serde_json::from_str(object).ok()?;
    let array = match (members.get("events").or(members.get("logs")), members.len()) {
        (Some(array), _) => *array,
        (None, 1) => *members.values().next()?,
        _ => return None,
    };
    if !array.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(array.get()).ok()
}

/// Splits a JSON text into records.
pub fn split(text: &str, format: Format) -> Result<Vec<Record<'_>>, DecodeError> {
    let start = text.len()
        - text
            .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
            .len();
    let body = &text[start..];
    if body.trim_end().is_empty() {
        return Err(DecodeError::Empty);
    }
    if format == Format::NdJson {
        return lines(text);
    }
    match body.as_bytes()[0] {
        b'[' => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| json_error(text, &e))?;
            Ok(items.into_iter().map(|r| Record::ok(r.get())).collect())
        }
        b'{' => match serde_json::from_str::<&RawValue>(text) {
            Ok(one) => Ok(match wrapped(one.get()) {
                Some(items) => items.into_iter().map(|r| Record::ok(r.get())).collect(),
                None => vec![Record::ok(one.get())],
            }),
            // Several objects: NDJSON sent without its content type, as many shippers do.
            Err(e) if body.trim_end().contains('\n') => {
                let records = lines(text)?;
                if records.iter().all(|r| r.error.is_some()) {
                    return Err(json_error(text, &e));
                }
                Ok(records)
            }
            Err(e) => Err(json_error(text, &e)),
        },
        other => Err(DecodeError::Shape {
            found: other as char,
            offset: start,
        }),
    }
}

/// NDJSON: each non-blank line is one record; a line that is not valid JSON is that record's own error.
fn lines(text: &str) -> Result<Vec<Record<'_>>, DecodeError> {
    let mut out = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<&RawValue>(line) {
            Ok(v) => out.push(Record::ok(v.get())),
            Err(e) => out.push(Record {
                text: line,
                error: Some(format!(
                    "line {}: invalid JSON at column {}",
                    n + 1,
                    e.column()
                )),
            }),
        }
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(out)
}

/// Whether the body is a JSON array (decoded in one pass by [`crate::event::for_each_in_array`]).
pub fn is_array(text: &str, format: Format) -> bool {
    format != Format::NdJson
        && text
            .trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
            .starts_with('[')
}

/// A serde_json error as a positioned decode error.
pub fn json_error(text: &str, e: &serde_json::Error) -> DecodeError {
    let (line, column) = (e.line(), e.column());
    let offset = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        + column.saturating_sub(1);
    let detail = e.to_string();
    // serde_json appends " at line L column C"; we report position ourselves.
    let detail = detail
        .rsplit_once(" at line ")
        .map_or(detail.as_str(), |(d, _)| d)
        .to_string();
    DecodeError::Json {
        offset,
        line,
        column,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, f: Format) -> Vec<String> {
        split(text, f)
            .unwrap()
            .into_iter()
            .map(|r| match r.error {
                None => r.text.to_string(),
                Some(e) => format!("ERR {e}: {}", r.text),
            })
            .collect()
    }

    #[test]
    fn shapes() {
        assert_eq!(
            ok(r#" [{"a":1}, {"b":2}] "#, Format::Json),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(ok(r#"{"events":[{"a":1}]}"#, Format::Json), [r#"{"a":1}"#]);
        assert_eq!(ok(r#"{"logs":[{"a":1}]}"#, Format::Json), [r#"{"a":1}"#]);
        // Vector's payload_prefix `{"data":` and payload_suffix `}` around its array.
        assert_eq!(
            ok(r#"{"data":[{"a":1},{"b":2}]}"#, Format::Json),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        // An event with one member that is not an array is an event.
        assert_eq!(
            ok(r#"{"data":{"a":1}}"#, Format::Json),
            [r#"{"data":{"a":1}}"#]
        );
        assert_eq!(ok(r#"{"a":1}"#, Format::Json), [r#"{"a":1}"#]);
        assert_eq!(
            ok("{\"a\":1}\n{\"b\":2}", Format::Json),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(
            ok("{\"a\":1}\n\n{\"b\":2}\n", Format::NdJson),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
    }

    #[test]
    fn a_bad_ndjson_line_is_only_that_record() {
        let r = ok("{\"a\":1}\n{\"b\":\n{\"c\":3}", Format::NdJson);
        assert_eq!(r[0], r#"{"a":1}"#);
        assert_eq!(r[1], "ERR line 2: invalid JSON at column 5: {\"b\":");
        assert_eq!(r[2], r#"{"c":3}"#);
    }

    #[test]
    fn undecodable_bodies_say_where() {
        let e = split("[{\"a\":1},\n {\"b\": tru}]", Format::Json)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid JSON at byte offset 20 (line 2, column 11): expected ident"
        );
        assert!(matches!(split("  ", Format::Json), Err(DecodeError::Empty)));
        let e = split("hello", Format::Json).unwrap_err().to_string();
        assert_eq!(
            e,
            "expected a JSON array of events, an object, or NDJSON; found 'h' at byte offset 0"
        );
        assert!(matches!(
            as_text(b"[\xff]"),
            Err(DecodeError::NotUtf8 { offset: 1 })
        ));
    }
}
