//! Every rollup shape, declared once: its table, key columns, tiers, whether it keeps latency histograms,
//! percentiles or top lists, and which dimensions it can answer for. The writer, the compactor, the top lists,
//! the seal and the read planner all read these entries; the tables themselves are in `db/schema.sql`.
//!
//! Adding a shape is an entry here (and in [`SHAPES`]) and a migration creating `<table>` and `<table>_delta`
//! (with `_top`, `_top_floor` and `_top_pending` when it keeps top lists).

use std::net::IpAddr;

/// Bucket widths kept, in seconds, finest first.
pub const TIERS: [i32; 3] = [60, 300, 3600];
/// The address shapes skip the minute: with many distinct addresses their rows barely aggregate at that grain,
/// and each tier costs about one upserted row per distinct address in a flush.
pub const IP_TIERS: [i32; 2] = [300, 3600];

/// A rollup row's byte sums stop here (2^61) rather than overflow: events count at most 2^50 bytes each, so a
/// row reaches it only after millions of maximal events, and `bytes_in + bytes_out` of a row still fits int8.
pub const MAX_ROW_BYTES: i64 = 1 << 61;

/// Adds byte counts as a rollup row keeps them: saturating at [`MAX_ROW_BYTES`].
pub fn add_bytes(a: i64, b: i64) -> i64 {
    a.saturating_add(b).min(MAX_ROW_BYTES)
}

/// The summed columns every shape has, after its key.
pub const COUNT_COLUMNS: &str = "events, bytes_in, bytes_out, errors, client_errors";
/// The latency columns of the shapes that keep latency, after the counts.
pub const LATENCY_COLUMNS: &str = "latency_n, latency_sum, latency_max, latency_hist";

/// Dimensions a query filters or groups on, and a shape can answer for, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dims(u16);

impl Dims {
    pub const NONE: Dims = Dims(0);
    pub const SERVICE: Dims = Dims(1);
    pub const PROTOCOL: Dims = Dims(1 << 1);
    pub const HOST: Dims = Dims(1 << 2);
    pub const PRODUCER: Dims = Dims(1 << 3);
    pub const DST_PORT: Dims = Dims(1 << 4);
    pub const STATUS: Dims = Dims(1 << 5);
    pub const SRC_IP: Dims = Dims(1 << 6);
    pub const DST_IP: Dims = Dims(1 << 7);
    /// Country, AS number and threat list of either side (enrichment).
    pub const GEO: Dims = Dims(1 << 8);
    pub const ALL: Dims = Dims(u16::MAX);

    pub const fn with(self, o: Dims) -> Dims {
        Dims(self.0 | o.0)
    }

    pub const fn covers(self, o: Dims) -> bool {
        self.0 & o.0 == o.0
    }
}

/// Most key columns a shape has (after `res, bucket`): the writers' group keys are arrays of this size.
pub const MAX_KEYS: usize = 6;

/// Where a key column's value comes from in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Producer,
    Service,
    Protocol,
    Host,
    DstPort,
    Status,
    SrcIp,
    DstIp,
    /// The source address's network ([`src_network`]).
    SrcNet,
    SrcCountry,
    SrcAsn,
    DstCountry,
    DstAsn,
    Threat,
}

/// How a key column's values are typed, in Rust and in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int4,
    Int8,
    Inet,
}

impl ColumnType {
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Int4 => "int4",
            ColumnType::Int8 => "int8",
            ColumnType::Inet => "inet",
        }
    }
}

impl Source {
    pub fn column_type(self) -> ColumnType {
        match self {
            Source::Producer
            | Source::Service
            | Source::Protocol
            | Source::Host
            | Source::SrcCountry
            | Source::DstCountry
            | Source::Threat => ColumnType::Text,
            Source::DstPort | Source::Status => ColumnType::Int4,
            Source::SrcAsn | Source::DstAsn => ColumnType::Int8,
            Source::SrcIp | Source::DstIp | Source::SrcNet => ColumnType::Inet,
        }
    }
}

/// A key column after `res, bucket`: its name and where its values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: &'static str,
    pub source: Source,
}

const fn key(name: &'static str, source: Source) -> KeyColumn {
    KeyColumn { name, source }
}

/// A shape whose buckets keep top lists (`<table>_top`, `_top_floor`, `_top_pending`), so that top talkers read
/// a bucket's largest rows instead of all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopLists {
    /// SQL for when a bucket has closed: it ends at or before this.
    pub closed_at: &'static str,
}

/// One rollup shape.
#[derive(Debug, PartialEq, Eq)]
pub struct Shape {
    /// Its table; `<table>_delta` holds what writers appended and the compactor has not merged yet.
    pub table: &'static str,
    /// Key columns after `res, bucket`, in key order.
    pub keys: &'static [KeyColumn],
    /// Bucket widths it is kept at, finest first; deltas hold the finest.
    pub tiers: &'static [i32],
    /// What the read planner may answer from it.
    pub dims: Dims,
    /// Keeps `latency_n, latency_sum, latency_max, latency_hist`.
    pub latency: bool,
    /// Keeps `latency_pcts` of each merged row (db/migrations/0010_service_percentiles.sql).
    pub percentiles: bool,
    pub top_lists: Option<TopLists>,
    /// Keyed by the source's network, not its address ([`src_network`]).
    pub src_networks: bool,
    /// Rolled up from `comm_logs` by the pair seal a few seconds behind now, not by the writers (their deltas
    /// carry only events older than the seal; db/migrations/0008_pairs.sql).
    pub sealed: bool,
}

impl Shape {
    /// The key columns, comma-separated.
    pub fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Its finest tier in seconds.
    pub fn finest(&self) -> i32 {
        self.tiers[0]
    }

    /// `, <latency columns>` when it keeps latency, else nothing.
    pub fn latency_columns(&self) -> String {
        if self.latency {
            format!(", {LATENCY_COLUMNS}")
        } else {
            String::new()
        }
    }

    /// A sealed shape's rows for the events of [`from`, `to`) (SQL expressions) of `comm_logs`, at every tier:
    /// what a seal adds, and what answers add from the seal's bound on. Its key columns are `comm_logs`'s own.
    /// Spelled out here, not a function in the database, so that the scan is planned with the bounds and the
    /// query's own filters (db/migrations/0009_pair_events_inline.sql).
    pub fn events_sql(&self, from: &str, to: &str) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| format!("l.{}", k.name)).collect();
        let tiers: Vec<String> = self.tiers.iter().map(|t| format!("({t})")).collect();
        let group: Vec<String> = (1..=self.keys.len() + 2).map(|i| i.to_string()).collect();
        format!(
            "SELECT t.res, date_bin(t.res * interval '1 second', l.ts, to_timestamp(0)) AS bucket, {keys},
                    {RAW_COUNTS}
             FROM comm_logs AS l, (VALUES {tiers}) AS t(res)
             WHERE l.ts >= {from} AND l.ts < {to}
             GROUP BY {group}",
            keys = keys.join(", "),
            tiers = tiers.join(", "),
            group = group.join(", "),
        )
    }

    /// A sealed shape's rows for the events of [`from`, `to`) of `comm_logs` at every tier, as the seal writes
    /// them: the events grouped once, at the finest tier, and each coarser tier summed from those groups; in key
    /// order, so that the upsert walks the rollup's index in order rather than at random (10% faster at a
    /// million rows). Grouping the events once per tier ([`Shape::events_sql`]) doubled the rows to group
    /// (db/migrations/0008_pairs.sql has the seal's protocol).
    pub fn seal_sql(&self, from: &str, to: &str) -> String {
        let keys = self.key_list();
        let events: Vec<String> = self.keys.iter().map(|k| format!("l.{}", k.name)).collect();
        let group: Vec<String> = (1..=self.keys.len() + 1).map(|i| i.to_string()).collect();
        let fine = self.finest();
        let coarser: Vec<String> = self
            .tiers
            .iter()
            .skip(1)
            .map(|t| {
                format!(
                    "UNION ALL
                     SELECT {t}, date_bin({t} * interval '1 second', bucket, to_timestamp(0)), {keys},
                            sum(events)::int8, sum(bytes_in)::int8, sum(bytes_out)::int8, sum(errors)::int8,
                            sum(client_errors)::int8
                     FROM fine GROUP BY 2, {keys}"
                )
            })
            .collect();
        format!(
            "WITH fine AS MATERIALIZED (
                 SELECT date_bin({fine} * interval '1 second', l.ts, to_timestamp(0)) AS bucket, {events},
                        {RAW_COUNTS}
                 FROM comm_logs AS l
                 WHERE l.ts >= {from} AND l.ts < {to}
                 GROUP BY {group})
             SELECT {fine}, bucket, {keys}, events, bytes_in, bytes_out, errors, client_errors FROM fine
             {coarser}
             ORDER BY {order}",
            events = events.join(", "),
            group = group.join(", "),
            coarser = coarser.join("\n"),
            order = (1..=self.keys.len() + 2)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// A condition on its delta rows keeping those that count as of the seal bound `sealed_to` (SQL): the
    /// deltas of a seal in progress count once it has committed (db/migrations/0008_pairs.sql). Always true for
    /// the shapes the writers roll up alone.
    pub fn valid_deltas(&self, sealed_to: &str) -> String {
        if self.sealed {
            format!("(gen IS NULL OR gen <= {sealed_to})")
        } else {
            "true".into()
        }
    }
}

/// The count columns of a rollup row, aggregated from `comm_logs AS l` (the sealed shapes' rows, sealed or not yet).
const RAW_COUNTS: &str = "count(*) AS events, coalesce(sum(l.bytes_in), 0)::int8 AS bytes_in,
     coalesce(sum(l.bytes_out), 0)::int8 AS bytes_out, count(*) FILTER (WHERE l.status >= 500) AS errors,
     count(*) FILTER (WHERE l.status BETWEEN 400 AND 499) AS client_errors";

/// Every event by producer, service, protocol, host, destination port and status.
pub static FULL: Shape = Shape {
    table: "comm_rollup",
    keys: &[
        key("producer", Source::Producer),
        key("service", Source::Service),
        key("protocol", Source::Protocol),
        key("host", Source::Host),
        key("dst_port", Source::DstPort),
        key("status", Source::Status),
    ],
    tiers: &TIERS,
    dims: Dims::SERVICE
        .with(Dims::PROTOCOL)
        .with(Dims::HOST)
        .with(Dims::PRODUCER)
        .with(Dims::DST_PORT)
        .with(Dims::STATUS),
    latency: true,
    percentiles: false,
    top_lists: None,
    src_networks: false,
    sealed: false,
};

/// Every event by producer, service, protocol, host and status: [`FULL`] without the destination port, which
/// multiplies its rows (db/migrations/0019_host_rollup.sql).
pub static HOST: Shape = Shape {
    table: "comm_rollup_host",
    keys: &[
        key("producer", Source::Producer),
        key("service", Source::Service),
        key("protocol", Source::Protocol),
        key("host", Source::Host),
        key("status", Source::Status),
    ],
    tiers: &TIERS,
    dims: Dims::SERVICE
        .with(Dims::PROTOCOL)
        .with(Dims::HOST)
        .with(Dims::PRODUCER)
        .with(Dims::STATUS),
    latency: true,
    percentiles: false,
    top_lists: None,
    src_networks: false,
    sealed: false,
};

/// Per service: the narrowest shape, and the one most answers read.
pub static SERVICE: Shape = Shape {
    table: "comm_rollup_service",
    keys: &[key("service", Source::Service)],
    tiers: &TIERS,
    dims: Dims::SERVICE,
    latency: true,
    percentiles: true,
    top_lists: None,
    src_networks: false,
    sealed: false,
};

/// Per source network ([`src_network_prefix`]).
pub static SRC_NET: Shape = Shape {
    table: "comm_rollup_src_net",
    keys: &[key("src_net", Source::SrcNet)],
    tiers: &IP_TIERS,
    dims: Dims::SRC_IP,
    latency: false,
    percentiles: false,
    top_lists: None,
    src_networks: true,
    sealed: false,
};

/// Per source address.
pub static SRC: Shape = Shape {
    table: "comm_rollup_src",
    keys: &[key("src_ip", Source::SrcIp)],
    tiers: &IP_TIERS,
    dims: Dims::SRC_IP,
    latency: false,
    percentiles: false,
    top_lists: Some(TopLists {
        closed_at: "now() - interval '1 minute'",
    }),
    src_networks: false,
    sealed: false,
};

/// Per destination address.
pub static DST: Shape = Shape {
    table: "comm_rollup_dst",
    keys: &[key("dst_ip", Source::DstIp)],
    tiers: &IP_TIERS,
    dims: Dims::DST_IP,
    latency: false,
    percentiles: false,
    top_lists: None,
    src_networks: false,
    sealed: false,
};

/// Per source × destination pair.
pub static PAIR: Shape = Shape {
    table: "comm_rollup_pair",
    keys: &[key("src_ip", Source::SrcIp), key("dst_ip", Source::DstIp)],
    tiers: &IP_TIERS,
    dims: Dims::SRC_IP.with(Dims::DST_IP),
    latency: false,
    percentiles: false,
    // Pair buckets change only by late deltas once the seal has passed them.
    top_lists: Some(TopLists {
        closed_at: "(SELECT sealed_to FROM comm_pair_seal)",
    }),
    src_networks: false,
    sealed: true,
};

/// Per source × destination port: how many ports each source reaches (the `scan` alerts), and answers filtering
/// on a source and a port. Sealed like the pairs, for the same reason: a flush touches nearly as many of its
/// rows as it has events (db/migrations/0018_src_ports.sql).
pub static SRC_PORT: Shape = Shape {
    table: "comm_rollup_src_port",
    keys: &[
        key("src_ip", Source::SrcIp),
        key("dst_port", Source::DstPort),
    ],
    tiers: &IP_TIERS,
    dims: Dims::SRC_IP.with(Dims::DST_PORT),
    latency: false,
    percentiles: false,
    top_lists: None,
    src_networks: false,
    sealed: true,
};

/// Per country, AS number and threat list of both sides (db/migrations/0016_geo_rollup.sql).
pub static GEO: Shape = Shape {
    table: "comm_rollup_geo",
    keys: &[
        key("src_country", Source::SrcCountry),
        key("src_asn", Source::SrcAsn),
        key("dst_country", Source::DstCountry),
        key("dst_asn", Source::DstAsn),
        key("threat", Source::Threat),
    ],
    tiers: &TIERS,
    dims: Dims::GEO,
    latency: false,
    percentiles: false,
    top_lists: None,
    src_networks: false,
    sealed: false,
};

/// Every shape, narrowest first: the read planner takes the first that holds what a query needs, and writes go
/// in this order (a fixed order of row locks across writers). Sources by port come after the full shape, which
/// answers a port alone in fewer rows.
pub static SHAPES: [&Shape; 9] = [
    &SERVICE, &SRC_NET, &SRC, &DST, &GEO, &HOST, &PAIR, &FULL, &SRC_PORT,
];

/// The shapes rolled up by the seal rather than by the writers.
pub fn sealed() -> impl Iterator<Item = &'static Shape> {
    SHAPES.iter().copied().filter(|s| s.sealed)
}

const _: () = {
    let mut i = 0;
    while i < SHAPES.len() {
        assert!(SHAPES[i].keys.len() <= MAX_KEYS);
        i += 1;
    }
};

/// Its position in [`SHAPES`].
pub fn index_of(shape: &Shape) -> usize {
    SHAPES
        .iter()
        .position(|s| std::ptr::eq(*s, shape) || s.table == shape.table)
        .unwrap_or(SHAPES.len())
}

/// Prefix length of the source networks rolled up: a /24 of IPv4, a /64 of IPv6.
pub const fn src_network_prefix(ipv4: bool) -> u8 {
    if ipv4 {
        24
    } else {
        64
    }
}

/// The network an address is rolled up under, as its first address (`src_network` in SQL).
pub fn src_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let keep = u32::MAX << (32 - src_network_prefix(true));
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX << (128 - src_network_prefix(false));
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_is_listed_once_with_nested_tiers() {
        for (i, s) in SHAPES.iter().enumerate() {
            assert!(
                SHAPES[..i].iter().all(|o| o.table != s.table),
                "{} listed twice",
                s.table
            );
            assert!(!s.keys.is_empty() && !s.tiers.is_empty());
            assert!(s.tiers.windows(2).all(|w| w[1] % w[0] == 0), "{}", s.table);
        }
    }
}
