//! From a field's raw JSON text to its typed value, or an error saying what is wrong with it.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, NaiveDateTime};

use super::Raw;

fn shown(raw: Raw<'_>) -> String {
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
pub(super) fn as_str(raw: Raw<'_>) -> Result<Option<Cow<'_, str>>, String> {
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
fn number_text(raw: Raw<'_>) -> Option<&str> {
    let t = raw.get();
    let t = if t.starts_with('"') {
        t[1..t.len() - 1].trim()
    } else {
        t
    };
    let first = t.as_bytes().first()?;
    (first.is_ascii_digit() || *first == b'-' || *first == b'.').then_some(t)
}

pub(super) fn parse_int(raw: Raw<'_>, min: i64, max: i64) -> Result<i64, String> {
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

pub(super) fn parse_port(raw: Raw<'_>) -> Result<u16, String> {
    parse_int(raw, 0, 65_535).map(|v| v as u16)
}

pub(super) fn parse_latency(raw: Raw<'_>) -> Result<f64, String> {
    parse_duration_ms(raw, Unit::Milliseconds)
}

/// A duration in seconds (Zeek's `duration`, nginx's `request_time`), as milliseconds.
pub(super) fn parse_seconds_as_ms(raw: Raw<'_>) -> Result<f64, String> {
    parse_duration_ms(raw, Unit::Seconds)
}

#[derive(Clone, Copy)]
enum Unit {
    Milliseconds,
    Seconds,
}

/// A non-negative duration in `unit`, as milliseconds, up to [`super::MAX_LATENCY_MS`].
fn parse_duration_ms(raw: Raw<'_>, unit: Unit) -> Result<f64, String> {
    let (name, symbol, per_ms) = match unit {
        Unit::Milliseconds => ("milliseconds", "ms", 1.0),
        Unit::Seconds => ("seconds", "s", 1000.0),
    };
    let expected = || {
        format!(
            "expected a non-negative number of {name}, got {}",
            shown(raw)
        )
    };
    let v: f64 = number_text(raw)
        .ok_or_else(expected)?
        .parse()
        .map_err(|_| expected())?;
    let ms = v * per_ms;
    if !ms.is_finite() || ms < 0.0 {
        return Err(expected());
    }
    if ms > super::MAX_LATENCY_MS {
        return Err(format!(
            "{} {symbol} is over the limit of {} {symbol} (30 days)",
            shown(raw),
            super::MAX_LATENCY_MS / per_ms
        ));
    }
    Ok(ms)
}

pub(super) fn parse_ip(raw: Raw<'_>) -> Result<IpAddr, String> {
    let expected = || format!("expected an IPv4 or IPv6 address, got {}", shown(raw));
    let s = as_str(raw)?.ok_or_else(expected)?;
    let s = s.trim();
    // `[2001:db8::1]` as some proxies log it.
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    match dotted_quad(s) {
        Some(v4) => Ok(IpAddr::V4(v4)),
        None => s.parse().map_err(|_| expected()),
    }
}

/// `a.b.c.d` with each part 0–255 written without leading zeros: what the standard parser accepts as IPv4,
/// at a fraction of its cost (it was the largest step of normalizing an event). `None` for anything else,
/// which the standard parser then decides.
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u8; 4];
    let mut bytes = s.as_bytes().iter();
    for (i, part) in parts.iter_mut().enumerate() {
        let mut value: u16 = 0;
        let mut digits = 0;
        loop {
            match bytes.next() {
                Some(&b) if b.is_ascii_digit() && digits < 3 => {
                    if digits == 1 && value == 0 {
                        return None;
                    }
                    value = value * 10 + u16::from(b - b'0');
                    digits += 1;
                }
                Some(b'.') if i < 3 && digits > 0 => break,
                None if i == 3 && digits > 0 => break,
                _ => return None,
            }
        }
        *part = u8::try_from(value).ok()?;
    }
    Some(Ipv4Addr::from(parts))
}

pub(super) fn parse_text<'a>(raw: Raw<'a>, max: usize) -> Result<Cow<'a, str>, String> {
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

pub(super) fn parse_timestamp(raw: Raw<'_>) -> Result<i64, String> {
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
    // Suricata's `2026-11-28T10:37:30.800429+0000` (an offset without a colon).
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(rounded_micros(dt.to_utc()));
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

    #[test]
    fn dotted_quads_are_read_as_the_standard_parser_reads_them() {
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.2.3.4",
            "256.1.1.1",
            "1.2.3.256",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3.00",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4 ",
            "a.b.c.d",
            "1000.1.1.1",
            "1.2.3.4a",
            "",
            "::1",
            "::ffff:1.2.3.4",
            "1.2.3.-4",
            "+1.2.3.4",
            "0.0.0.00",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every part 0–300 in each position, with and without a leading zero.
        for v in 0..300 {
            for part in [format!("{v}"), format!("0{v}")] {
                cases.push(format!("{part}.1.2.3"));
                cases.push(format!("1.2.3.{part}"));
                cases.push(format!("9.{part}.{part}.9"));
            }
        }
        for case in cases {
            let standard = case.parse::<Ipv4Addr>().ok();
            let ours = dotted_quad(&case);
            if ours.is_some() {
                assert_eq!(ours, standard, "{case}");
            }
            if standard.is_some() && !case.contains(':') {
                assert_eq!(ours, standard, "{case}: the fast path should take it");
            }
        }
    }
}
