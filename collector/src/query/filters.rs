//! Query parameters shared by every read endpoint and the query CLI, parsed into typed filters. A bad parameter
//! is an error naming it and the accepted values.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use ipnetwork::IpNetwork;

/// A rejected parameter: which, what was given, what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {problem}; accepted: {accepted}")]
pub struct ParamError {
    pub param: String,
    pub problem: String,
    pub accepted: String,
}

impl ParamError {
    pub fn new(param: &str, problem: impl Into<String>, accepted: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            problem: problem.into(),
            accepted: accepted.into(),
        }
    }
}

/// Status filter: one code, or a class (5 means 500–599).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Code(i32),
    Class(i32),
}

impl StatusFilter {
    /// Inclusive range of codes.
    pub fn range(self) -> (i32, i32) {
        match self {
            StatusFilter::Code(c) => (c, c),
            StatusFilter::Class(c) => (c * 100, c * 100 + 99),
        }
    }
}

/// Filters common to every query.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
    pub service: Option<String>,
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub producer: Option<String>,
    /// The producers a tenant's key may read (set by the caller, never from a parameter): every answer is
    /// limited to their events, totals and shares included.
    pub producers: Option<Vec<String>>,
    /// Source address or network (a single address is a /32 or /128).
    pub src: Option<IpNetwork>,
    pub dst: Option<IpNetwork>,
    pub dst_port: Option<u16>,
    pub status: Option<StatusFilter>,
    pub min_latency_ms: Option<f64>,
    /// Enrichment: country code (or range label) and AS number of either side.
    pub src_country: Option<String>,
    pub dst_country: Option<String>,
    pub src_asn: Option<i64>,
    pub dst_asn: Option<i64>,
    /// Events that matched a threat list: any, or a named one.
    pub threat: Option<ThreatFilter>,
}

/// `threat=any` or `threat=<list name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreatFilter {
    Any,
    List(String),
}

impl ThreatFilter {
    fn parse(v: &str) -> ThreatFilter {
        if v == "any" {
            ThreatFilter::Any
        } else {
            ThreatFilter::List(v.to_string())
        }
    }

    /// Whether an event that matched `threat` (or none) passes.
    pub fn admits(&self, threat: Option<&str>) -> bool {
        match self {
            ThreatFilter::Any => threat.is_some(),
            ThreatFilter::List(l) => threat == Some(l.as_str()),
        }
    }
}

/// Parameter names every endpoint takes.
pub const FILTER_PARAMS: &[&str] = &[
    "from",
    "to",
    "service",
    "protocol",
    "host",
    "producer",
    "src",
    "dst",
    "dst_port",
    "status",
    "status_class",
    "src_country",
    "dst_country",
    "src_asn",
    "dst_asn",
    "threat",
];

const TIME_ACCEPTED: &str =
    "RFC 3339 (2026-11-22T10:00:00Z) or relative to now (now, -30s, -15m, -1h, -7d)";

/// Default window when `from` is not given.
const DEFAULT_WINDOW: Duration = Duration::hours(1);

impl Filters {
    /// Parses the filter parameters out of `params`; `extra` names the endpoint's own parameters, and any other
    /// name is refused so that a typo is not silently ignored.
    pub fn parse(
        params: &HashMap<String, String>,
        extra: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Self, ParamError> {
        for name in params.keys() {
            if !FILTER_PARAMS.contains(&name.as_str()) && !extra.contains(&name.as_str()) {
                let mut all: Vec<&str> = FILTER_PARAMS.iter().chain(extra).copied().collect();
                all.sort_unstable();
                return Err(ParamError::new(name, "unknown parameter", all.join(", ")));
            }
        }
        // No stored text holds a NUL (PostgreSQL cannot store one, and refuses it as a parameter).
        if let Some((name, _)) = params.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ParamError::new(
                name,
                "contains a NUL character",
                "text without NUL (%00)",
            ));
        }
        let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let to = get("to")
            .map(|v| parse_time("to", v, now))
            .transpose()?
            .unwrap_or(now);
        let from = get("from")
            .map(|v| parse_time("from", v, now))
            .transpose()?
            .unwrap_or(to - DEFAULT_WINDOW);
        if from >= to {
            return Err(ParamError::new(
                "from",
                format!(
                    "{} is not before to ({})",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                ),
                "a time before `to`",
            ));
        }
        let text = |k: &str| get(k).map(str::to_string);
        let status = match (get("status"), get("status_class")) {
            (Some(_), Some(_)) => {
                return Err(ParamError::new(
                    "status_class",
                    "given together with status",
                    "one of status, status_class",
                ))
            }
            (Some(s), None) => Some(StatusFilter::Code(
                s.parse::<i32>().ok().filter(|c| *c >= 0).ok_or_else(|| {
                    ParamError::new(
                        "status",
                        format!("{s:?} is not a status code"),
                        "an integer ≥ 0",
                    )
                })?,
            )),
            (None, Some(c)) => Some(StatusFilter::Class(parse_class(c)?)),
            (None, None) => None,
        };
        Ok(Filters {
            from,
            to,
            service: text("service"),
            protocol: text("protocol"),
            host: text("host"),
            producer: text("producer"),
            producers: None,
            src: get("src").map(|v| parse_net("src", v)).transpose()?,
            dst: get("dst").map(|v| parse_net("dst", v)).transpose()?,
            dst_port: get("dst_port")
                .map(|v| {
                    v.parse::<u16>().map_err(|_| {
                        ParamError::new("dst_port", format!("{v:?} is not a port"), "0-65535")
                    })
                })
                .transpose()?,
            status,
            src_country: text("src_country"),
            dst_country: text("dst_country"),
            src_asn: get("src_asn")
                .map(|v| parse_asn("src_asn", v))
                .transpose()?,
            dst_asn: get("dst_asn")
                .map(|v| parse_asn("dst_asn", v))
                .transpose()?,
            threat: get("threat").map(ThreatFilter::parse),
            min_latency_ms: get("min_latency_ms")
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| {
                            ParamError::new(
                                "min_latency_ms",
                                format!("{v:?} is not a latency"),
                                "a number ≥ 0",
                            )
                        })
                })
                .transpose()?,
        })
    }
}

/// An AS number (`64512`, or `AS64512`).
fn parse_asn(param: &str, v: &str) -> Result<i64, ParamError> {
    let digits = v
        .strip_prefix("AS")
        .or_else(|| v.strip_prefix("as"))
        .unwrap_or(v);
    digits.parse::<u32>().map(i64::from).map_err(|_| {
        ParamError::new(
            param,
            format!("{v:?} is not an AS number"),
            "0-4294967295, or AS<number>",
        )
    })
}

/// RFC 3339, or `now` / `-<n><s|m|h|d>` relative to `now`.
pub fn parse_time(param: &str, v: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ParamError> {
    let bad = || ParamError::new(param, format!("{v:?} is not a time"), TIME_ACCEPTED);
    if v == "now" {
        return Ok(now);
    }
    if let Some(rel) = v.strip_prefix('-') {
        let (num, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
        let n: i64 = num.parse().map_err(|_| bad())?;
        let d = match unit {
            "s" => Duration::try_seconds(n),
            "m" => Duration::try_minutes(n),
            "h" => Duration::try_hours(n),
            "d" => Duration::try_days(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        return now.checked_sub_signed(d).ok_or_else(bad);
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.to_utc())
        .map_err(|_| bad())
}

fn parse_net(param: &str, v: &str) -> Result<IpNetwork, ParamError> {
    let bad = || {
        ParamError::new(
            param,
            format!("{v:?} is not an IP address or CIDR"),
            "10.0.0.1, 10.0.0.0/8, 2001:db8::/32",
        )
    };
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(IpNetwork::from(ip));
    }
    let net: IpNetwork = v.parse().map_err(|_| bad())?;
    // 10.1.2.3/8 is almost always a typo for 10.0.0.0/8: say so rather than match a surprising range.
    if net.ip() != net.network() {
        return Err(ParamError::new(
            param,
            format!(
                "{v:?} has host bits set (the network is {}/{})",
                net.network(),
                net.prefix()
            ),
            "a network address with its prefix, e.g. 10.0.0.0/8",
        ));
    }
    Ok(net)
}

fn parse_class(v: &str) -> Result<i32, ParamError> {
    let digit = v
        .strip_suffix("xx")
        .or_else(|| v.strip_suffix("XX"))
        .unwrap_or(v);
    digit
        .parse::<i32>()
        .ok()
        .filter(|d| (1..=5).contains(d))
        .ok_or_else(|| {
            ParamError::new(
                "status_class",
                format!("{v:?} is not a status class"),
                "1xx, 2xx, 3xx, 4xx, 5xx",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Filters, ParamError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filters::parse(&map, &["limit"], now())
    }

    #[test]
    fn defaults_to_the_last_hour() {
        let f = parse(&[]).unwrap();
        assert_eq!((f.to, f.from), (now(), now() - Duration::hours(1)));
    }

    #[test]
    fn parses_every_filter() {
        let f = parse(&[
            ("from", "-24h"),
            ("to", "2026-11-22T11:00:00+01:00"),
            ("src", "10.0.0.0/8"),
            ("dst", "2001:db8::1"),
            ("dst_port", "443"),
            ("status_class", "5xx"),
            ("service", "web"),
        ])
        .unwrap();
        assert_eq!(f.to, now() - Duration::hours(2));
        assert_eq!(f.from, now() - Duration::hours(24));
        assert_eq!(f.src.unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(f.dst.unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(f.status.unwrap().range(), (500, 599));
        assert_eq!(f.dst_port, Some(443));
        assert_eq!(f.service.as_deref(), Some("web"));
    }

    #[test]
    fn bad_parameters_name_themselves_and_what_is_accepted() {
        let cases = [
            (
                vec![("from", "yesterday")],
                "from: \"yesterday\" is not a time; accepted: RFC 3339",
            ),
            (
                vec![("src", "10.0.0.300")],
                "src: \"10.0.0.300\" is not an IP address or CIDR",
            ),
            (
                vec![("src", "10.1.2.3/8")],
                "src: \"10.1.2.3/8\" has host bits set (the network is 10.0.0.0/8)",
            ),
            (
                vec![("dst_port", "99999")],
                "dst_port: \"99999\" is not a port; accepted: 0-65535",
            ),
            (
                vec![("status_class", "6xx")],
                "status_class: \"6xx\" is not a status class; accepted: 1xx, 2xx",
            ),
            (vec![("from", "-1h"), ("to", "-2h")], "from: "),
            (
                vec![("sevrice", "web")],
                "sevrice: unknown parameter; accepted: dst, dst_asn, dst_country, dst_port, from, host, limit",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
