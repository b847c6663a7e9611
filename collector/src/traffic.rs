//! Realistic network-communication traffic, deterministic for a seed: what `collector seed` sends and what the
//! benchmark loads.
//!
//! Zipf-distributed source IPs (a few heavy talkers, a long tail, one in eight IPv6), services on their usual
//! ports, a status mix with error bursts, log-normal latencies with slow outliers, bytes in and out, occasional
//! port scans (one source, consecutive ports), and malformed events at a chosen ratio.

use std::collections::HashMap;
use std::fmt::Write as _;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

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
    /// The port scans sent, in order.
    pub scans: Vec<SeededScan>,
}

/// One port scan the generator sent: a source reaching consecutive destination ports, one event each.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct SeededScan {
    pub src_ip: String,
    pub dst_ports: u32,
    /// Its first and last events' timestamps (Unix microseconds), when the generator stamps events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_us: Option<i64>,
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

    /// Appends the next event as JSON to `out`, recording it in `exp` when given. `ts_us` is its time; without
    /// one, the event carries none and is stamped when received, as live traffic is.
    pub fn next_event(
        &mut self,
        out: &mut String,
        ts_us: Option<i64>,
        mut exp: Option<&mut Expectation>,
    ) {
        self.n += 1;
        let ts = match ts_us {
            Some(us) => {
                let ts = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
                format!(
                    r#""timestamp":"{}","#,
                    ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )
            }
            None => String::new(),
        };
        if self.rng.random::<f64>() < self.bad_ratio {
            if let Some(e) = exp.as_deref_mut() {
                e.malformed_events += 1;
            }
            let bad = match self.rng.random_range(0..3) {
                0 => format!(r#"{{{ts}"src_ip":"10.1.1.1","dst_port":70000}}"#),
                1 => format!(r#"{{{ts}"src_ip":"999.1.1.{}"}}"#, self.n % 250),
                _ => format!(r#"{{{ts}"src_ip":"10.1.1.1","bytes_in":"lots"}}"#),
            };
            out.push_str(&bad);
            return;
        }
        // A scan: one source sweeping consecutive ports, mostly refused.
        let started = self.scan.is_some();
        if !started && self.rng.random::<f64>() < 0.0005 {
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
                r#"{{{ts}"src_ip":"{src}","src_port":{},"dst_ip":"10.0.0.{}","dst_port":{port},"protocol":"tcp","service":"scan","status":0,"bytes_in":60,"bytes_out":0,"latency_ms":0.2}}"#,
                self.rng.random_range(30000..60000),
                self.n % 20
            );
            if let Some(e) = exp.as_deref_mut() {
                e.valid_events += 1;
                *e.events_by_src_ip.entry(src.clone()).or_default() += 1;
                if !started {
                    e.scans.push(SeededScan {
                        src_ip: src,
                        first_us: ts_us,
                        ..SeededScan::default()
                    });
                }
                if let Some(scan) = e.scans.last_mut() {
                    scan.dst_ports += 1;
                    scan.last_us = ts_us;
                }
            }
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
            r#"{{{ts}"src_ip":"{src}","src_port":{},"dst_ip":"10.0.{}.{}","dst_port":{port},"protocol":"{proto}","service":"{service}","status":{status},"bytes_in":{},"bytes_out":{},"latency_ms":{latency:.3},"host":"edge-{}","message":"{service} request","tags":{{"env":"prod"}}}}"#,
            self.rng.random_range(1024..65535),
            port % 7,
            self.rng.random_range(1..30),
            (300f64.ln() + self.normal()).exp() as u64,
            (5000f64.ln() + 1.5 * self.normal()).exp() as u64,
            self.rng.random_range(1..4),
        );
        if let Some(e) = exp {
            e.valid_events += 1;
            if status >= 500 {
                e.errors += 1;
            }
            *e.events_by_src_ip.entry(src).or_default() += 1;
        }
    }
}
