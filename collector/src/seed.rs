//! `collector seed`: realistic network-communication traffic sent to a collector over HTTP, deterministic for a
//! given `--seed`, with a summary of what happened and (with `--expect`) what the collector should now report.
//!
//! The traffic: Zipf-distributed source IPs (a few heavy talkers, a long tail, one in eight IPv6), services on
//! their usual ports, a status mix with error bursts, log-normal latencies with slow outliers, bytes in and out,
//! occasional port scans (one source, consecutive ports), and malformed events at `--bad-ratio`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// The collector to send to.
    #[arg(long, env = "COLLECTOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key; default: the development key in ./data/dev-api-key.
    #[arg(long, env = "COLLECTOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Events to send (default 10000 unless --duration is given).
    #[arg(long)]
    pub count: Option<u64>,
    /// Seconds to keep sending (with --rate, count = rate × duration).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Events per second; without it, as fast as the collector acknowledges (--max).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Send as fast as possible (the default when --rate is not given).
    #[arg(long, conflicts_with = "rate")]
    pub max: bool,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seed: the same seed sends the same events (timestamps aside, unless --start is given).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of events that are malformed (bad port, bad IP, wrong type), 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Backfill: the first event's time (RFC 3339 or relative like -24h); default: each event is sent with now.
    #[arg(long, allow_hyphen_values = true)]
    pub start: Option<String>,
    /// Backfill: seconds over which event times spread after --start (default 3600).
    #[arg(long)]
    pub spread: Option<f64>,
    /// Print what the collector should report for the seeded events (top talkers, error rate).
    #[arg(long)]
    pub expect: bool,
    /// Also write that expectation as JSON to this file.
    #[arg(long)]
    pub expect_json: Option<std::path::PathBuf>,
}

/// Services on their usual ports, with their share of traffic.
const SERVICES: &[(&str, u16, &str, u32)] = &[
    ("web", 443, "tcp", 40),
    ("api", 8443, "tcp", 25),
    ("dns", 53, "udp", 15),
    ("db", 5432, "tcp", 8),
    ("ssh", 22, "tcp", 4),
    ("smtp", 25, "tcp", 4),
    ("ntp", 123, "udp", 4),
];
const TALKERS: usize = 2000;
const ZIPF_S: f64 = 1.1;

/// The deterministic event source.
pub struct Generator {
    rng: StdRng,
    /// Cumulative Zipf weights over talker ranks.
    zipf: Vec<f64>,
    service_weights: u32,
    bad_ratio: f64,
    n: u64,
    /// A port scan in progress: (source, next port, events left).
    scan: Option<(String, u16, u32)>,
}

/// What the generator sent, as the collector should count it.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Expectation {
    pub valid_events: u64,
    pub malformed_events: u64,
    pub errors: u64,
    pub error_ratio: f64,
    pub events_by_src_ip: HashMap<String, u64>,
    /// The 10 largest sources by events (ties by address text).
    pub top_talkers: Vec<(String, u64)>,
}

impl Generator {
    pub fn new(seed: u64, bad_ratio: f64) -> Self {
        let mut acc = 0.0;
        let zipf = (1..=TALKERS)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(ZIPF_S);
                acc
            })
            .collect();
        Generator {
            rng: StdRng::seed_from_u64(seed),
            zipf,
            service_weights: SERVICES.iter().map(|s| s.3).sum(),
            bad_ratio: bad_ratio.clamp(0.0, 1.0),
            n: 0,
            scan: None,
        }
    }

    fn talker(&mut self) -> String {
        let total = *self.zipf.last().unwrap_or(&1.0);
        let x = self.rng.random::<f64>() * total;
        let rank = self.zipf.partition_point(|c| *c < x);
        if rank % 8 == 7 {
            format!("2001:db8::{:x}", rank + 1)
        } else {
            format!(
                "10.{}.{}.{}",
                20 + rank / 65536,
                (rank / 256) % 256,
                rank % 256
            )
        }
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Appends the next event as JSON to `out`, recording it in `exp`. `ts_us` is its time.
    pub fn next_event(&mut self, out: &mut String, ts_us: i64, exp: &mut Expectation) {
        self.n += 1;
        let ts = chrono::DateTime::from_timestamp_micros(ts_us).unwrap_or_default();
        let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if self.rng.random::<f64>() < self.bad_ratio {
            exp.malformed_events += 1;
            let bad = match self.rng.random_range(0..3) {
                0 => format!(r#"{{"timestamp":"{ts}","src_ip":"10.1.1.1","dst_port":70000}}"#),
                1 => format!(
                    r#"{{"timestamp":"{ts}","src_ip":"999.1.1.{}"}}"#,
                    self.n % 250
                ),
                _ => format!(r#"{{"timestamp":"{ts}","src_ip":"10.1.1.1","bytes_in":"lots"}}"#),
            };
            out.push_str(&bad);
            return;
        }
        // A scan: one source sweeping consecutive ports, mostly refused.
        if self.scan.is_none() && self.rng.random::<f64>() < 0.0005 {
            let src = format!("203.0.113.{}", self.rng.random_range(1..255));
            self.scan = Some((
                src,
                self.rng.random_range(1..60000),
                self.rng.random_range(50..200),
            ));
        }
        if let Some((src, port, left)) = self.scan.take() {
            if left > 1 {
                self.scan = Some((src.clone(), port.wrapping_add(1), left - 1));
            }
            let _ = write!(
                out,
                r#"{{"timestamp":"{ts}","src_ip":"{src}","src_port":{},"dst_ip":"10.0.0.{}","dst_port":{port},"protocol":"tcp","service":"scan","status":0,"bytes_in":60,"bytes_out":0,"latency_ms":0.2}}"#,
                self.rng.random_range(30000..60000),
                self.n % 20
            );
            exp.valid_events += 1;
            *exp.events_by_src_ip.entry(src).or_default() += 1;
            return;
        }
        let mut pick = self.rng.random_range(0..self.service_weights);
        let &(service, port, proto, _) = SERVICES
            .iter()
            .find(|s| {
                let hit = pick < s.3;
                pick = pick.saturating_sub(s.3);
                hit
            })
            .unwrap_or(&SERVICES[0]);
        // Error bursts: for 300 of every 5000 events, one service fails a third of the time.
        let in_burst =
            self.n % 5000 < 300 && service == SERVICES[(self.n / 5000) as usize % SERVICES.len()].0;
        let p_error = if in_burst { 0.33 } else { 0.02 };
        let roll: f64 = self.rng.random();
        let status = if roll < p_error {
            [500, 502, 503][self.rng.random_range(0..3)]
        } else if roll < p_error + 0.05 {
            404
        } else if roll < p_error + 0.07 {
            301
        } else {
            200
        };
        // Log-normal latency around 20 ms; 1% slow outliers.
        let mut latency = (20f64.ln() + 0.8 * self.normal()).exp();
        if self.rng.random::<f64>() < 0.01 {
            latency *= 20.0;
        }
        let src = self.talker();
        let _ = write!(
            out,
            r#"{{"timestamp":"{ts}","src_ip":"{src}","src_port":{},"dst_ip":"10.0.{}.{}","dst_port":{port},"protocol":"{proto}","service":"{service}","status":{status},"bytes_in":{},"bytes_out":{},"latency_ms":{latency:.3},"host":"edge-{}","message":"{service} request"}}"#,
            self.rng.random_range(1024..65535),
            port % 7,
            self.rng.random_range(1..30),
            (300f64.ln() + self.normal()).exp() as u64,
            (5000f64.ln() + 1.5 * self.normal()).exp() as u64,
            self.rng.random_range(1..4),
        );
        exp.valid_events += 1;
        if status >= 500 {
            exp.errors += 1;
        }
        *exp.events_by_src_ip.entry(src).or_default() += 1;
    }
}

impl Expectation {
    fn finish(&mut self) {
        self.error_ratio = if self.valid_events > 0 {
            self.errors as f64 / self.valid_events as f64
        } else {
            0.0
        };
        let mut v: Vec<(String, u64)> = self
            .events_by_src_ip
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(10);
        self.top_talkers = v;
    }

    fn render(&self) -> String {
        let mut s = format!(
            "Expected: {} valid events ({} malformed, rejected), {} errors (status >= 500), error ratio {:.4}\nTop talkers by events:\n",
            self.valid_events, self.malformed_events, self.errors, self.error_ratio
        );
        for (ip, n) in &self.top_talkers {
            let _ = writeln!(s, "  {ip:<20} {n}");
        }
        s
    }
}

#[derive(Default)]
struct Totals {
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string("data/dev-api-key")
            .map(|k| k.trim().to_string())
            .context("no --api-key (COLLECTOR_API_KEY) and no ./data/dev-api-key")?,
    };
    let count = match (args.count, args.duration, args.rate) {
        (Some(c), _, _) => c,
        (None, Some(d), Some(r)) => (d * r) as u64,
        (None, Some(_), None) => u64::MAX,
        (None, None, _) => 10_000,
    };
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let backfill = match &args.start {
        Some(s) => Some(
            crate::query::filters::parse_time("start", s, chrono::Utc::now())
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .timestamp_micros(),
        ),
        None => None,
    };
    let spread_us = (args.spread.unwrap_or(3600.0) * 1e6) as i64;
    let step_us = if count == u64::MAX {
        0
    } else {
        spread_us / count.max(1) as i64
    };

    let bar = indicatif::ProgressBar::new(if count == u64::MAX { 0 } else { count });
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events  {per_sec}  {elapsed_precise}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (tx, rx) = async_channel::bounded::<(Bytes, u64)>(args.concurrency * 2);
    let totals = Arc::new(Totals::default());
    let http = reqwest::Client::new();
    let endpoint = format!("{}/ingest", args.url.trim_end_matches('/'));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (rx, totals, http, endpoint, key, bar) = (
            rx.clone(),
            totals.clone(),
            http.clone(),
            endpoint.clone(),
            key.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            while let Ok((body, n)) = rx.recv().await {
                let mut backoff = Duration::from_millis(100);
                loop {
                    let t = Instant::now();
                    let resp = http
                        .post(&endpoint)
                        .header("x-api-key", &key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = resp.status();
                    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
                    if let Ok(mut l) = totals.latencies_ms.lock() {
                        l.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    match status.as_u16() {
                        202 => {
                            totals.acknowledged.fetch_add(
                                answer["accepted"].as_u64().unwrap_or(0),
                                Ordering::Relaxed,
                            );
                            totals.rejected.fetch_add(
                                answer["rejected"].as_u64().unwrap_or(0),
                                Ordering::Relaxed,
                            );
                            bar.inc(n);
                            break;
                        }
                        429 | 503 => {
                            totals.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        other => anyhow::bail!("the collector answered {other}: {answer}"),
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }

    let started = Instant::now();
    let mut generator = Generator::new(args.seed, args.bad_ratio);
    let mut expectation = Expectation::default();
    let mut sent = 0u64;
    let mut batch_no = 0u64;
    while sent < count && deadline.is_none_or(|d| Instant::now() < d) {
        let n = (args.batch_size as u64).min(count - sent);
        let mut body = String::with_capacity(n as usize * 320);
        body.push('[');
        let now_us = chrono::Utc::now().timestamp_micros();
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            let ts = backfill.map_or(now_us, |start| start + (sent + i) as i64 * step_us);
            generator.next_event(&mut body, ts, &mut expectation);
        }
        body.push(']');
        if let Some(rate) = args.rate {
            // Pacing: batch k leaves at k × batch / rate.
            let due =
                started + Duration::from_secs_f64(batch_no as f64 * args.batch_size as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        if tx.send((Bytes::from(body), n)).await.is_err() {
            break;
        }
        sent += n;
        batch_no += 1;
    }
    drop(tx);
    for w in workers {
        w.await??;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    expectation.finish();

    let mut lat = totals
        .latencies_ms
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "Sent {sent} events in {secs:.1} s ({:.0} events/s): {} acknowledged, {} rejected, {} retries after 503/429; \
         ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sent as f64 / secs.max(1e-9),
        totals.acknowledged.load(Ordering::Relaxed),
        totals.rejected.load(Ordering::Relaxed),
        totals.retries.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0.0),
    );
    if args.expect {
        print!("{}", expectation.render());
    }
    if let Some(path) = &args.expect_json {
        std::fs::write(path, serde_json::to_string_pretty(&expectation)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(seed: u64, n: usize, bad: f64) -> (String, Expectation) {
        let mut g = Generator::new(seed, bad);
        let mut e = Expectation::default();
        let mut s = String::new();
        for i in 0..n {
            s.push_str(if i == 0 { "[" } else { "," });
            g.next_event(&mut s, 1_795_341_600_000_000, &mut e);
        }
        s.push(']');
        e.finish();
        (s, e)
    }

    #[test]
    fn same_seed_same_events() {
        assert_eq!(events(3, 2000, 0.01), events(3, 2000, 0.01));
        assert_ne!(events(3, 2000, 0.0).0, events(4, 2000, 0.0).0);
    }

    #[test]
    fn traffic_has_the_promised_shape() {
        let (text, e) = events(1, 50_000, 0.02);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.len(), 50_000);
        assert_eq!(e.valid_events + e.malformed_events, 50_000);
        assert!((e.malformed_events as f64 / 50_000.0 - 0.02).abs() < 0.005);
        // Zipf: the top talker alone sends several percent; hundreds of sources in the tail.
        assert!(
            e.top_talkers[0].1 as f64 > 0.05 * e.valid_events as f64,
            "{:?}",
            e.top_talkers[0]
        );
        assert!(e.events_by_src_ip.len() > 500);
        assert!(
            e.events_by_src_ip.keys().any(|k| k.contains(':')),
            "some IPv6 sources"
        );
        assert!(
            e.error_ratio > 0.02 && e.error_ratio < 0.1,
            "{}",
            e.error_ratio
        );
        let scans = parsed.iter().filter(|v| v["service"] == "scan").count();
        assert!(scans > 0, "port scans appear");
    }
}
