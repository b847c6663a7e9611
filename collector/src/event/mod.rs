//! The canonical event: field names and aliases ([`fields`]), the decoding visitor that walks one JSON object
//! or array without copying ([`visitor`]), and validation and normalisation into typed values ([`normalize`]).
//!
//! Parsing happens in two phases so that nothing is copied on the hot path:
//! 1. [`RawEvent::collect`] walks the object once and keeps, for each canonical field, the borrowed JSON text of
//!    its value ([`Raw`]); keys it does not know are appended verbatim to the `tags` JSON being built. The walk
//!    is [`scan`]'s for the common shapes, and serde_json's ([`visitor`]) for the rest and for every error.
//! 2. [`RawEvent::normalize`] converts each kept span into its typed value, with a precise error naming the field.

mod fields;
pub mod jsonb;
mod normalize;
mod scan;
mod visitor;

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;

use fields::FIELD_COUNT;
use fields::NESTED;
pub use fields::{Field, FIELDS};
use normalize::{
    as_str, parse_int, parse_ip, parse_latency, parse_port, parse_seconds_as_ms, parse_text,
    parse_timestamp,
};
pub use scan::for_each_in_array;
use serde::de::Deserializer;
use visitor::CollectVisitor;

/// Most bytes one event may count in or out: 1 PiB, more than any one connection carries, and small enough that
/// rollup sums of millions of such events fit (they stop at [`crate::rollup::catalog::MAX_ROW_BYTES`]).
pub const MAX_EVENT_BYTES: i64 = 1 << 50;

/// Longest latency an event may report, in milliseconds: 30 days (a long-lived connection's duration). A larger
/// value is a unit error, and would skew every percentile of its bucket.
pub const MAX_LATENCY_MS: f64 = 2_592_000_000.0;

/// Length caps on string fields, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `protocol`, `service`, `host`: identifiers, not prose.
    pub max_short_bytes: usize,
    pub max_message_bytes: usize,
    /// The serialized `tags` object (known tags plus every unknown field).
    pub max_tags_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_short_bytes: 256,
            max_message_bytes: 65_536,
            max_tags_bytes: 65_536,
        }
    }
}

/// Why one event was rejected: the field (as the producer named it) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

/// A validated event, borrowing its strings from the request body where no unescaping was needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    /// Microseconds since the Unix epoch.
    pub ts_us: i64,
    pub src_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_ip: Option<IpAddr>,
    pub dst_port: Option<u16>,
    pub protocol: Option<Cow<'a, str>>,
    pub service: Option<Cow<'a, str>>,
    pub status: Option<i32>,
    pub bytes_in: Option<i64>,
    pub bytes_out: Option<i64>,
    pub latency_ms: Option<f64>,
    pub host: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
    /// The tags JSON object text, or `None` when there are no tags at all.
    pub tags: Option<&'a str>,
}

/// Phase 1 of parsing: the raw span of each canonical field, plus unknown fields written into `tags`.
#[derive(Default, Clone, Copy)]
pub struct RawEvent<'a> {
    slots: [Option<Slot<'a>>; FIELD_COUNT],
}

#[derive(Clone, Copy)]
struct Slot<'a> {
    key: &'a str,
    canonical: bool,
    /// A latency in seconds (see `fields::SECONDS_ALIASES`).
    seconds: bool,
    value: Raw<'a>,
}

/// The JSON text of one value as it was sent, without the whitespace around it. Always valid JSON: whichever
/// walked it (the scanner or serde_json) checked it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    pub(super) fn get(self) -> &'a str {
        self.0
    }
}

/// Reusable buffers, so that parsing a batch allocates per batch, not per event.
#[derive(Default)]
pub struct Scratch {
    tags: String,
    unknown: String,
    inner_src: String,
}

impl Scratch {
    pub fn clear_unknown(&mut self) {
        self.unknown.clear();
    }

    /// The buffer collecting unknown fields of the event being parsed.
    pub fn unknown_mut(&mut self) -> &mut String {
        &mut self.unknown
    }
}

/// A value that marks a field absent: JSON null, an empty string, or the `-` that web servers log for "none".
fn is_absent(raw: Raw<'_>) -> bool {
    matches!(raw.get(), "null" | "\"\"" | "\"-\"")
}

impl<'a> RawEvent<'a> {
    /// Walks one JSON object. Unknown keys (and values displaced by a higher-priority key for the same field)
    /// are appended to `tags` as `"key":value` pairs, verbatim.
    pub fn collect(json: &'a str, tags: &mut String) -> Result<Self, FieldError> {
        let mark = tags.len();
        if let Some(event) = scan::object(json, tags) {
            return Ok(event);
        }
        tags.truncate(mark);
        let mut de = serde_json::Deserializer::from_str(json);
        de.deserialize_map(CollectVisitor { tags })
            .map_err(|e| FieldError::new("", format!("not a JSON object: {e}")))
    }

    /// Takes one member of the event object: a field's value into its slot, anything else into `tags`.
    fn take(&mut self, key: &'a str, value: Raw<'a>, tags: &mut String) {
        match Field::lookup(key) {
            Some(_) if is_absent(value) => {}
            Some(named) => self.set(
                named.field,
                Slot {
                    key,
                    canonical: named.canonical,
                    seconds: named.seconds,
                    value,
                },
                tags,
            ),
            None => {
                if let Some((_, members)) = NESTED.iter().find(|(name, _)| *name == key) {
                    visitor::collect_nested(value, members, self);
                }
                push_tag(tags, key, value.get());
            }
        }
    }

    fn clear(&mut self) {
        self.slots = Default::default();
    }

    fn set(&mut self, field: Field, slot: Slot<'a>, tags: &mut String) {
        let idx = field as usize;
        let displaced = match self.slots[idx] {
            None => {
                self.slots[idx] = Some(slot);
                None
            }
            // The canonical name wins over an alias; otherwise the first key seen wins.
            Some(existing) if slot.canonical && !existing.canonical => {
                self.slots[idx] = Some(slot);
                Some(existing)
            }
            Some(_) => Some(slot),
        };
        if let Some(d) = displaced {
            push_tag(tags, d.key, d.value.get());
        }
    }

    /// Sets `field` only if no key has yet (a nested member yields to any top-level key); a displaced value is
    /// already in tags with its object.
    fn set_weak(&mut self, field: Field, slot: Slot<'a>) {
        let idx = field as usize;
        if self.slots[idx].is_none() {
            self.slots[idx] = Some(slot);
        }
    }

    /// Lets `inner` (an object unpacked from `message`) override this event's fields; displaced values go to tags.
    pub fn overlay(&mut self, inner: RawEvent<'a>, tags: &mut String) {
        for (idx, slot) in inner.slots.into_iter().enumerate() {
            if let Some(slot) = slot {
                if let Some(old) = self.slots[idx].replace(slot) {
                    // The agent's own `message` held the inner object: it is unpacked, not lost.
                    if idx != Field::Message as usize {
                        push_tag(tags, old.key, old.value.get());
                    }
                }
            }
        }
    }

    /// The `message` value when it is a string holding a JSON object (agents that did not parse the record).
    pub fn message_object(&self, buf: &mut String) -> bool {
        let Some(slot) = self.slots[Field::Message as usize] else {
            return false;
        };
        let Ok(Some(text)) = as_str(slot.value) else {
            return false;
        };
        let t = text.trim();
        if !(t.starts_with('{') && t.ends_with('}')) {
            return false;
        }
        buf.clear();
        buf.push_str(t);
        true
    }

    /// Phase 2: typed, validated values. `default_ts_us` applies when the event carries no timestamp.
    pub fn normalize(
        &self,
        tags: &'a str,
        default_ts_us: i64,
        limits: &Limits,
    ) -> Result<Event<'a>, FieldError> {
        let slot = |f: Field| self.slots[f as usize].filter(|s| !is_absent(s.value));
        let ts_us = match slot(Field::Timestamp) {
            Some(s) => parse_timestamp(s.value).map_err(|p| FieldError::new(s.key, p))?,
            None => default_ts_us,
        };
        let ip = |f| {
            slot(f)
                .map(|s| parse_ip(s.value).map_err(|p| FieldError::new(s.key, p)))
                .transpose()
        };
        let port = |f| {
            slot(f)
                .map(|s| parse_port(s.value).map_err(|p| FieldError::new(s.key, p)))
                .transpose()
        };
        let text = |f, max| {
            slot(f)
                .map(|s| parse_text(s.value, max).map_err(|p| FieldError::new(s.key, p)))
                .transpose()
        };
        let count = |f| {
            slot(f)
                .map(|s| {
                    parse_int(s.value, 0, MAX_EVENT_BYTES).map_err(|p| FieldError::new(s.key, p))
                })
                .transpose()
        };
        let status = slot(Field::Status)
            .map(|s| {
                parse_int(s.value, 0, i32::MAX as i64)
                    .map(|v| v as i32)
                    .map_err(|p| FieldError::new(s.key, p))
            })
            .transpose()?;
        let latency_ms = slot(Field::LatencyMs)
            .map(|s| {
                let parsed = if s.seconds {
                    parse_seconds_as_ms(s.value)
                } else {
                    parse_latency(s.value)
                };
                parsed.map_err(|p| FieldError::new(s.key, p))
            })
            .transpose()?;
        if tags.len() > limits.max_tags_bytes {
            return Err(FieldError::new(
                "tags",
                format!(
                    "tags (including unknown fields) are {} bytes, over the limit of {} bytes",
                    tags.len(),
                    limits.max_tags_bytes
                ),
            ));
        }
        let tags = (!tags.is_empty()).then_some(tags);
        Ok(Event {
            ts_us,
            src_ip: ip(Field::SrcIp)?,
            src_port: port(Field::SrcPort)?,
            dst_ip: ip(Field::DstIp)?,
            dst_port: port(Field::DstPort)?,
            // `TCP` (Suricata) and `tcp` (Zeek, Vector) are one protocol in every group-by.
            protocol: text(Field::Protocol, limits.max_short_bytes)?.map(lowercase_ascii),
            service: text(Field::Service, limits.max_short_bytes)?,
            status,
            bytes_in: count(Field::BytesIn)?,
            bytes_out: count(Field::BytesOut)?,
            latency_ms,
            host: text(Field::Host, limits.max_short_bytes)?,
            message: text(Field::Message, limits.max_message_bytes)?,
            tags,
        })
    }

    /// The `tags` object the producer sent, if any (merged into the final tags by [`finish_tags`]).
    fn tags_slot(&self) -> Option<Slot<'a>> {
        self.slots[Field::Tags as usize].filter(|s| !is_absent(s.value))
    }
}

/// `s` in ASCII lower case, copied only when it has an upper-case letter.
fn lowercase_ascii(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    }
}

fn push_tag(tags: &mut String, key: &str, raw_value: &str) {
    tags.push(if tags.is_empty() { '{' } else { ',' });
    write_json_string(tags, key);
    tags.push(':');
    tags.push_str(raw_value);
}

/// Closes the tags object: the producer's own `tags` object entries first, then the unknown fields.
/// Returns an error when `tags` is present but not an object.
fn finish_tags(event: &RawEvent<'_>, unknown: &str, out: &mut String) -> Result<(), FieldError> {
    out.clear();
    if let Some(slot) = event.tags_slot() {
        let text = slot.value.get();
        if !text.starts_with('{') {
            return Err(FieldError::new(slot.key, "expected a JSON object of tags"));
        }
        out.push_str(text);
        if !unknown.is_empty() {
            // text is `{...}`: drop its closing brace and append our entries.
            out.pop();
            if text.len() > 2 {
                out.push(',');
            }
            out.push_str(&unknown[1..]);
            out.push('}');
        }
    } else if !unknown.is_empty() {
        out.push_str(unknown);
        out.push('}');
    }
    jsonb::check(out).map_err(|p| FieldError::new("tags", p))
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses one event object completely: collect, unpack a JSON object carried in `message`, normalize.
/// The returned event borrows `scratch`, so it must be encoded before the next event is parsed.
pub fn parse_event<'a>(
    json: &'a str,
    default_ts_us: i64,
    limits: &Limits,
    scratch: &'a mut Scratch,
) -> Result<Event<'a>, FieldError> {
    scratch.unknown.clear();
    let raw = RawEvent::collect(json, &mut scratch.unknown)?;
    finish_event(&raw, default_ts_us, limits, scratch)
}

/// Completes an event whose fields were collected (unknown fields already in the scratch's buffer): unpack a
/// JSON object carried in `message`, close the tags, normalize.
pub fn finish_event<'a>(
    raw: &RawEvent<'a>,
    default_ts_us: i64,
    limits: &Limits,
    scratch: &'a mut Scratch,
) -> Result<Event<'a>, FieldError> {
    let Scratch {
        tags,
        unknown,
        inner_src,
    } = scratch;
    let mut merged;
    let mut raw = raw;
    if raw.message_object(inner_src) {
        let inner_src: &'a String = inner_src;
        // A message that only looks like an object stays the message.
        let mark = unknown.len();
        match RawEvent::collect(inner_src, unknown) {
            Ok(inner) => {
                merged = *raw;
                merged.overlay(inner, unknown);
                raw = &merged;
            }
            Err(_) => unknown.truncate(mark),
        }
    }
    finish_tags(raw, unknown, tags)?;
    let tags: &'a String = tags;
    raw.normalize(tags, default_ts_us, limits)
}

// ---------------------------------------------------------------------------------------------------------------
// Typed conversions of one raw JSON value. Each returns the problem text; the caller adds the field name.

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<String, FieldError> {
        let mut scratch = Scratch::default();
        parse_event(json, 42, &Limits::default(), &mut scratch).map(|e| format!("{e:?}"))
    }

    fn ev(json: &str) -> Event<'static> {
        let json: &'static str = Box::leak(json.to_string().into_boxed_str());
        let scratch: &'static mut Scratch = Box::leak(Box::default());
        parse_event(json, 42, &Limits::default(), scratch).unwrap()
    }

    #[test]
    fn canonical_fields_parse_to_typed_values() {
        let e = ev(
            r#"{"timestamp":"2026-11-22T10:00:00.5Z","src_ip":"10.0.0.1","src_port":5000,
            "dst_ip":"2001:db8::1","dst_port":"443","protocol":"tcp","service":"web","status":503,
            "bytes_in":10,"bytes_out":20,"latency_ms":1.25,"host":"h1","message":"hi"}"#,
        );
        assert_eq!(e.ts_us, 1_795_341_600_500_000);
        assert_eq!(e.src_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(e.dst_ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(e.dst_port, Some(443));
        assert_eq!(e.status, Some(503));
        assert_eq!(e.latency_ms, Some(1.25));
        assert_eq!(e.message.as_deref(), Some("hi"));
        assert_eq!(e.tags, None);
    }

    #[test]
    fn aliases_map_and_unknown_fields_become_tags() {
        let e = ev(
            r#"{"client_ip":"1.2.3.4","latency":7,"bytes":99,"weird":{"a":[1]},"source_type":"x"}"#,
        );
        assert_eq!(e.src_ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(e.latency_ms, Some(7.0));
        assert_eq!(e.bytes_out, Some(99));
        assert_eq!(e.ts_us, 42, "missing timestamp means the receive time");
        let tags: serde_json::Value = serde_json::from_str(e.tags.unwrap()).unwrap();
        assert_eq!(
            tags,
            serde_json::json!({"weird":{"a":[1]},"source_type":"x"})
        );
    }

    #[test]
    fn canonical_name_wins_and_the_alias_value_is_kept_in_tags() {
        let e = ev(r#"{"source_ip":"1.1.1.1","src_ip":"2.2.2.2"}"#);
        assert_eq!(e.src_ip, Some("2.2.2.2".parse().unwrap()));
        assert_eq!(e.tags, Some(r#"{"source_ip":"1.1.1.1"}"#));
    }

    #[test]
    fn producer_tags_merge_with_unknown_fields() {
        let e = ev(r#"{"tags":{"env":"prod"},"zone":"a"}"#);
        assert_eq!(e.tags, Some(r#"{"env":"prod","zone":"a"}"#));
        let e = ev(r#"{"tags":{},"zone":"a"}"#);
        assert_eq!(e.tags, Some(r#"{"zone":"a"}"#));
        assert!(parse(r#"{"tags":"nope"}"#)
            .unwrap_err()
            .to_string()
            .contains("tags: expected a JSON object"));
    }

    #[test]
    fn dash_and_empty_mean_absent() {
        let e = ev(r#"{"host":"-","source_host":"edge-1","size":"-"}"#);
        assert_eq!(e.host.as_deref(), Some("edge-1"));
        assert_eq!(e.bytes_out, None);
    }

    #[test]
    fn message_holding_a_json_object_is_unpacked() {
        let e = ev(
            r#"{"host":"agent","message":"{\"src_ip\":\"10.1.2.3\",\"service\":\"web\",\"message\":\"GET /\"}","service":"vector","timestamp":"2026-11-22T11:17:23.581930588Z"}"#,
        );
        assert_eq!(e.src_ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(e.service.as_deref(), Some("web"));
        assert_eq!(e.message.as_deref(), Some("GET /"));
        assert_eq!(e.host.as_deref(), Some("agent"));
        // 11:17:23.581930588 rounds to the microsecond as PostgreSQL's own parser does.
        assert_eq!(e.ts_us, 1_795_346_243_581_931);
        assert_eq!(e.tags, Some(r#"{"service":"vector"}"#));
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let want = 1_795_341_600_000_000;
        for t in [
            r#""2026-11-22T10:00:00Z""#,
            r#""2026-11-22T11:00:00+01:00""#,
            r#""2026-11-22 10:00:00""#,
            r#""2026-11-22 10:00:00.000000""#,
            r#""22/Nov/2026:11:00:00 +0100""#,
            "1795341600",
            "1795341600.0",
            "1795341600000",
            r#""1795341600""#,
        ] {
            assert_eq!(ev(&format!(r#"{{"timestamp":{t}}}"#)).ts_us, want, "{t}");
        }
        for bad in [
            r#""yesterday""#,
            "-5",
            r#"{"a":1}"#,
            "true",
            r#""10000-01-01T00:00:00Z""#,
        ] {
            let err = parse(&format!(r#"{{"ts":{bad}}}"#)).unwrap_err();
            assert_eq!(err.field, "ts", "{bad}");
            assert!(err.problem.contains("RFC 3339"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (r#"{"src_ip":"10.0.0.300"}"#, "src_ip", "IPv4 or IPv6"),
            (r#"{"dst_port":70000}"#, "dst_port", "0 to 65535"),
            (r#"{"dst_port":-1}"#, "dst_port", "0 to 65535"),
            (r#"{"sport":"http"}"#, "sport", "0 to 65535"),
            (r#"{"status":"OK"}"#, "status", "integer"),
            (r#"{"bytes_in":1.5}"#, "bytes_in", "integer"),
            (r#"{"latency_ms":-3}"#, "latency_ms", "non-negative"),
            (r#"{"service":{"x":1}}"#, "service", "expected a string"),
            (r#"{"message":"a\u0000b"}"#, "message", "NUL"),
        ];
        for (json, field, words) in cases {
            let err = parse(json).unwrap_err();
            assert_eq!(err.field, field, "{json}");
            assert!(err.problem.contains(words), "{json}: {err}");
        }
        assert!(parse("[1,2]")
            .unwrap_err()
            .problem
            .contains("not a JSON object"));
    }

    #[test]
    fn strings_are_capped() {
        let long = "x".repeat(300);
        let err = parse(&format!(r#"{{"service":"{long}"}}"#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service: is 300 bytes long, over the limit of 256 bytes"
        );
    }
}
