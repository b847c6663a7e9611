//! The canonical fields and the aliases each accepts: this table is the documentation (README "Field aliases").

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

pub(super) const FIELD_COUNT: usize = 14;

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
    pub(super) fn lookup(key: &str) -> Option<(Field, bool)> {
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
