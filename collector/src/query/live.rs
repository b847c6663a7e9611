//! The read side of the live tail: which events a follower's filters keep (the same parameters as every read,
//! applied in memory to each event as its batch is built; the time window does not apply); and whether anything
//! was ever stored.

use super::filters::Filters;
use crate::enrich::{Enriched, Place};
use crate::event::Event;

/// Whether `e`, sent by `producer`, passes `f` (its window aside). Called for every event while a tail is
/// followed: comparisons only, no allocation.
pub fn matches_event(f: &Filters, e: &Event<'_>, producer: &str, enriched: &Enriched<'_>) -> bool {
    let Enriched { src, dst, threat } = *enriched;
    let country = |want: &Option<String>, p: Option<&Place>| {
        want.as_deref()
            .is_none_or(|w| p.and_then(|p| p.country.as_deref()) == Some(w))
    };
    let asn = |want: Option<i64>, p: Option<&Place>| {
        want.is_none_or(|w| p.and_then(|p| p.asn) == Some(w))
    };
    let text = |want: &Option<String>, got: &Option<std::borrow::Cow<'_, str>>| {
        want.as_ref()
            .is_none_or(|w| got.as_deref() == Some(w.as_str()))
    };
    text(&f.service, &e.service)
        && text(&f.protocol, &e.protocol)
        && text(&f.host, &e.host)
        && f.producer.as_deref().is_none_or(|p| producer == p)
        && f.producers
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| producer == p))
        && f.src
            .is_none_or(|n| e.src_ip.is_some_and(|ip| n.contains(ip)))
        && f.dst
            .is_none_or(|n| e.dst_ip.is_some_and(|ip| n.contains(ip)))
        && f.dst_port.is_none_or(|p| e.dst_port == Some(p))
        && f.status.is_none_or(|s| {
            let (lo, hi) = s.range();
            e.status.is_some_and(|c| (lo..=hi).contains(&c))
        })
        && f.min_latency_ms
            .is_none_or(|m| e.latency_ms.is_some_and(|l| l >= m))
        && country(&f.src_country, src)
        && country(&f.dst_country, dst)
        && asn(f.src_asn, src)
        && asn(f.dst_asn, dst)
        && f.threat.as_ref().is_none_or(|w| w.admits(threat))
}

/// Whether any event was ever stored (of `producers`, when given): an empty dashboard then says "nothing
/// ingested yet" rather than "nothing in this range".
pub async fn has_events(
    client: &impl deadpool_postgres::GenericClient,
    producers: Option<&[String]>,
) -> Result<bool, crate::db::DbError> {
    let producers: Option<Vec<String>> = producers.map(<[String]>::to_vec);
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM comm_rollup WHERE $1::text[] IS NULL OR producer = ANY($1))
                 OR EXISTS (SELECT 1 FROM comm_rollup_delta WHERE $1::text[] IS NULL OR producer = ANY($1))",
            &[&producers],
        )
        .await?;
    Ok(row.get(0))
}
