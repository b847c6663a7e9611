//! Fluent Bit's `Format msgpack`: concatenated `[[EventTime, {metadata}], {record}]` entries (older builds send
//! `[EventTime, {record}]`). Each entry is transcoded to a JSON object so that one parser serves every format;
//! the event time becomes `date` unless the record carries its own.

use std::io::Cursor;

use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

use super::DecodeError;

/// Fluent Bit's EventTime: msgpack ext type 0, u32 seconds + u32 nanoseconds, big-endian.
const EVENT_TIME_EXT: i8 = 0;

pub fn to_json_array(body: &[u8]) -> Result<String, DecodeError> {
    let mut cursor = Cursor::new(body);
    let mut out = Vec::new();
    while (cursor.position() as usize) < body.len() {
        let offset = cursor.position() as usize;
        let value = rmpv::decode::read_value(&mut cursor).map_err(|e| DecodeError::Msgpack {
            offset,
            detail: e.to_string(),
        })?;
        out.push(entry_to_json(value).map_err(|detail| DecodeError::Msgpack { offset, detail })?);
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(Json::Array(out).to_string())
}

fn entry_to_json(value: Value) -> Result<Json, String> {
    let Value::Array(mut parts) = value else {
        return Err("expected an array [[time, metadata], record]".into());
    };
    if parts.len() != 2 {
        return Err(format!(
            "expected an array of 2 elements, found {}",
            parts.len()
        ));
    }
    let record = parts.pop().unwrap_or(Value::Nil);
    let header = parts.pop().unwrap_or(Value::Nil);
    let time = match header {
        Value::Array(mut h) if !h.is_empty() => event_time(&h.swap_remove(0)),
        other => event_time(&other),
    };
    let mut object = match to_json(record) {
        Json::Object(m) => m,
        _ => return Err("the record is not a map".into()),
    };
    let has_time = ["date", "timestamp", "time", "ts", "@timestamp"]
        .iter()
        .any(|k| object.contains_key(*k));
    if let (Some(t), false) = (time, has_time) {
        if let Some(n) = Number::from_f64(t) {
            object.insert("date".into(), Json::Number(n));
        }
    }
    Ok(Json::Object(object))
}

fn event_time(v: &Value) -> Option<f64> {
    match v {
        Value::Ext(EVENT_TIME_EXT, data) if data.len() == 8 => {
            let secs = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let nanos = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            Some(f64::from(secs) + f64::from(nanos) / 1e9)
        }
        Value::Integer(i) => i.as_f64(),
        Value::F64(f) => Some(*f),
        Value::F32(f) => Some(f64::from(*f)),
        _ => None,
    }
}

fn to_json(v: Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => i
            .as_i64()
            .map(Json::from)
            .or_else(|| i.as_u64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => Number::from_f64(f64::from(f)).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(match s.into_str() {
            Some(s) => s,
            None => String::from("<invalid utf-8>"),
        }),
        Value::Binary(b) => Json::String(String::from_utf8_lossy(&b).into_owned()),
        Value::Array(a) => Json::Array(a.into_iter().map(to_json).collect()),
        Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.into_str().unwrap_or_default(),
                    other => other.to_string(),
                };
                out.insert(key, to_json(v));
            }
            Json::Object(out)
        }
        Value::Ext(_, data) => Json::String(data.iter().map(|b| format!("{b:02x}")).collect()),
    }
}
