//! OpenTelemetry logs over HTTP (`POST /v1/logs`, the OTel Collector's `otlphttp` exporter), protobuf or JSON:
//! each log record becomes one event. Its attributes, then its resource's, are the event's fields: the
//! semantic-convention names of addresses, ports, transport, status, sizes, service and host map to the
//! canonical fields, and everything else is kept under its own name (so in `tags`). A string body is the
//! message; a map body's entries are fields.
//!
//! The protobuf messages are declared here with only the fields read (prost skips the others), after
//! `opentelemetry/proto/logs/v1/logs.proto` and `common/v1/common.proto`.

use serde_json::{Map, Value};

use super::DecodeError;

/// Semantic-convention attribute names (current and older) → the canonical field they carry. Address
/// attributes become `src_ip`/`dst_ip` only when they hold an IP address (they may hold a host name).
const ATTRIBUTES: [(&str, &str); 23] = [
    ("client.address", "src_ip"),
    ("source.address", "src_ip"),
    ("network.peer.address", "src_ip"),
    ("net.peer.ip", "src_ip"),
    ("client.port", "src_port"),
    ("source.port", "src_port"),
    ("network.peer.port", "src_port"),
    ("net.peer.port", "src_port"),
    ("server.address", "dst_ip"),
    ("destination.address", "dst_ip"),
    ("network.local.address", "dst_ip"),
    ("net.host.ip", "dst_ip"),
    ("server.port", "dst_port"),
    ("destination.port", "dst_port"),
    ("network.local.port", "dst_port"),
    ("net.host.port", "dst_port"),
    ("network.transport", "protocol"),
    ("http.response.status_code", "status"),
    ("http.status_code", "status"),
    ("http.request.body.size", "bytes_in"),
    ("http.response.body.size", "bytes_out"),
    ("service.name", "service"),
    ("host.name", "host"),
];

/// `ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeLogs {
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    #[prost(string, tag = "3")]
    pub severity_text: String,
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes, tag = "7")]
        BytesValue(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// `ExportLogsServiceResponse`: what was refused (the partial success), or nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_log_records: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// A protobuf request body → a JSON array of events.
pub fn protobuf_to_json_array(body: &[u8]) -> Result<String, DecodeError> {
    let request =
        <ExportLogsRequest as prost::Message>::decode(body).map_err(|e| DecodeError::Corrupt {
            encoding: "OTLP protobuf",
            detail: e.to_string(),
        })?;
    Ok(events(request))
}

/// A JSON request body (the OTLP/JSON mapping: camelCase names, 64-bit integers as strings) → a JSON array of
/// events.
pub fn json_to_json_array(text: &str) -> Result<String, DecodeError> {
    let v: Value = serde_json::from_str(text).map_err(|e| super::json_error(text, &e))?;
    Ok(events(from_json(&v)?))
}

/// The OTLP/JSON mapping read into the protobuf messages.
fn from_json(v: &Value) -> Result<ExportLogsRequest, DecodeError> {
    let shape = |detail: &str| DecodeError::Corrupt {
        encoding: "OTLP JSON",
        detail: detail.to_string(),
    };
    let list = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if !v.is_object() {
        return Err(shape("expected an object with `resourceLogs`"));
    }
    let mut request = ExportLogsRequest::default();
    for rl in list(v, "resourceLogs") {
        let resource = rl.get("resource").map(|r| Resource {
            attributes: list(r, "attributes").iter().map(json_kv).collect(),
        });
        let scope_logs = list(&rl, "scopeLogs")
            .iter()
            .map(|sl| ScopeLogs {
                log_records: list(sl, "logRecords")
                    .iter()
                    .map(|r| LogRecord {
                        time_unix_nano: json_u64(r.get("timeUnixNano")),
                        severity_number: json_u64(r.get("severityNumber")) as i32,
                        severity_text: r
                            .get("severityText")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        body: r.get("body").map(json_any),
                        attributes: list(r, "attributes").iter().map(json_kv).collect(),
                        observed_time_unix_nano: json_u64(r.get("observedTimeUnixNano")),
                    })
                    .collect(),
            })
            .collect();
        request.resource_logs.push(ResourceLogs {
            resource,
            scope_logs,
        });
    }
    Ok(request)
}

fn json_u64(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn json_kv(v: &Value) -> KeyValue {
    KeyValue {
        key: v
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        value: v.get("value").map(json_any),
    }
}

fn json_any(v: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = if let Some(s) = v.get("stringValue").and_then(Value::as_str) {
        Some(V::StringValue(s.to_string()))
    } else if let Some(b) = v.get("boolValue").and_then(Value::as_bool) {
        Some(V::BoolValue(b))
    } else if let Some(i) = v.get("intValue") {
        let n = match i {
            Value::String(s) => s.parse().ok(),
            other => other.as_i64(),
        };
        n.map(V::IntValue)
    } else if let Some(d) = v.get("doubleValue").and_then(Value::as_f64) {
        Some(V::DoubleValue(d))
    } else if let Some(a) = v.get("arrayValue") {
        Some(V::ArrayValue(ArrayValue {
            values: a
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().map(json_any).collect())
                .unwrap_or_default(),
        }))
    } else if let Some(kv) = v.get("kvlistValue") {
        Some(V::KvlistValue(KeyValueList {
            values: kv
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().map(json_kv).collect())
                .unwrap_or_default(),
        }))
    } else {
        v.get("bytesValue")
            .and_then(Value::as_str)
            .map(|s| V::StringValue(s.to_string()))
    };
    AnyValue { value }
}

/// Every log record of `request` as one event object, in a JSON array.
fn events(request: ExportLogsRequest) -> String {
    let mut out = Vec::new();
    for rl in request.resource_logs {
        let resource = rl.resource.map(|r| r.attributes).unwrap_or_default();
        for sl in rl.scope_logs {
            for record in sl.log_records {
                out.push(Value::Object(event(record, &resource)));
            }
        }
    }
    Value::Array(out).to_string()
}

fn event(record: LogRecord, resource: &[KeyValue]) -> Map<String, Value> {
    let mut e = Map::new();
    let ns = if record.time_unix_nano > 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    if ns > 0 {
        // Microseconds: an integer a JSON number holds exactly.
        e.insert("timestamp".into(), Value::from(ns / 1000));
    }
    match record.body.and_then(|b| b.value) {
        Some(any_value::Value::StringValue(s)) => {
            e.insert("message".into(), Value::String(s));
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            for item in kv.values {
                let v = item.value.map_or(Value::Null, json_of);
                e.entry(item.key).or_insert(v);
            }
        }
        Some(other) => {
            e.insert(
                "message".into(),
                Value::String(json_of(AnyValue { value: Some(other) }).to_string()),
            );
        }
        None => {}
    }
    if !record.severity_text.is_empty() {
        e.insert("severity".into(), Value::String(record.severity_text));
    } else if record.severity_number > 0 {
        e.insert("severity".into(), Value::from(record.severity_number));
    }
    // The record's own attributes first: they win over the resource's.
    for kv in record
        .attributes
        .into_iter()
        .chain(resource.iter().cloned())
    {
        let value = kv.value.map_or(Value::Null, json_of);
        let key = match ATTRIBUTES.iter().find(|(name, _)| *name == kv.key) {
            Some((_, field)) if field.ends_with("_ip") && !is_ip(&value) => kv.key,
            Some((_, field)) => (*field).to_string(),
            None => kv.key,
        };
        e.entry(key).or_insert(value);
    }
    e
}

fn is_ip(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
}

fn json_of(v: AnyValue) -> Value {
    use any_value::Value as V;
    match v.value {
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::from(i),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number)
        }
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(json_of).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(
            kv.values
                .into_iter()
                .map(|item| (item.key, item.value.map_or(Value::Null, json_of)))
                .collect(),
        ),
        Some(V::BytesValue(b)) => {
            use base64::Engine;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_map_to_fields_and_the_rest_is_kept() {
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}},
            {"key":"host.name","value":{"stringValue":"web-1"}}]},
          "scopeLogs":[{"scope":{"name":"x"},"logRecords":[{
            "timeUnixNano":"1764324000123456789","severityText":"WARN",
            "body":{"stringValue":"upstream slow"},
            "attributes":[
              {"key":"client.address","value":{"stringValue":"10.1.2.3"}},
              {"key":"client.port","value":{"intValue":"51000"}},
              {"key":"server.address","value":{"stringValue":"api.example"}},
              {"key":"server.port","value":{"intValue":443}},
              {"key":"network.transport","value":{"stringValue":"tcp"}},
              {"key":"http.response.status_code","value":{"intValue":"504"}},
              {"key":"k8s.pod.name","value":{"stringValue":"web-1-abc"}}]}]}]}]}"#;
        let events: Vec<Value> = serde_json::from_str(&json_to_json_array(json).unwrap()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["timestamp"], 1764324000123456u64);
        assert_eq!(e["message"], "upstream slow");
        assert_eq!(e["severity"], "WARN");
        assert_eq!(e["src_ip"], "10.1.2.3");
        assert_eq!(e["src_port"], 51000);
        // A host name is not an address: kept under its own name.
        assert_eq!(e["server.address"], "api.example");
        assert_eq!(e["dst_port"], 443);
        assert_eq!(e["protocol"], "tcp");
        assert_eq!(e["status"], 504);
        assert_eq!(e["service"], "checkout");
        assert_eq!(e["host"], "web-1");
        assert_eq!(e["k8s.pod.name"], "web-1-abc");
        // The same request as protobuf.
        let proto = prost::Message::encode_to_vec(
            &from_json(&serde_json::from_str(json).unwrap()).unwrap(),
        );
        assert_eq!(
            protobuf_to_json_array(&proto).unwrap(),
            json_to_json_array(json).unwrap()
        );
        assert!(protobuf_to_json_array(b"\xff\xff\xff").is_err());
    }
}
