//! Opaque pagination cursors for /api/logs: the last row's keyset position, base64url-encoded.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::filters::ParamError;
use super::logs::LogPosition;

pub fn encode(p: &LogPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", p.ts_us, p.ctid))
}

pub fn decode(cursor: &str) -> Result<LogPosition, ParamError> {
    let bad = || {
        ParamError::new(
            "cursor",
            "is not a cursor this collector issued",
            "the next_cursor of a previous page",
        )
    };
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?)
        .map_err(|_| bad())?;
    let (ts, ctid) = text.split_once('|').ok_or_else(bad)?;
    // ctid is `(block,offset)`; checking the shape keeps arbitrary text out of the tid cast.
    let inner = ctid
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .ok_or_else(bad)?;
    let (block, offset) = inner.split_once(',').ok_or_else(bad)?;
    block.parse::<u32>().map_err(|_| bad())?;
    offset.parse::<u16>().map_err(|_| bad())?;
    Ok(LogPosition {
        ts_us: ts.parse().map_err(|_| bad())?,
        ctid: ctid.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let p = LogPosition {
            ts_us: 1_795_341_600_123_456,
            ctid: "(12,5)".into(),
        };
        assert_eq!(decode(&encode(&p)).unwrap(), p);
        assert!(decode("nope").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("1|(1,2); DROP TABLE x")).is_err());
    }
}
