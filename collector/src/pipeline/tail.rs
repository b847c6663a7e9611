//! The live tail's write side: while at least one client follows `GET /api/tail`, each batch keeps a short copy
//! of its events, published once its COPY has committed. Every follower has a bounded queue of batches; a
//! follower that does not keep up misses batches (counted, and told), and publishing never waits: a slow
//! browser cannot slow ingest.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::Event;

/// Events of one batch copied for the tail at most; the rest are counted as missed by every follower.
pub const MAX_EVENTS_PER_BATCH: usize = 1000;
/// Batches waiting for one follower at most: with [`MAX_EVENTS_PER_BATCH`], at most 32,000 events.
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

/// A committed batch's events for the tail, and how many it had beyond those copied.
#[derive(Debug, Default)]
pub struct TailBatch {
    pub events: Vec<TailEvent>,
    pub not_copied: u64,
}

struct Follower {
    id: u64,
    tx: mpsc::Sender<Arc<TailBatch>>,
    missed: Arc<AtomicU64>,
}

/// The followers of the tail.
pub struct TailHub {
    followers: Mutex<Vec<Follower>>,
    count: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
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
    pub fn new(max: usize) -> Arc<TailHub> {
        Arc::new(TailHub {
            followers: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            max,
        })
    }

    /// Whether anyone follows: batches copy their events only then.
    pub fn is_followed(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn followers(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn follow(self: &Arc<Self>) -> Result<Subscription, TooManyTails> {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if followers.len() >= self.max {
            return Err(TooManyTails(self.max));
        }
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let missed = Arc::new(AtomicU64::new(0));
        followers.push(Follower {
            id,
            tx,
            missed: missed.clone(),
        });
        self.count.store(followers.len(), Ordering::Relaxed);
        Ok(Subscription {
            rx,
            missed,
            hub: self.clone(),
            id,
        })
    }

    /// Offers a committed batch to every follower, without waiting for any.
    pub fn publish(&self, batch: TailBatch) {
        let batch = Arc::new(batch);
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        for f in followers.iter() {
            if batch.not_copied > 0 {
                f.missed.fetch_add(batch.not_copied, Ordering::Relaxed);
            }
            if f.tx.try_send(batch.clone()).is_err() {
                f.missed
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// One follower: its batches, and the events it missed. Leaving (drop) frees its place.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<TailBatch>>,
    missed: Arc<AtomicU64>,
    hub: Arc<TailHub>,
    id: u64,
}

impl Subscription {
    pub async fn next(&mut self) -> Option<Arc<TailBatch>> {
        self.rx.recv().await
    }

    /// Events missed since the last call.
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut followers = self.hub.followers.lock().unwrap_or_else(|e| e.into_inner());
        followers.retain(|f| f.id != self.id);
        self.hub.count.store(followers.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> TailBatch {
        let event = TailEvent {
            ts_us: 0,
            producer: "p".into(),
            src_ip: None,
            src_port: None,
            dst_ip: None,
            dst_port: None,
            protocol: None,
            service: None,
            status: None,
            bytes_in: None,
            bytes_out: None,
            latency_ms: None,
            host: None,
            message: None,
            tags: None,
        };
        TailBatch {
            events: vec![event; n],
            not_copied: 0,
        }
    }

    #[tokio::test]
    async fn a_follower_that_does_not_read_misses_batches_and_is_told_how_many_events() {
        let hub = TailHub::new(2);
        let mut slow = hub.follow().unwrap();
        let mut quick = hub.follow().unwrap();
        assert!(hub.follow().is_err(), "a third follower is refused");
        for _ in 0..QUEUED_BATCHES + 5 {
            hub.publish(batch(3));
            quick.next().await.unwrap();
        }
        assert_eq!(quick.take_missed(), 0);
        assert_eq!(slow.take_missed(), 15);
        let mut got = 0;
        while let Ok(b) = slow.rx.try_recv() {
            got += b.events.len();
        }
        assert_eq!(got, QUEUED_BATCHES * 3);
        drop(slow);
        assert_eq!(hub.followers(), 1);
        assert!(hub.follow().is_ok());
    }
}
