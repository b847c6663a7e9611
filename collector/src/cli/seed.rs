//! `collector seed`: realistic network-communication traffic sent to a collector over HTTP, deterministic for a
//! given `--seed`, with a summary of what happened and (with `--expect`) what the collector should now report.
//! The traffic itself is [`crate::traffic`]'s, with malformed events at `--bad-ratio`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use crate::traffic::{Expectation, Generator};

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
            generator.next_event(&mut body, Some(ts), Some(&mut expectation));
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
            g.next_event(&mut s, Some(1_795_341_600_000_000), Some(&mut e));
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
