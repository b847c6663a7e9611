//! The fast walk of event JSON: one pass over the bytes, each member's value kept as its text span.
//!
//! serde_json's walk ([`super::visitor`]) reads every value twice: once to find its end (as a `RawValue`) and
//! again when it is normalized; with normalizing, that was half of the collector's CPU per event in a profile.
//! This scanner finds each value's end in one pass and keeps its span.
//! It takes only what it is sure of: valid JSON, keys without escapes, nesting up to [`MAX_DEPTH`]. For
//! anything else it gives up (`None`) and serde_json walks that object instead, so every error message, and
//! every decision on odd input, stays serde_json's. The tests compare the two walks on generated input.

use serde::de::DeserializeSeed;
use serde_json::value::RawValue;

use super::visitor::{self, ElementSeed};
use super::{FieldError, Raw, RawEvent, Scratch};

/// Deepest nesting the scanner follows, the event object counted; deeper values are left to serde_json
/// (which allows 128).
const MAX_DEPTH: usize = 64;

/// Bytes that end the fast run through a string: the closing quote, an escape, or a control character
/// (which JSON forbids inside strings).
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The first position from `pos` on whose 8-byte word holds a [`STOP`] byte (or too near the end for a
/// word): the scan's largest cost was strings, one byte a step.
fn skip_plain(bytes: &[u8], mut pos: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(word) = bytes.get(pos..pos + 8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let w = u64::from_le_bytes(word);
        // A byte is flagged where it is zero after the xor (a quote or a backslash) or below 0x20.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let quote = zero(w ^ (ONES * u64::from(b'"')));
        let backslash = zero(w ^ (ONES * u64::from(b'\\')));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        if quote | backslash | control != 0 {
            break;
        }
        pos += 8;
    }
    pos
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string starting at the current quote; returns whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        let bytes = self.text.as_bytes();
        self.pos += 1;
        let mut escaped = false;
        loop {
            self.pos = skip_plain(bytes, self.pos);
            while !STOP[*bytes.get(self.pos)? as usize] {
                self.pos += 1;
            }
            match bytes[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match *bytes.get(self.pos)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = bytes.get(self.pos + 1..self.pos + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn word(&mut self, word: &str) -> Option<()> {
        let end = self.pos + word.len();
        (self.text.as_bytes().get(self.pos..end)? == word.as_bytes()).then(|| self.pos = end)
    }

    /// Any value, at `depth` (the containers around it).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.container(depth, b'}', true),
            b'[' => self.container(depth, b']', false),
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'n' => self.word("null"),
            _ => self.number(),
        }
    }

    /// The items of an object or array at the current opening byte, up to `close`: `item` reads one (an
    /// object's item is its key, the colon and the value), and this reads the commas and whitespace between.
    fn items(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.pos += 1;
        self.ws();
        if self.eat(close).is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b if b == close => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
            self.ws();
        }
    }

    /// An object's key and colon: the key's span without its quotes, and whether it has escapes.
    fn key(&mut self) -> Option<(&'a str, bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos;
        let escaped = self.string()?;
        let key = &self.text[start + 1..self.pos - 1];
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some((key, escaped))
    }

    /// An object or array nested in a value.
    fn container(&mut self, depth: usize, close: u8, object: bool) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.items(close, |s| {
            if object {
                s.key()?;
            }
            s.value(depth + 1)
        })
    }

    /// The event object at the current `{`, into `event` (empty).
    fn event(&mut self, event: &mut RawEvent<'a>, tags: &mut String) -> Option<()> {
        self.items(b'}', |s| {
            let (key, escaped) = s.key()?;
            // A key with escapes is never one of our names, but serde_json unescapes it for the tags.
            if escaped {
                return None;
            }
            let start = s.pos;
            s.value(2)?;
            event.take(key, Raw(&s.text[start..s.pos]), tags);
            Some(())
        })
    }
}

/// One event object filling `text` (whitespace around it allowed), or `None` for serde_json to walk it.
/// Members may have been appended to `tags` before giving up.
pub(super) fn object<'a>(text: &'a str, tags: &mut String) -> Option<RawEvent<'a>> {
    let mut s = Scanner::new(text);
    s.ws();
    if s.peek()? != b'{' {
        return None;
    }
    let mut event = RawEvent::default();
    s.event(&mut event, tags)?;
    s.ws();
    (s.pos == text.len()).then_some(event)
}

/// Walks a JSON array of events in a single pass, handing each element's collected fields to `f` with its
/// index; an element that is not an object arrives as an error. Scanning the array once, instead of first
/// splitting it into elements, saves a fifth of the decode cost (BENCHMARKS.md). A syntax error anywhere
/// makes the whole body undecodable, with serde_json's error. The fields are lent, not moved: an event's slots
/// are half a kilobyte, and moving them through each step was 3% of the decode cost.
pub fn for_each_in_array<'de>(
    text: &'de str,
    scratch: &mut Scratch,
    mut f: impl FnMut(usize, Result<&RawEvent<'de>, FieldError>, &mut Scratch),
) -> Result<(), serde_json::Error> {
    let mut event = RawEvent::default();
    let mut s = Scanner::new(text);
    s.ws();
    if s.eat(b'[').is_none() {
        return Err(body_error(text));
    }
    s.ws();
    if s.eat(b']').is_none() {
        for index in 0.. {
            scratch.unknown.clear();
            event.clear();
            let start = s.pos;
            let fast = match s.peek() {
                Some(b'{') => s.event(&mut event, &mut scratch.unknown),
                _ => None,
            };
            let element = match fast {
                Some(()) => Ok(&event),
                None => {
                    // serde_json finds where this element ends, then walks it alone.
                    scratch.unknown.clear();
                    let mut stream =
                        serde_json::Deserializer::from_str(&text[start..]).into_iter::<&RawValue>();
                    let Some(Ok(raw)) = stream.next() else {
                        return Err(body_error(text));
                    };
                    s.pos = start + stream.byte_offset();
                    let seed = ElementSeed {
                        tags: &mut scratch.unknown,
                    };
                    let slow = seed
                        .deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                        .map_err(|_| body_error(text))?;
                    slow.map(|slow| {
                        event = slow;
                        &event
                    })
                }
            };
            f(index, element, scratch);
            s.ws();
            match s.peek() {
                Some(b',') => s.pos += 1,
                Some(b']') => {
                    s.pos += 1;
                    break;
                }
                _ => return Err(body_error(text)),
            }
            s.ws();
        }
    }
    s.ws();
    if s.pos != text.len() {
        return Err(body_error(text));
    }
    Ok(())
}

/// serde_json's error for a body the scanner found malformed: its own walk's, so the same text and position.
fn body_error(text: &str) -> serde_json::Error {
    match visitor::for_each_in_array(text, &mut Scratch::default(), |_, _, _| {}) {
        Err(e) => e,
        // Only a disagreement between the two walks comes here; the body is refused either way.
        Ok(_) => serde::de::Error::custom("the JSON array could not be read"),
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::{finish_event, Limits};
    use super::*;

    /// What a walk of `text` produced: each element's finished event or error, or the body's error.
    fn walk(text: &str, fast: bool) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        let mut each = |index: usize,
                        collected: Result<&RawEvent<'_>, FieldError>,
                        s: &mut Scratch| {
            let finished = collected.and_then(|raw| finish_event(raw, 7, &Limits::default(), s));
            out.push(match finished {
                Ok(e) => format!("{index} {e:?}"),
                Err(e) => format!("{index} {e}"),
            });
        };
        let walked = if fast {
            for_each_in_array(text, &mut scratch, each)
        } else {
            visitor::for_each_in_array(text, &mut scratch, |index, collected, s| match collected {
                Ok(raw) => each(index, Ok(&raw), s),
                Err(e) => each(index, Err(e), s),
            })
        };
        walked.map(|()| out).map_err(|e| e.to_string())
    }

    fn same(text: &str) {
        assert_eq!(walk(text, true), walk(text, false), "{text}");
    }

    const CASES: &[&str] = &[
        r#"[]"#,
        " \n[ ] \t",
        r#"[{}]"#,
        r#"[{"src_ip":"10.0.0.1","dst_port":443,"latency_ms":1.5e1,"tags":{"a":[1,{"b":null}]}}]"#,
        r#"[{"message":"a \"quoted\" \\ path \/ \u00e9 \ud83d\ude00","host":"h\u0031"}]"#,
        r#"[{"k\u0065y":1,"src_ip":"1.2.3.4"}]"#,
        r#"[{"message":"{\"src_ip\":\"10.1.2.3\",\"service\":\"web\"}"}]"#,
        r#"[{"flow":{"bytes_toserver":5,"bytes_toclient":6},"http":{"status":404}}]"#,
        r#"[1, "x", null, true, [1,2], {"status":200}]"#,
        r#"[{"a":-0,"b":0.5,"c":-1E+2,"d":1e-3,"e":123456789012345678901234567890}]"#,
        r#"[{"source_ip":"1.1.1.1","src_ip":"2.2.2.2","ts":"2026-11-22T10:00:00Z"}]"#,
        r#"[{"status":"-","host":"","service":null,"tags":"x"}]"#,
        "[{\"message\":\"é ü 日本\"}]",
        // Malformed: each is the body's error.
        r#"[{"a":01}]"#,
        r#"[{"a":1.}]"#,
        r#"[{"a":.5}]"#,
        r#"[{"a":1e}]"#,
        r#"[{"a":-}]"#,
        r#"[{"a":+1}]"#,
        r#"[{"a":tru}]"#,
        r#"[{"a":nul}]"#,
        r#"[{"a":1,}]"#,
        r#"[{"a":1},]"#,
        r#"[{"a" 1}]"#,
        r#"[{a:1}]"#,
        r#"[{"a":"\x"}]"#,
        r#"[{"a":"\u12g4"}]"#,
        "[{\"a\":\"tab\there\"}]",
        r#"[{"a":[1,2}]"#,
        r#"[{"a":{"b":1]}]"#,
        r#"[{"a":1}"#,
        r#"[{"a":1}] x"#,
        r#"[{"a":1} {"b":2}]"#,
        r#"[{"a":"unterminated}]"#,
        r#"["#,
        "\u{a0}[{}]",
    ];

    #[test]
    fn the_scan_and_serde_json_agree_on_chosen_bodies() {
        for case in CASES {
            same(case);
        }
    }

    #[test]
    fn nesting_deeper_than_the_scanner_follows_is_walked_by_serde_json() {
        for depth in [
            MAX_DEPTH - 3,
            MAX_DEPTH - 2,
            MAX_DEPTH,
            MAX_DEPTH + 10,
            126,
            200,
        ] {
            let deep = format!(
                r#"[{{"src_ip":"10.0.0.1","deep":{}1{}}},{{"status":1}}]"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            same(&deep);
        }
        let deep = format!(r#"[{{"deep":{}1{}}}]"#, "[".repeat(90), "]".repeat(90));
        assert!(
            walk(&deep, true).is_ok(),
            "deeper than the scanner, within serde_json's limit"
        );
    }

    /// Every body from a small alphabet of JSON pieces, and each with one byte changed: the two walks agree
    /// on what they accept, on each event they produce and on the error they give.
    #[test]
    fn the_scan_and_serde_json_agree_on_mutated_bodies() {
        let valid = [
            r#"[{"src_ip":"10.0.0.1","src_port":5000,"dst_ip":"2001:db8::1","dst_port":"443","protocol":"TCP","status":503,"bytes_in":10,"latency_ms":1.25,"host":"h1","message":"m \"q\"","tags":{"env":"prod"},"x":[true,false,null,{"y":-1.5e3}]}, {"ts":1795341600,"source_ip":"1.1.1.1","src_ip":"2.2.2.2"}]"#,
            include_str!("../../tests/fixtures/sources/nginx-access.json"),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        const PIECES: &[u8] = b"{}[]\",:\\ 0123456789-+.eEtrufalsn\n\tu";
        let mut checked = 0;
        for body in valid {
            // nginx-access.json is NDJSON: make it an array.
            let body = if body.starts_with('[') {
                body.to_string()
            } else {
                format!("[{}]", body.trim().replace('\n', ","))
            };
            same(&body);
            let bytes = body.as_bytes();
            for _ in 0..3000 {
                let at = rng.random_range(0..bytes.len());
                let piece = PIECES[rng.random_range(0..PIECES.len())];
                let mut mutated = bytes.to_vec();
                match rng.random_range(0..3) {
                    0 => mutated[at] = piece,
                    1 => mutated.insert(at, piece),
                    _ => {
                        mutated.remove(at);
                    }
                }
                if let Ok(text) = std::str::from_utf8(&mutated) {
                    same(text);
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "only {checked} mutated bodies were UTF-8");
    }

    #[test]
    fn one_object_is_scanned_or_left_to_serde_json() {
        let mut tags = String::new();
        assert!(object(r#" {"src_ip":"10.0.0.1","z":1} "#, &mut tags).is_some());
        assert_eq!(tags, r#"{"z":1"#);
        for not_taken in [r#"{"a":1} x"#, r#"[{"a":1}]"#, r#"{"a\n":1}"#, "", "{"] {
            assert!(
                object(not_taken, &mut String::new()).is_none(),
                "{not_taken}"
            );
        }
    }
}
