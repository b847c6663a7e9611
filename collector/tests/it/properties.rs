//! Property tests on every body decoder: arbitrary bytes never panic (each is an answer or an error), and every
//! event the receipt accepts is stored; and on the spool's reader: arbitrary bytes never panic, records round
//! trip, and damage never yields a record that was not written. Generated inputs mix valid events with every kind of value the
//! collector must refuse (NUL, unpaired surrogates, huge numbers, deep nesting, wrong types).

use std::sync::Arc;

use bytes::Bytes;
use collector::config::ServeConfig;
use collector::decode::{self, Encoding, Format};
use collector::pipeline::batch::Batch;
use collector::pipeline::spool::format as spool;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use crate::support::spawn_app;

/// One decoded body, as the ingest handler does it, minus HTTP: any error is fine, a panic is not.
fn decode_any(body: &[u8], encoding: Encoding, format: Format) -> Option<(usize, usize)> {
    let limits = ServeConfig::defaults().build_limits();
    let plain = decode::decompress(body, encoding, 1 << 20).ok()?;
    let text = decode::to_json(Bytes::copy_from_slice(&plain), format).ok()?;
    let s = decode::as_text(&text).ok()?;
    let format = format.transcoded();
    let (batch, receipt) =
        Batch::build(text.clone(), s, format, Arc::from("p"), 0, &limits).ok()?;
    assert_eq!(
        batch.row_count(),
        receipt.accepted,
        "the receipt counts the rows"
    );
    Some((receipt.accepted, receipt.rejected))
}

/// A JSON value text that may be anything an agent or an attacker sends.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| v.to_string()),
        (1u32..2_000_000).prop_map(|e| format!("1e{e}")),
        "[a-z0-9 .:/-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            r#""\u0000""#,
            r#""\\u0000""#,
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            r#""\ud83d\ude00""#,
            r#""10.0.0.1""#,
            r#""2001:db8::1""#,
            r#""999.1.1.1""#,
            r#""2026-11-22T10:00:00Z""#,
            r#""-""#,
            r#""""#,
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4).prop_map(|v| {
                let kv: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", kv.join(","))
            }),
            (1usize..200).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        ]
    })
}

/// An event object: known fields, aliases and unknown keys, with any values.
fn event() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "timestamp",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "protocol",
        "service",
        "status",
        "bytes_in",
        "bytes_out",
        "latency_ms",
        "host",
        "message",
        "tags",
        "ts",
        "client_ip",
        "code",
        "size",
        "msg",
        "labels",
        "extra",
        "nested",
    ]);
    prop::collection::vec((key, value()), 0..8).prop_map(|fields| {
        let kv: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", kv.join(","))
    })
}

/// OTLP values nested far deeper than any real log record, in both encodings: a clear error, not a stack
/// overflow.
#[test]
fn deeply_nested_otlp_values_are_refused_not_followed() {
    const DEPTH: usize = 20_000;
    let json = format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{}"x"{}}}]}}]}}]}}"#,
        r#"{"kvlistValue":{"values":[{"key":"k","value":"#.repeat(DEPTH),
        "}]}}".repeat(DEPTH)
    );
    assert!(decode::to_json(Bytes::from(json), Format::OtlpJson).is_err());
    // The protobuf encoding, built from the inside out: AnyValue { kvlist { KeyValue { "k", AnyValue … } } }.
    fn field(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut varint = |mut n: u64| loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                break;
            }
        };
        varint(u64::from(tag << 3 | 2));
        varint(payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }
    let mut value = field(1, b"x");
    for _ in 0..DEPTH {
        let key_value = [field(1, b"k"), field(2, &value)].concat();
        value = field(6, &field(1, &key_value));
    }
    let request = field(1, &field(2, &field(2, &field(5, &value))));
    assert!(decode::to_json(Bytes::from(request), Format::OtlpProtobuf).is_err());
}

#[test]
fn arbitrary_bytes_never_panic_any_decoder() {
    let mut runner = TestRunner::new(Config {
        cases: 512,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            for encoding in [
                Encoding::Identity,
                Encoding::Gzip,
                Encoding::Deflate,
                Encoding::Zstd,
                Encoding::Snappy,
            ] {
                for format in [
                    Format::Json,
                    Format::NdJson,
                    Format::Msgpack,
                    Format::EsBulk,
                    Format::OtlpJson,
                    Format::OtlpProtobuf,
                ] {
                    decode_any(&bytes, encoding, format);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn generated_events_decode_with_a_consistent_receipt() {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(event(), 1..20), |events| {
            let array = format!("[{}]", events.join(","));
            let ndjson = events.join("\n");
            for (body, format) in [(array, Format::Json), (ndjson, Format::NdJson)] {
                if let Some((accepted, rejected)) =
                    decode_any(body.as_bytes(), Encoding::Identity, format)
                {
                    prop_assert_eq!(accepted + rejected, events.len());
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Generated batches sent to the real collector: every event its receipt accepts is in `comm_logs`, and every
/// rejected one in `ingest_rejects`, without the writer having to refuse any (no isolation afterwards).
#[tokio::test]
async fn every_event_the_receipt_accepts_is_stored() {
    let mut runner = TestRunner::default();
    let strategy = prop::collection::vec(event(), 1..25);
    let bodies: Vec<Vec<String>> = (0..40)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let app = spawn_app().await;
    let (mut accepted, mut rejected) = (0i64, 0i64);
    for events in &bodies {
        let resp = app
            .ingest(
                format!("[{}]", events.join(",")),
                &[("content-type", "application/json")],
            )
            .await;
        let status = resp.status().as_u16();
        let receipt: serde_json::Value = resp.json().await.unwrap();
        if status == 202 {
            accepted += receipt["accepted"].as_i64().unwrap();
            rejected += receipt["rejected"].as_i64().unwrap();
        } else {
            // The body as a whole was refused (and kept as one dead letter).
            assert_eq!(status, 400, "{receipt}");
            rejected += 1;
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
    assert_eq!(app.wait_rows(accepted).await, accepted);
    assert_eq!(
        app.wait_count("SELECT count(*) FROM ingest_rejects", rejected)
            .await,
        rejected
    );
    // None of them was refused by PostgreSQL after the receipt.
    assert_eq!(
        app.count("SELECT count(*) FROM ingest_rejects WHERE reason LIKE 'refused by PostgreSQL%'")
            .await,
        0
    );
}

/// A spool record with arbitrary contents.
fn spool_record() -> impl Strategy<Value = spool::Record> {
    (
        any::<u64>(),
        any::<i64>(),
        any::<[u8; 16]>(),
        ".{0,20}",
        proptest::option::of("[a-z/+-]{1,30}"),
        proptest::option::of("[a-z]{1,10}"),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(seq, at, identity, producer, ct, ce, body)| spool::Record {
                seq,
                received_at_us: at,
                identity,
                producer,
                content_type: ct,
                content_encoding: ce,
                kind: Default::default(),
                body: Bytes::from(body),
            },
        )
}

/// A segment holding `records`, and where each record's frame starts and ends.
fn spool_segment(records: &[spool::Record]) -> (bytes::BytesMut, Vec<(usize, usize)>) {
    let mut out = bytes::BytesMut::from(&spool::segment_header()[..]);
    let mut frames = Vec::new();
    for r in records {
        let start = out.len();
        let len = spool::encode(&mut out, r);
        assert_eq!(len, spool::frame_len(r));
        frames.push((start, start + len));
    }
    (out, frames)
}

/// How a crash or a disk may damage a segment.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
}

impl Damage {
    /// Applies to `bytes`; returns the first offset changed.
    fn apply(&self, bytes: &mut Vec<u8>) -> usize {
        let at = |p: usize| p % (bytes.len() + 1);
        match self {
            Damage::Truncate(p) => {
                let p = at(*p);
                bytes.truncate(p);
                p
            }
            Damage::Flip(p, mask) => {
                let p = at(*p).min(bytes.len().saturating_sub(1));
                if let Some(b) = bytes.get_mut(p) {
                    *b ^= mask | 1;
                }
                p
            }
            Damage::Insert(p, more) => {
                let p = at(*p);
                bytes.splice(p..p, more.iter().copied());
                p
            }
            Damage::Overwrite(p, with) => {
                let p = at(*p);
                for (i, b) in with.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(p + i) {
                        *x = *b;
                    }
                }
                p
            }
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(p, m)| Damage::Flip(p, m)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(p, b)| Damage::Insert(p, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(p, b)| Damage::Overwrite(p, b)),
    ]
}

proptest! {
    #![proptest_config(Config { cases: 300, ..Config::default() })]

    /// The spool reader on arbitrary bytes, with or without a valid header: no panic, no record.
    #[test]
    fn spool_reader_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        with_header in any::<bool>(),
    ) {
        let mut all = if with_header { spool::segment_header().to_vec() } else { Vec::new() };
        all.extend_from_slice(&bytes);
        let scan = spool::scan_segment(&Bytes::from(all));
        prop_assert!(scan.records.is_empty());
    }

    /// Every well-formed record reads back as written, in order, with nothing reported, whatever run of
    /// preallocated zeros follows.
    #[test]
    fn spool_records_round_trip(
        records in proptest::collection::vec(spool_record(), 0..12),
        zeros in 0..3000usize,
    ) {
        let (mut bytes, _) = spool_segment(&records);
        let len = bytes.len();
        bytes.resize(len + zeros, 0);
        let scan = spool::scan_segment(&bytes.freeze());
        let read: Vec<spool::Record> = scan.records.into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(read, records);
        prop_assert!(scan.damage.is_empty());
        prop_assert_eq!(scan.end, len);
    }

    /// Damage never yields a record that was not written, and every record wholly before it is read back.
    #[test]
    fn spool_damage_never_invents_or_loses_whole_records(
        records in proptest::collection::vec(spool_record(), 1..10),
        damage in damage(),
    ) {
        let (bytes, frames) = spool_segment(&records);
        let mut bytes = bytes.to_vec();
        let first_changed = damage.apply(&mut bytes);
        let scan = spool::scan_segment(&Bytes::from(bytes));
        for (_, r) in &scan.records {
            prop_assert!(records.contains(r), "a record that was not written: {:?}", r);
        }
        let before = frames.iter().filter(|(_, end)| *end <= first_changed).count();
        prop_assert!(scan.records.len() >= before, "{} records before the damage, {} read", before, scan.records.len());
        for (i, (_, r)) in scan.records.iter().take(before).enumerate() {
            prop_assert_eq!(r, &records[i]);
        }
    }
}
