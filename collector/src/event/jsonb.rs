//! What PostgreSQL's `jsonb` refuses, found before the receipt: the tags (unknown fields included) are stored
//! as written, so a value jsonb cannot hold would be counted "accepted" and then fail in the writer. The text
//! checked here is already valid JSON (serde_json parsed it).

/// Deepest nesting of arrays and objects kept in tags. Agents send flat records; PostgreSQL refuses depths in
/// the thousands ("stack depth limit exceeded"), and parsing them costs the writers' stack.
pub const MAX_DEPTH: usize = 64;

/// Largest decimal exponent of a number kept in tags (either sign). PostgreSQL's numeric stops near 10^131072
/// and 10^-16383; no measurement needs more than this.
pub const MAX_EXPONENT: i64 = 1000;

/// Checks JSON text `json` for what jsonb refuses: NUL characters (`\u0000`), unpaired UTF-16 surrogates,
/// numbers out of numeric's range, and nesting deeper than [`MAX_DEPTH`].
pub fn check(json: &str) -> Result<(), String> {
    let b = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nests arrays and objects more than {MAX_DEPTH} deep"
                    ));
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => i = string_end(b, i + 1)?,
            b'-' | b'0'..=b'9' => i = number_end(b, i)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index after the string whose content starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> Result<usize, String> {
    // A high surrogate waiting for its low half.
    let mut pending_high = false;
    while i < b.len() {
        match b[i] {
            b'"' => {
                if pending_high {
                    return Err(unpaired());
                }
                return Ok(i + 1);
            }
            b'\\' => {
                let esc = b.get(i + 1).copied().unwrap_or(b'"');
                if esc == b'u' {
                    let hex = std::str::from_utf8(b.get(i + 2..i + 6).unwrap_or_default())
                        .ok()
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                        .ok_or("has a malformed \\u escape")?;
                    match hex {
                        0 => {
                            return Err(
                                "contains a NUL character (\\u0000), which PostgreSQL cannot store"
                                    .into(),
                            )
                        }
                        0xD800..=0xDBFF if !pending_high => pending_high = true,
                        0xDC00..=0xDFFF if pending_high => pending_high = false,
                        0xD800..=0xDFFF => return Err(unpaired()),
                        _ if pending_high => return Err(unpaired()),
                        _ => {}
                    }
                    i += 6;
                } else {
                    if pending_high {
                        return Err(unpaired());
                    }
                    i += 2;
                }
            }
            _ => {
                if pending_high {
                    return Err(unpaired());
                }
                i += 1;
            }
        }
    }
    Ok(i)
}

fn unpaired() -> String {
    "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which PostgreSQL cannot store".into()
}

/// The index after the number starting at `i`, once its magnitude is known to fit.
fn number_end(b: &[u8], start: usize) -> Result<usize, String> {
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    // Digits of the integer part after leading zeros, whether any fraction digit is nonzero, and where the
    // first nonzero fraction digit is.
    let mut int_digits: i64 = 0;
    let mut first_nonzero_frac: Option<i64> = None;
    while let Some(c @ b'0'..=b'9') = b.get(i) {
        if int_digits > 0 || *c != b'0' {
            int_digits += 1;
        }
        i += 1;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut pos = 0;
        while let Some(c @ b'0'..=b'9') = b.get(i) {
            pos += 1;
            if first_nonzero_frac.is_none() && *c != b'0' {
                first_nonzero_frac = Some(pos);
            }
            i += 1;
        }
    }
    let mut exp: i64 = 0;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        while let Some(c @ b'0'..=b'9') = b.get(i) {
            // Saturates: a longer exponent is out of range however it ends.
            exp = exp.saturating_mul(10).saturating_add(i64::from(c - b'0'));
            i += 1;
        }
        if negative {
            exp = -exp;
        }
    }
    // The decimal exponent of the leading nonzero digit; zero is always fine.
    let magnitude = if int_digits > 0 {
        Some((int_digits - 1).saturating_add(exp))
    } else {
        first_nonzero_frac.map(|p| exp.saturating_sub(p))
    };
    if magnitude.is_some_and(|m| m.abs() > MAX_EXPONENT) {
        let text = String::from_utf8_lossy(&b[start..i.min(start + 40)]).into_owned();
        return Err(format!(
            "has the number {text} beyond 1e±{MAX_EXPONENT}, which is not stored"
        ));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_jsonb_refuses_and_keeps_the_rest() {
        for ok in [
            r#"{"a":1,"b":[1,2,{"c":"d"}],"e":null}"#,
            r#"{"s":"\\u0000 is text here"}"#,
            r#"{"emoji":"\ud83d\ude00","n":-0.5e-3,"big":1e308,"zero":0.0e-99999}"#,
            r#"{"x":"quote \" and backslash \\"}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let deep = format!(
            "{{\"d\":{}{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        for (bad, why) in [
            (r#"{"s":"a\u0000b"}"#, "NUL"),
            (r#"{"s":"\ud800"}"#, "surrogate"),
            (r#"{"s":"\udc00x"}"#, "surrogate"),
            (r#"{"s":"\ud800\u0041"}"#, "surrogate"),
            (r#"{"n":1e1000000}"#, "beyond"),
            (r#"{"n":-12.5E1001}"#, "beyond"),
            (r#"{"n":0.0001e-999}"#, "beyond"),
            (deep.as_str(), "deep"),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        let just = format!(
            "{{\"d\":{}{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check(&just), Ok(()));
    }
}
