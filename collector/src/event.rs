//! The canonical event: field names, aliases, and the parse/normalize step from one JSON object to typed values.
//!
//! Parsing happens in two phases so that nothing is copied on the hot path:
//! 1. [`RawEvent::collect`] walks the object once and keeps, for each canonical field, the borrowed JSON text of
//!    its value (`&RawValue`); keys it does not know are appended verbatim to the `tags` JSON being built.
//! 2. [`RawEvent::normalize`] converts each kept span into its typed value, with a precise error naming the field.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The canonical fields, in the order of [`FIELDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Timestamp,
    SrcIp,
    SrcPort,
    DstIp,
    DstPort,
    Protocol,
    Service,
    Status,
    BytesIn,
    BytesOut,
    LatencyMs,
    Host,
    Message,
    Tags,
}

const FIELD_COUNT: usize = 14;

/// Canonical name and accepted aliases of each field. This table is the documentation (README "Field aliases").
pub const FIELDS: [(Field, &str, &[&str]); FIELD_COUNT] = [
    (
        Field::Timestamp,
        "timestamp",
        &["ts", "time", "@timestamp", "date", "datetime", "event_time"],
    ),
    (
        Field::SrcIp,
        "src_ip",
        &[
            "source_ip",
            "client_ip",
            "src_addr",
            "source_address",
            "remote_addr",
            "remote",
            "client",
            "saddr",
        ],
    ),
    (
        Field::SrcPort,
        "src_port",
        &["source_port", "client_port", "sport", "remote_port"],
    ),
    (
        Field::DstIp,
        "dst_ip",
        &[
            "destination_ip",
            "dest_ip",
            "dst_addr",
            "destination_address",
            "server_ip",
            "daddr",
        ],
    ),
    (
        Field::DstPort,
        "dst_port",
        &["destination_port", "dest_port", "server_port", "dport"],
    ),
    (Field::Protocol, "protocol", &["proto", "transport"]),
    (
        Field::Service,
        "service",
        &["service_name", "app", "application"],
    ),
    (
        Field::Status,
        "status",
        &["status_code", "http_status", "code", "response_code"],
    ),
    (
        Field::BytesIn,
        "bytes_in",
        &[
            "bytes_received",
            "rx_bytes",
            "request_bytes",
            "request_length",
        ],
    ),
    (
        Field::BytesOut,
        "bytes_out",
        &[
            "bytes_sent",
            "tx_bytes",
            "response_bytes",
            "body_bytes_sent",
            "bytes",
            "size",
        ],
    ),
    (
        Field::LatencyMs,
        "latency_ms",
        &[
            "latency",
            "duration_ms",
            "response_time_ms",
            "elapsed_ms",
            "rtt_ms",
        ],
    ),
    (
        Field::Host,
        "host",
        &["hostname", "host_name", "source_host"],
    ),
    (Field::Message, "message", &["msg", "log"]),
    (Field::Tags, "tags", &["labels"]),
];

impl Field {
    pub fn name(self) -> &'static str {
        FIELDS[self as usize].1
    }

    /// Looks a key up among canonical names and aliases. Returns the field and whether the key was the canonical name.
    fn lookup(key: &str) -> Option<(Field, bool)> {
        // A linear scan over ~80 short strings beats hashing here: most keys are canonical and match early.
        for (field, name, _) in FIELDS.iter() {
            if *name == key {
                return Some((*field, true));
            }
        }
        for (field, _, aliases) in FIELDS.iter() {
            if aliases.contains(&key) {
                return Some((*field, false));
            }
        }
        None
    }
}

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

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Phase 1 of parsing: the raw span of each canonical field, plus unknown fields written into `tags`.
#[derive(Default)]
pub struct RawEvent<'a> {
    slots: [Option<Slot<'a>>; FIELD_COUNT],
}

#[derive(Clone, Copy)]
struct Slot<'a> {
    key: &'a str,
    canonical: bool,
    value: &'a RawValue,
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
fn is_absent(raw: &RawValue) -> bool {
    matches!(raw.get(), "null" | "\"\"" | "\"-\"")
}

impl<'a> RawEvent<'a> {
    /// Walks one JSON object. Unknown keys (and values displaced by a higher-priority key for the same field)
    /// are appended to `tags` as `"key":value` pairs, verbatim.
    pub fn collect(json: &'a str, tags: &mut String) -> Result<Self, FieldError> {
        let mut de = serde_json::Deserializer::from_str(json);
        de.deserialize_map(CollectVisitor { tags })
            .map_err(|e| FieldError::new("", format!("not a JSON object: {e}")))
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
                .map(|s| parse_int(s.value, 0, i64::MAX).map_err(|p| FieldError::new(s.key, p)))
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
            .map(|s| parse_latency(s.value).map_err(|p| FieldError::new(s.key, p)))
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
            protocol: text(Field::Protocol, limits.max_short_bytes)?,
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
    if out.contains("\\u0000") {
        return Err(FieldError::new(
            "tags",
            "contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    Ok(())
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

struct CollectVisitor<'t> {
    tags: &'t mut String,
}

impl<'de> Visitor<'de> for CollectVisitor<'_> {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEvent<'de>, A::Error> {
        collect_map(map, self.tags)
    }
}

fn collect_map<'de, A: MapAccess<'de>>(
    mut map: A,
    tags: &mut String,
) -> Result<RawEvent<'de>, A::Error> {
    let mut event = RawEvent::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let value: &'de RawValue = map.next_value()?;
        match key {
            Cow::Borrowed(k) => match Field::lookup(k) {
                Some(_) if is_absent(value) => {}
                Some((field, canonical)) => event.set(
                    field,
                    Slot {
                        key: k,
                        canonical,
                        value,
                    },
                    tags,
                ),
                None => push_tag(tags, k, value.get()),
            },
            // A key with escapes is never one of our names: keep it as a tag.
            Cow::Owned(k) => push_tag(tags, &k, value.get()),
        }
    }
    Ok(event)
}

/// Walks a JSON array of events in a single pass, handing each element's collected fields to `f` with its
/// index; an element that is not an object arrives as an error. Scanning the array once, instead of first
/// splitting it into elements, saves a fifth of the decode cost (BENCHMARKS.md). A syntax error anywhere
/// makes the whole body undecodable.
pub fn for_each_in_array<'de>(
    text: &'de str,
    scratch: &mut Scratch,
    f: impl FnMut(usize, Result<RawEvent<'de>, FieldError>, &mut Scratch),
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(ArrayVisitor { scratch, f })?;
    de.end()
}

struct ArrayVisitor<'s, F> {
    scratch: &'s mut Scratch,
    f: F,
}

impl<'de, F> Visitor<'de> for ArrayVisitor<'_, F>
where
    F: FnMut(usize, Result<RawEvent<'de>, FieldError>, &mut Scratch),
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.scratch.unknown.clear();
            let seed = ElementSeed {
                tags: &mut self.scratch.unknown,
            };
            match seq.next_element_seed(seed)? {
                Some(element) => (self.f)(index, element, self.scratch),
                None => return Ok(()),
            }
            index += 1;
        }
    }
}

struct ElementSeed<'t> {
    tags: &'t mut String,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = Result<RawEvent<'de>, FieldError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ElementVisitor { tags: self.tags })
    }
}

/// An array element: an object is collected; anything else is that element's error, not the body's.
struct ElementVisitor<'t> {
    tags: &'t mut String,
}

impl ElementVisitor<'_> {
    fn not_object<E>(what: impl fmt::Display) -> Result<Result<RawEvent<'static>, FieldError>, E> {
        Ok(Err(FieldError::new(
            "",
            format!("not a JSON object: found {what}"),
        )))
    }
}

impl<'de> Visitor<'de> for ElementVisitor<'_> {
    type Value = Result<RawEvent<'de>, FieldError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        collect_map(map, self.tags).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::not_object("an array")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Self::not_object("a string")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Self::not_object("null")
    }
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
    finish_event(raw, default_ts_us, limits, scratch)
}

/// Completes an event whose fields were collected (unknown fields already in the scratch's buffer): unpack a
/// JSON object carried in `message`, close the tags, normalize.
pub fn finish_event<'a>(
    mut raw: RawEvent<'a>,
    default_ts_us: i64,
    limits: &Limits,
    scratch: &'a mut Scratch,
) -> Result<Event<'a>, FieldError> {
    let Scratch {
        tags,
        unknown,
        inner_src,
    } = scratch;
    if raw.message_object(inner_src) {
        let inner_src: &'a String = inner_src;
        // A message that only looks like an object stays the message.
        let mark = unknown.len();
        match RawEvent::collect(inner_src, unknown) {
            Ok(inner) => raw.overlay(inner, unknown),
            Err(_) => unknown.truncate(mark),
        }
    }
    finish_tags(&raw, unknown, tags)?;
    let tags: &'a String = tags;
    raw.normalize(tags, default_ts_us, limits)
}

// ---------------------------------------------------------------------------------------------------------------
// Typed conversions of one raw JSON value. Each returns the problem text; the caller adds the field name.

fn shown(raw: &RawValue) -> String {
    let t = raw.get();
    if t.len() > 48 {
        let mut end = 45;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &t[..end])
    } else {
        t.to_string()
    }
}

/// The string content of a JSON string value, borrowed unless it has escapes; `Ok(None)` for non-strings.
fn as_str(raw: &RawValue) -> Result<Option<Cow<'_, str>>, String> {
    let t = raw.get();
    if !t.starts_with('"') {
        return Ok(None);
    }
    let inner = &t[1..t.len() - 1];
    if !inner.contains('\\') {
        return Ok(Some(Cow::Borrowed(inner)));
    }
    serde_json::from_str::<String>(t)
        .map(|s| Some(Cow::Owned(s)))
        .map_err(|e| e.to_string())
}

/// Number text of a value: a JSON number, or a string holding one (agents often send numbers as strings).
fn number_text(raw: &RawValue) -> Option<&str> {
    let t = raw.get();
    let t = if t.starts_with('"') {
        t[1..t.len() - 1].trim()
    } else {
        t
    };
    let first = t.as_bytes().first()?;
    (first.is_ascii_digit() || *first == b'-' || *first == b'.').then_some(t)
}

fn parse_int(raw: &RawValue, min: i64, max: i64) -> Result<i64, String> {
    let expected = || {
        format!(
            "expected an integer from {min} to {max}, got {}",
            shown(raw)
        )
    };
    let t = number_text(raw).ok_or_else(expected)?;
    let v = match t.parse::<i64>() {
        Ok(v) => v,
        Err(_) => {
            let f: f64 = t.parse().map_err(|_| expected())?;
            if f.fract() != 0.0 || !f.is_finite() || f.abs() > 9.0e18 {
                return Err(expected());
            }
            f as i64
        }
    };
    if v < min || v > max {
        return Err(expected());
    }
    Ok(v)
}

fn parse_port(raw: &RawValue) -> Result<u16, String> {
    parse_int(raw, 0, 65_535).map(|v| v as u16)
}

fn parse_latency(raw: &RawValue) -> Result<f64, String> {
    let expected = || {
        format!(
            "expected a non-negative number of milliseconds, got {}",
            shown(raw)
        )
    };
    let v: f64 = number_text(raw)
        .ok_or_else(expected)?
        .parse()
        .map_err(|_| expected())?;
    if !v.is_finite() || v < 0.0 {
        return Err(expected());
    }
    Ok(v)
}

fn parse_ip(raw: &RawValue) -> Result<IpAddr, String> {
    let expected = || format!("expected an IPv4 or IPv6 address, got {}", shown(raw));
    let s = as_str(raw)?.ok_or_else(expected)?;
    let s = s.trim();
    // `[2001:db8::1]` as some proxies log it.
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().map_err(|_| expected())
}

fn parse_text<'a>(raw: &'a RawValue, max: usize) -> Result<Cow<'a, str>, String> {
    let s = match as_str(raw)? {
        Some(s) => s,
        // Numbers and booleans are accepted as their text (e.g. `"service": 42`); objects are not text.
        None if !raw.get().starts_with(['{', '[']) => Cow::Borrowed(raw.get()),
        None => return Err(format!("expected a string, got {}", shown(raw))),
    };
    if s.len() > max {
        return Err(format!(
            "is {} bytes long, over the limit of {max} bytes",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err("contains a NUL character, which PostgreSQL cannot store".into());
    }
    Ok(s)
}

/// Microseconds since the Unix epoch between 1970-01-01 and 9999-12-31: PostgreSQL holds far more, but a
/// timestamp outside this is a producer bug worth a clear error rather than a row in year 200000.
const MAX_TS_US: i64 = 253_402_300_799_999_999;

fn parse_timestamp(raw: &RawValue) -> Result<i64, String> {
    let expected = || {
        format!(
            "expected an RFC 3339 time or epoch seconds/milliseconds between 1970 and 9999, got {}",
            shown(raw)
        )
    };
    let t = raw.get();
    let us = if t.starts_with('"') {
        let s = as_str(raw)?.ok_or_else(expected)?;
        let s = s.trim();
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !s.is_empty() {
            epoch_to_us(s.parse().map_err(|_| expected())?)
        } else {
            parse_time_text(s).ok_or_else(expected)?
        }
    } else {
        epoch_to_us(t.parse().map_err(|_| expected())?)
    };
    if !(0..=MAX_TS_US).contains(&us) {
        return Err(expected());
    }
    Ok(us)
}

/// Epoch numbers are told apart by magnitude: seconds until year 5138, then milliseconds, then microseconds.
fn epoch_to_us(v: f64) -> i64 {
    if !v.is_finite() || v < 0.0 {
        return -1;
    }
    let us = if v < 1e11 {
        v * 1e6
    } else if v < 1e14 {
        v * 1e3
    } else if v < 1e17 {
        v
    } else {
        v / 1e3
    };
    us.round() as i64
}

fn parse_time_text(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(rounded_micros(dt.to_utc()));
    }
    // `2026-11-22 10:37:30.800429` (Fluent Bit's java_sql_timestamp) and zone-less ISO 8601: taken as UTC.
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(rounded_micros(n.and_utc()));
        }
    }
    // nginx/Apache `21/Aug/2026:14:03:01 +0200`.
    DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|d| rounded_micros(d.to_utc()))
}

/// Nanosecond times (Vector sends them) rounded half-up to PostgreSQL's microsecond, as its text input does.
fn rounded_micros(t: DateTime<chrono::Utc>) -> i64 {
    t.timestamp() * 1_000_000 + i64::from((t.timestamp_subsec_nanos() + 500) / 1000)
}

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
