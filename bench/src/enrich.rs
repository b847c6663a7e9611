//! `--suite enrich`: ingest with GeoIP city and ASN databases, a 100,000-network threat list and two redaction
//! rules, against the same collector without them, alternated in one run; and the lookups' own cost per event.
//! The generated traffic uses private and documentation addresses, which enrichment labels without a lookup:
//! here they are moved to public ranges (11.0.0.0/8, 2a00:db8::/32) for both runs, so every address is looked
//! up in the databases and the list.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use deadpool_postgres::Pool;
use ipnet::IpNet;
use serde_json::json;

use collector::config::Durability as Ack;
use collector::enrich::{Geo, GeoFiles, ThreatFile, Threats};

use crate::args::BenchArgs;
use crate::data::generate;
use crate::ingest::{bench_dir, end_to_end_watched, truncate};

const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "JP", "BR", "IN", "GB", "NL"];

/// The same events with public addresses.
fn public(batches: Vec<Bytes>) -> Vec<Bytes> {
    batches
        .into_iter()
        .map(|b| {
            let s = String::from_utf8_lossy(&b)
                .replace("\"src_ip\":\"10.", "\"src_ip\":\"11.")
                .replace("\"dst_ip\":\"10.", "\"dst_ip\":\"11.")
                .replace("2001:db8::", "2a00:db8::");
            Bytes::from(s)
        })
        .collect()
}

/// A city and an ASN database covering the benchmark's public ranges: a network per /16 (IPv4) and per /48
/// (IPv6), as real databases are about as fine.
fn databases(dir: &Path) -> anyhow::Result<()> {
    let built = SystemTime::now();
    let mut city = mmdb_writer::Writer::builder("Bench-City")
        .build_epoch(built)
        .build();
    let mut asn = mmdb_writer::Writer::new("Bench-ASN");
    let mut nets: Vec<IpNet> = (0..256)
        .map(|b| format!("11.{b}.0.0/16").parse())
        .collect::<Result<_, _>>()?;
    nets.extend(
        (0..256)
            .map(|b| format!("2a00:db8:0:{b:x}::/64").parse())
            .collect::<Result<Vec<IpNet>, _>>()?,
    );
    nets.push("2a00:db8::/48".parse()?);
    for (i, net) in nets.into_iter().enumerate() {
        let country = COUNTRIES[i % COUNTRIES.len()];
        city.insert(
            net,
            &json!({"country": {"iso_code": country}, "city": {"names": {"en": format!("City {i}")}}}),
        )?;
        asn.insert(
            net,
            &json!({"autonomous_system_number": 64_512 + i, "autonomous_system_organization": format!("Network {i}")}),
        )?;
    }
    std::fs::write(dir.join("city.mmdb"), city.to_bytes()?)?;
    std::fs::write(dir.join("asn.mmdb"), asn.to_bytes()?)?;
    Ok(())
}

/// A list of 100,000 networks spread over the public IPv4 space (/24s and single addresses, as blocklists mix
/// them), one of which holds a benchmark talker.
fn threat_list(path: &Path) -> anyhow::Result<()> {
    let mut s = String::from("; bench threat list\n11.20.1.7/32 ; a talker\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..99_999u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = 12 + (x % 200) as u32;
        let (b, c, d) = ((x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8);
        if i % 4 == 0 {
            s.push_str(&format!("{a}.{b}.{c}.{d}\n"));
        } else {
            s.push_str(&format!("{a}.{b}.{c}.0/24 ; SBL{i}\n"));
        }
    }
    std::fs::write(path, s)?;
    Ok(())
}

pub(crate) async fn run(args: &BenchArgs, url: &str, pool: &Pool) -> anyhow::Result<String> {
    let dir = bench_dir().join("enrich");
    std::fs::create_dir_all(&dir)?;
    databases(&dir)?;
    let list = dir.join("threats.txt");
    threat_list(&list)?;
    let path = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = [
        ("COLLECTOR_GEOIP_CITY_DB", path(&dir.join("city.mmdb"))),
        ("COLLECTOR_GEOIP_ASN_DB", path(&dir.join("asn.mmdb"))),
        ("COLLECTOR_GEOIP_CITY", "true".into()),
        ("COLLECTOR_THREAT_LISTS", format!("bench={}", path(&list))),
        ("COLLECTOR_REDACT_MASK", "bearer".into()),
        ("COLLECTOR_REDACT_IPV4_PREFIX", "24".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let batches = public(generate(args.seed, args.events, args.batch_size));

    // A first run warms PostgreSQL and the page cache; it is not counted.
    eprintln!("Enrichment: warm-up ...");
    truncate(pool).await?;
    end_to_end_watched(&[], url, pool, &batches, args.clients, None, Ack::Spool, 0).await?;
    let mut plain = Vec::new();
    let mut enriched = Vec::new();
    for round in 1..=2 {
        eprintln!("Enrichment, round {round}: plain ...");
        truncate(pool).await?;
        plain.push(
            end_to_end_watched(&[], url, pool, &batches, args.clients, None, Ack::Spool, 0).await?,
        );
        eprintln!(
            "Enrichment, round {round}: city + ASN + 100k-network list + 2 redaction rules ..."
        );
        truncate(pool).await?;
        enriched.push(
            end_to_end_watched(&env, url, pool, &batches, args.clients, None, Ack::Spool, 0)
                .await?,
        );
    }
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*), count(src_country), count(src_city), count(src_asn), count(threat),
                    count(*) FILTER (WHERE masklen(src_ip) = 32 AND family(src_ip) = 4
                                       AND host(src_ip) NOT LIKE '%.0')
             FROM comm_logs",
            &[],
        )
        .await?;
    let counts: Vec<i64> = (0..6).map(|i| row.get(i)).collect();

    // The lookups alone, one core: every distinct address once (the databases' trees and the list's search),
    // then the stream of events' addresses as ingest meets them (mostly the cache).
    let geo = Geo::open(GeoFiles {
        city: Some(dir.join("city.mmdb")),
        asn: Some(dir.join("asn.mmdb")),
        with_city: true,
    });
    let threats = Threats::open(vec![ThreatFile {
        name: "bench".into(),
        path: list.clone(),
    }]);
    let mut addresses: Vec<IpAddr> = Vec::new();
    for b in &batches {
        let v: serde_json::Value = serde_json::from_slice(b)?;
        for e in v.as_array().into_iter().flatten() {
            for k in ["src_ip", "dst_ip"] {
                if let Some(ip) = e[k].as_str().and_then(|s| s.parse().ok()) {
                    addresses.push(ip);
                }
            }
        }
    }
    let snapshot = threats.snapshot();
    let t = Instant::now();
    let mut found = 0usize;
    for ip in &addresses {
        found += usize::from(geo.place(*ip).is_some_and(|p| p.country.is_some()));
        found += usize::from(snapshot.matching(*ip).is_some());
    }
    let per_address_us = t.elapsed().as_secs_f64() * 1e6 / addresses.len().max(1) as f64;
    let t = Instant::now();
    for ip in addresses.iter().take(100_000) {
        found += usize::from(snapshot.matching(*ip).is_some());
    }
    let list_us = t.elapsed().as_secs_f64() * 1e6 / addresses.len().clamp(1, 100_000) as f64;
    let _ = found;

    let (p, e): (Vec<f64>, Vec<f64>) = (
        plain.iter().map(|(m, _)| m.rate()).collect(),
        enriched.iter().map(|(m, _)| m.rate()).collect(),
    );
    let cpu = |runs: &[(crate::report::Measured, crate::ingest::Resources)]| {
        runs.iter().map(|(_, r)| r.cpu_secs).sum::<f64>()
            / runs.iter().map(|(m, _)| m.events).sum::<usize>().max(1) as f64
            * 1e6
    };
    let ratio = (e[0] + e[1]) / (p[0] + p[1]);
    Ok(format!(
        "## Enrichment\n\n\
         `scripts/bench.sh --suite enrich`: {events} events in {batch}-event JSON batches from {clients} clients, \
         with the spool, the traffic's addresses moved to public ranges so that each is looked up. Enriched: a \
         GeoIP city database and an ASN database ({nets} networks each, city names stored), one threat list of \
         100,000 networks, and two redaction rules (`COLLECTOR_REDACT_MASK=bearer`, \
         `COLLECTOR_REDACT_IPV4_PREFIX=24`). Plain and enriched runs alternated, twice, after an uncounted warm-up \
         run.\n\n\
         | run | plain events/s | enriched events/s | enriched ÷ plain |\n|---|---:|---:|---:|\n\
         | 1 | {p0:.0} | {e0:.0} | {r0:.2}× |\n| 2 | {p1:.0} | {e1:.0} | {r1:.2}× |\n\
         | both | | | **{ratio:.2}×** (target ≥ 0.9×: {met}) |\n\n\
         Collector CPU per event (from /proc, HTTP included): {cp:.2} µs plain, {ce:.2} µs enriched \
         ({cd:+.2} µs). Cutting addresses to their /24 leaves fewer distinct sources, so the per-source rollups \
         upsert fewer rows: part of what the lookups cost is won back there. The lookups alone, on one core: {per_address_us:.3} µs per address for the city and ASN \
         databases (through the collector's cache) and the list together, {list_us:.3} µs for the list's \
         binary search alone.\n\n\
         The last enriched run stored {rows} events: {country} with a source country, {city} with a city, \
         {asn} with an AS number, {threat} matched the list, and {whole} IPv4 sources kept a full address \
         (0 expected: the /24 rule).\n",
        events = args.events,
        batch = args.batch_size,
        clients = args.clients,
        nets = 256 + 257,
        p0 = p[0],
        p1 = p[1],
        e0 = e[0],
        e1 = e[1],
        r0 = e[0] / p[0],
        r1 = e[1] / p[1],
        met = if ratio >= 0.9 { "met" } else { "not met" },
        cp = cpu(&plain),
        ce = cpu(&enriched),
        cd = cpu(&enriched) - cpu(&plain),
        rows = counts[0],
        country = counts[1],
        city = counts[2],
        asn = counts[3],
        threat = counts[4],
        whole = counts[5],
    ))
}
