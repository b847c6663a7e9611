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
            "id.orig_h",
            "SRC",
        ],
    ),
    (
        Field::SrcPort,
        "src_port",
        &[
            "source_port",
            "client_port",
            "sport",
            "remote_port",
            "id.orig_p",
            "SPT",
        ],
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
            "id.resp_h",
            "server_addr",
            "DST",
        ],
    ),
    (
        Field::DstPort,
        "dst_port",
        &[
            "destination_port",
            "dest_port",
            "server_port",
            "dport",
            "id.resp_p",
            "DPT",
        ],
    ),
    (
        Field::Protocol,
        "protocol",
        &["proto", "transport", "PROTO"],
    ),
    (
        Field::Service,
        "service",
        &["service_name", "app", "application", "app_proto"],
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
            "orig_bytes",
            "bytes_toserver",
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
            "resp_bytes",
            "bytes_toclient",
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

/// Aliases of `latency_ms` whose value is in seconds (Zeek's `duration`, nginx's `request_time`): multiplied
/// by 1,000.
pub const SECONDS_ALIASES: [(Field, &str); 2] = [
    (Field::LatencyMs, "duration"),
    (Field::LatencyMs, "request_time"),
];

/// Objects whose members are fields, as Suricata's EVE JSON and the Elastic Common Schema nest them: (object key, [(member, field)]). The
/// object itself is kept whole in `tags` too.
pub const NESTED: [(&str, &[(&str, Field)]); 6] = [
    (
        "flow",
        &[
            ("bytes_toserver", Field::BytesIn),
            ("bytes_toclient", Field::BytesOut),
        ],
    ),
    ("http", &[("status", Field::Status)]),
    ("alert", &[("signature", Field::Message)]),
    // Elastic Common Schema, as Filebeat and Elastic Agent send it.
    ("source", &[("ip", Field::SrcIp), ("port", Field::SrcPort)]),
    (
        "destination",
        &[("ip", Field::DstIp), ("port", Field::DstPort)],
    ),
    ("network", &[("transport", Field::Protocol)]),
];

/// How a key names a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Named {
    pub field: Field,
    /// The canonical name (it wins over an alias).
    pub canonical: bool,
    /// The value is in seconds where the field is in milliseconds.
    pub seconds: bool,
}

impl Field {
    pub fn name(self) -> &'static str {
        FIELDS[self as usize].1
    }

    /// Looks a key up among canonical names and aliases.
    pub(super) fn lookup(key: &str) -> Option<Named> {
        let named = |field, canonical, seconds| Named {
            field,
            canonical,
            seconds,
        };
        // A linear scan over ~90 short strings beats hashing here: most keys are canonical and match early.
        for (field, name, _) in FIELDS.iter() {
            if *name == key {
                return Some(named(*field, true, false));
            }
        }
        for (field, _, aliases) in FIELDS.iter() {
            if aliases.contains(&key) {
                return Some(named(*field, false, false));
            }
        }
        SECONDS_ALIASES
            .iter()
            .find(|(_, alias)| *alias == key)
            .map(|(field, _)| named(*field, false, true))
    }
}
