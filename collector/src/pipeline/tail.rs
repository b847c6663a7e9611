//! The live tail's write side. While clients follow `GET /api/tail`, each batch copies the events that pass a
//! follower's filters, up to that follower's rate (`COLLECTOR_TAIL_EVENTS_PER_SEC`: a person reads a few
//! events a second, and copying every event of a 200k events/s ingest for every follower would cost the
//! writers their CPU), and hands them over once its COPY has committed. Each follower has a bounded queue;
//! what it does not get (over its rate, or its queue full because it does not read) is counted and told.
//! Publishing never waits: a slow browser cannot slow ingest.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::enrich::Enriched;
use crate::event::Event;
use crate::query::filters::Filters;
use crate::query::live;

/// Most followers at once: each is a bit of a captured event's mask.
pub const MAX_FOLLOWERS: usize = 64;
/// Batches waiting for one follower at most.
const QUEUED_BATCHES: usize = 32;
/// Longest message and tags kept for the tail, in bytes.
const MAX_MESSAGE_BYTES: usize = 512;
const MAX_TAGS_BYTES: usize = 1024;

/// One event as the tail shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TailEvent {
    /// Microseconds since the epoch.
    pub ts_us: i64,
    pub producer: Arc<str>,
    pub src_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_ip: Option<IpAddr>,
    pub dst_port: Option<u16>,
    pub protocol: Option<String>,
    pub service: Option<String>,
    pub status: Option<i32>,
    pub bytes_in: Option<i64>,
    pub bytes_out: Option<i64>,
    pub latency_ms: Option<f64>,
    pub host: Option<String>,
    pub message: Option<String>,
    /// The tags object, when it is short enough to show.
    pub tags: Option<Box<serde_json::value::RawValue>>,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl TailEvent {
    pub fn of(event: &Event<'_>, producer: &Arc<str>) -> TailEvent {
        TailEvent {
            ts_us: event.ts_us,
            producer: producer.clone(),
            src_ip: event.src_ip,
            src_port: event.src_port,
            dst_ip: event.dst_ip,
            dst_port: event.dst_port,
            protocol: event.protocol.as_deref().map(str::to_string),
            service: event.service.as_deref().map(str::to_string),
            status: event.status,
            bytes_in: event.bytes_in,
            bytes_out: event.bytes_out,
            latency_ms: event.latency_ms,
            host: event.host.as_deref().map(str::to_string),
            message: event.message.as_deref().map(|m| cut(m, MAX_MESSAGE_BYTES)),
            tags: event
                .tags
                .filter(|t| t.len() <= MAX_TAGS_BYTES)
                .and_then(|t| serde_json::value::RawValue::from_string(t.to_string()).ok()),
        }
    }
}

/// One follower: its filters, its rate, its queue and what it missed.
pub struct Follower {
    filters: Filters,
    tx: mpsc::Sender<(Arc<TailBatch>, usize)>,
    missed: AtomicU64,
    /// Events taken in the current second, and that second (Unix seconds).
    taken: AtomicU64,
    second: AtomicU64,
    rate: u64,
}

impl Follower {
    /// Whether the follower may have one more event in `second`.
    fn take(&self, second: u64) -> bool {
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.taken.store(0, Ordering::Relaxed);
        }
        self.taken.fetch_add(1, Ordering::Relaxed) < self.rate
    }
}

/// A batch's events copied for the followers known when it was built (`followers`): each event with the set of
/// followers (bits, by position) it is for.
pub struct TailBatch {
    followers: Arc<[Arc<Follower>]>,
    events: Vec<(TailEvent, u64)>,
}

impl TailBatch {
    /// The events for the follower at `position`.
    pub fn events_for(&self, position: usize) -> impl Iterator<Item = &TailEvent> {
        self.events
            .iter()
            .filter(move |(_, mask)| mask & (1 << position) != 0)
            .map(|(e, _)| e)
    }
}

/// Copies, while a batch is built, the events its followers want.
pub struct Capture {
    batch: TailBatch,
    second: u64,
}

impl Capture {
    /// Offers one validated event, with what enrichment found of its addresses.
    pub fn offer(&mut self, event: &Event<'_>, producer: &Arc<str>, enriched: &Enriched<'_>) {
        let mut mask = 0u64;
        for (i, f) in self.batch.followers.iter().enumerate() {
            if live::matches_event(&f.filters, event, producer, enriched) {
                if f.take(self.second) {
                    mask |= 1 << i;
                } else {
                    f.missed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if mask != 0 {
            self.batch
                .events
                .push((TailEvent::of(event, producer), mask));
        }
    }

    pub fn finish(self) -> Option<TailBatch> {
        (!self.batch.events.is_empty()).then_some(self.batch)
    }
}

/// The followers of the tail.
pub struct TailHub {
    followers: Mutex<Arc<[Arc<Follower>]>>,
    max: usize,
    rate: u64,
}

impl std::fmt::Debug for TailHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailHub")
            .field("followers", &self.followers())
            .field("max", &self.max)
            .finish()
    }
}

/// Every allowed follower is taken.
#[derive(Debug, thiserror::Error)]
#[error("{0} live tails are open already (COLLECTOR_MAX_TAILS); close one or retry later")]
pub struct TooManyTails(pub usize);

impl TailHub {
    /// At most `max` followers (and [`MAX_FOLLOWERS`]), each sent at most `rate` events a second.
    pub fn new(max: usize, rate: u64) -> Arc<TailHub> {
        Arc::new(TailHub {
            followers: Mutex::new(Arc::from(Vec::new())),
            max: max.min(MAX_FOLLOWERS),
            rate,
        })
    }

    fn current(&self) -> Arc<[Arc<Follower>]> {
        self.followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn followers(&self) -> usize {
        self.current().len()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A capture for a batch about to be built, when anyone follows.
    pub fn capture(&self) -> Option<Capture> {
        let followers = self.current();
        if followers.is_empty() {
            return None;
        }
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(Capture {
            batch: TailBatch {
                followers,
                events: Vec::new(),
            },
            second,
        })
    }

    pub fn follow(self: &Arc<Self>, filters: Filters) -> Result<Subscription, TooManyTails> {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if followers.len() >= self.max {
            return Err(TooManyTails(self.max));
        }
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let follower = Arc::new(Follower {
            filters,
            tx,
            missed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            second: AtomicU64::new(0),
            rate: self.rate,
        });
        let mut next: Vec<Arc<Follower>> = followers.to_vec();
        next.push(follower.clone());
        *followers = Arc::from(next);
        Ok(Subscription {
            rx,
            follower,
            hub: self.clone(),
        })
    }

    /// Hands a committed batch to the followers it was captured for, without waiting for any.
    pub fn publish(&self, batch: TailBatch) {
        let batch = Arc::new(batch);
        for (i, f) in batch.followers.iter().enumerate() {
            if f.tx.is_closed() {
                continue;
            }
            if f.tx.try_send((batch.clone(), i)).is_err() {
                let lost = batch.events_for(i).count() as u64;
                f.missed.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
}

/// One follower's end: its batches, and the events it missed. Leaving (drop) frees its place.
pub struct Subscription {
    rx: mpsc::Receiver<(Arc<TailBatch>, usize)>,
    follower: Arc<Follower>,
    hub: Arc<TailHub>,
}

impl Subscription {
    /// The next committed batch with events for this follower, and its position in it.
    pub async fn next(&mut self) -> Option<(Arc<TailBatch>, usize)> {
        self.rx.recv().await
    }

    /// Events missed since the last call.
    pub fn take_missed(&self) -> u64 {
        self.follower.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut followers = self.hub.followers.lock().unwrap_or_else(|e| e.into_inner());
        let next: Vec<Arc<Follower>> = followers
            .iter()
            .filter(|f| !Arc::ptr_eq(f, &self.follower))
            .cloned()
            .collect();
        *followers = Arc::from(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn filters(q: &[(&str, &str)]) -> Filters {
        let params: HashMap<String, String> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filters::parse(&params, &[], chrono::Utc::now()).unwrap()
    }

    fn event(service: &'static str) -> Event<'static> {
        Event {
            ts_us: 0,
            src_ip: None,
            src_port: None,
            dst_ip: None,
            dst_port: None,
            protocol: None,
            service: Some(service.into()),
            status: None,
            bytes_in: None,
            bytes_out: None,
            latency_ms: None,
            host: None,
            message: None,
            tags: None,
        }
    }

    #[tokio::test]
    async fn each_follower_gets_its_events_up_to_its_rate_and_is_told_the_rest() {
        let hub = TailHub::new(2, 5);
        let p: Arc<str> = "p".into();
        let mut web = hub.follow(filters(&[("service", "web")])).unwrap();
        let mut all = hub.follow(filters(&[])).unwrap();
        assert!(
            hub.follow(filters(&[])).is_err(),
            "a third follower is refused"
        );
        let mut c = hub.capture().unwrap();
        for s in ["web", "dns", "web"] {
            c.offer(&event(s), &p, &Default::default());
        }
        hub.publish(c.finish().unwrap());
        let (b, i) = web.next().await.unwrap();
        assert_eq!(b.events_for(i).count(), 2);
        let (b, i) = all.next().await.unwrap();
        assert_eq!(b.events_for(i).count(), 3);
        // Over the rate (5 a second): the rest is counted, not copied.
        let mut c = hub.capture().unwrap();
        for _ in 0..10 {
            c.offer(&event("web"), &p, &Default::default());
        }
        let b = c.finish().unwrap();
        let got = b.events_for(1).count() as u64;
        assert!(got <= 5);
        assert_eq!(got + all.take_missed(), 10);
        drop(web);
        assert_eq!(hub.followers(), 1);
    }

    #[tokio::test]
    async fn a_follower_that_does_not_read_misses_batches() {
        let hub = TailHub::new(2, u64::MAX);
        let p: Arc<str> = "p".into();
        let slow = hub.follow(filters(&[])).unwrap();
        for _ in 0..QUEUED_BATCHES + 5 {
            let mut c = hub.capture().unwrap();
            for _ in 0..3 {
                c.offer(&event("web"), &p, &Default::default());
            }
            hub.publish(c.finish().unwrap());
        }
        assert_eq!(slow.take_missed(), 15);
    }
}
