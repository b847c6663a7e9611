//! Content-Encoding: streamed decompression with a cap on the output, so a decompression bomb costs at most
//! the cap in memory and is answered 413.

use std::borrow::Cow;
use std::io::Read;

use super::DecodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// zlib-wrapped deflate, as Vector's `compression: zlib` sends it.
    Deflate,
    /// Streamed frames that do not state their decompressed size (Vector), so they are decoded as a stream.
    Zstd,
    /// Snappy, as a raw block (its length up front) or in the framing format (a stream): both are told apart
    /// by the framing format's stream identifier.
    Snappy,
}

impl Encoding {
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let v = value.unwrap_or("").trim().to_ascii_lowercase();
        match v.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" | "zlib" => Ok(Encoding::Deflate),
            "zstd" => Ok(Encoding::Zstd),
            "snappy" | "x-snappy-framed" => Ok(Encoding::Snappy),
            _ => Err(DecodeError::UnsupportedEncoding(v)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Zstd => "zstd",
            Encoding::Snappy => "snappy",
        }
    }
}

/// Decompresses `body`, failing once the output passes `limit` bytes.
pub fn decompress(
    body: &[u8],
    encoding: Encoding,
    limit: usize,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    decompress_within(body, encoding, limit, &mut |_| true)
}

/// [`decompress`], asking `grow(bytes)` before the output's buffer grows to `bytes`; `false` stops it with
/// [`DecodeError::OverBudget`].
pub fn decompress_within<'b>(
    body: &'b [u8],
    encoding: Encoding,
    limit: usize,
    grow: &mut dyn FnMut(usize) -> bool,
) -> Result<Cow<'b, [u8]>, DecodeError> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            if body.len() > limit {
                return Err(DecodeError::DecompressedTooLarge { limit });
            }
            return Ok(Cow::Borrowed(body));
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| {
                DecodeError::Corrupt {
                    encoding: "zstd",
                    detail: e.to_string(),
                }
            })?)
        }
        Encoding::Snappy if body.starts_with(SNAPPY_STREAM_IDENTIFIER) => {
            Box::new(snap::read::FrameDecoder::new(body))
        }
        Encoding::Snappy => return raw_snappy(body, limit, grow).map(Cow::Owned),
    };
    let corrupt = |e: std::io::Error| DecodeError::Corrupt {
        encoding: encoding.name(),
        detail: e.to_string(),
    };
    let mut reader = reader.take(limit as u64 + 1);
    let mut chunk = vec![0u8; 256 << 10];
    // Sized once when the body says its size (a gzip trailer), else from a typical 6x ratio, doubling after.
    let mut out: Vec<u8> = Vec::new();
    let mut capacity = size_hint(body, encoding)
        .unwrap_or_else(|| body.len().saturating_mul(6))
        .min(limit)
        .max(chunk.len());
    loop {
        let n = reader.read(&mut chunk).map_err(corrupt)?;
        if n == 0 {
            break;
        }
        if out.len() + n > out.capacity() {
            if out.capacity() > 0 {
                capacity = (out.capacity() * 2).max(out.len() + n);
            }
            // Growing copies into a new buffer while the old one is still held: both count.
            if !grow(out.capacity() + capacity) {
                return Err(DecodeError::OverBudget);
            }
            out.reserve_exact(capacity - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
        if out.len() > limit {
            return Err(DecodeError::DecompressedTooLarge { limit });
        }
    }
    // A doubled buffer can be nearly twice the text; what is kept until the commit is the text.
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
    }
    Ok(Cow::Owned(out))
}

/// The first chunk of a snappy framing-format stream.
const SNAPPY_STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// A raw snappy block: its decompressed length comes first, and is checked against `limit` and the budget
/// before anything is allocated.
fn raw_snappy(
    body: &[u8],
    limit: usize,
    grow: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |e: snap::Error| DecodeError::Corrupt {
        encoding: "snappy",
        detail: e.to_string(),
    };
    let len = snap::raw::decompress_len(body).map_err(corrupt)?;
    if len > limit {
        return Err(DecodeError::DecompressedTooLarge { limit });
    }
    if !grow(len) {
        return Err(DecodeError::OverBudget);
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(corrupt)
}

/// The decompressed size a body states, when its format carries it: gzip's trailer (ISIZE, the size modulo
/// 2^32 of the last member). Only a hint for the first allocation: a wrong one costs a regrowth or an early 503.
fn size_hint(body: &[u8], encoding: Encoding) -> Option<usize> {
    match encoding {
        Encoding::Gzip if body.len() >= 18 => {
            let trailer: [u8; 4] = body[body.len() - 4..].try_into().ok()?;
            let size = u32::from_le_bytes(trailer) as usize;
            (size > 0).then_some(size)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn snappy_raw_and_framed_round_trip_and_respect_the_limit() {
        let data = b"[{\"a\":1}]".repeat(1000);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            &*decompress(&raw, Encoding::Snappy, 1 << 20).unwrap(),
            &data[..]
        );
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(&data).unwrap();
        let framed = framed.into_inner().unwrap();
        assert!(framed.starts_with(SNAPPY_STREAM_IDENTIFIER));
        assert_eq!(
            &*decompress(&framed, Encoding::Snappy, 1 << 20).unwrap(),
            &data[..]
        );
        for body in [&raw, &framed] {
            assert!(matches!(
                decompress(body, Encoding::Snappy, 100),
                Err(DecodeError::DecompressedTooLarge { limit: 100 })
            ));
        }
        assert_eq!(
            Encoding::from_header(Some("snappy")).unwrap(),
            Encoding::Snappy
        );
    }

    #[test]
    fn round_trips_each_encoding() {
        let data = b"[{\"a\":1}]".repeat(100);
        assert_eq!(
            &*decompress(&gzip(&data), Encoding::Gzip, 1 << 20).unwrap(),
            &data[..]
        );
        let z = zstd::stream::encode_all(&data[..], 3).unwrap();
        assert_eq!(
            &*decompress(&z, Encoding::Zstd, 1 << 20).unwrap(),
            &data[..]
        );
        let mut d = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(&data).unwrap();
        assert_eq!(
            &*decompress(&d.finish().unwrap(), Encoding::Deflate, 1 << 20).unwrap(),
            &data[..]
        );
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![b' '; 50 << 20]);
        assert!(bomb.len() * 500 < 50 << 20, "a real bomb: over 500x");
        assert!(matches!(
            decompress(&bomb, Encoding::Gzip, 1 << 20),
            Err(DecodeError::DecompressedTooLarge { limit }) if limit == 1 << 20
        ));
    }

    #[test]
    fn corrupt_and_unknown() {
        let e = decompress(b"not gzip", Encoding::Gzip, 100)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("gzip body is corrupt"), "{e}");
        assert!(Encoding::from_header(Some("br")).is_err());
        assert_eq!(
            Encoding::from_header(Some(" GZIP ")).unwrap(),
            Encoding::Gzip
        );
    }
}
