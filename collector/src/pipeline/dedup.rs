//! Batches already accepted, by identity: a digest of the body as received (or of the client's
//! `Idempotency-Key`), per producer. A client that did not hear our 202 sends the same bytes again; within the
//! window it is answered 202 `"duplicate": true` and the batch is stored once. The identities of committed
//! batches are recorded in their transaction (`ingest_batches`, db/migrations/0011_batch_identities.sql) and
//! read back at start, so a restart does not forget them.
//!
//! Two genuinely different sends with identical bytes from one producer within the window (an agent that sends
//! the same fixed payload twice on purpose) are taken as one: set COLLECTOR_DEDUP_WINDOW_SECS=0 to turn this off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::GenericClient;

use crate::db::DbError;

/// A batch identity: 128 bits of xxh3, fast enough to take over every body (the digest costs less than a
/// hundredth of decoding it); not a defence against a producer colliding its own batches on purpose.
pub type Digest = [u8; 16];

/// Identities remembered at most: past it the oldest are forgotten early (about 40 MB).
const MAX_REMEMBERED: usize = 1_000_000;

/// The identity of a body from `producer`: of its `Idempotency-Key` when the client sent one, else of its bytes.
pub fn identity(body: &[u8], idempotency_key: Option<&[u8]>) -> Digest {
    match idempotency_key {
        Some(key) => {
            let mut tagged = b"idempotency-key:".to_vec();
            tagged.extend_from_slice(key);
            xxhash_rust::xxh3::xxh3_128(&tagged).to_be_bytes()
        }
        None => xxhash_rust::xxh3::xxh3_128(body).to_be_bytes(),
    }
}

/// Identities accepted within the window.
#[derive(Debug)]
pub struct Seen {
    window: Duration,
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    when: HashMap<(Arc<str>, Digest), i64>,
    /// In the order they were accepted, to forget the oldest first.
    order: VecDeque<(i64, Arc<str>, Digest)>,
}

impl Seen {
    /// `window` zero: nothing is remembered, every batch is new.
    pub fn new(window: Duration) -> Arc<Seen> {
        Arc::new(Seen {
            window,
            inner: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// Whether `digest` from `producer` is new at `now_us`; a new one is remembered from now on.
    pub fn first_time(&self, producer: &Arc<str>, digest: Digest, now_us: i64) -> bool {
        if !self.enabled() {
            return true;
        }
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.expire(now_us - self.window.as_micros() as i64);
        let key = (producer.clone(), digest);
        if r.when.contains_key(&key) {
            return false;
        }
        r.when.insert(key, now_us);
        r.order.push_back((now_us, producer.clone(), digest));
        true
    }

    /// Forgets a batch that was not accepted after all (the queue was full): its retry must be taken.
    pub fn forget(&self, producer: &Arc<str>, digest: Digest) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.when.remove(&(producer.clone(), digest));
    }

    /// Reads back the identities committed within the window (at start).
    pub async fn load(&self, client: &impl GenericClient) -> Result<usize, DbError> {
        if !self.enabled() {
            return Ok(0);
        }
        let rows = client
            .query(
                "SELECT producer, digest, (extract(epoch FROM accepted_at) * 1e6)::int8 FROM ingest_batches
                 WHERE accepted_at > now() - $1 * interval '1 second' ORDER BY accepted_at",
                &[&(self.window.as_secs_f64())],
            )
            .await?;
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for row in &rows {
            let producer: Arc<str> = Arc::from(row.get::<_, &str>(0));
            let Ok(digest) = <Digest>::try_from(row.get::<_, &[u8]>(1)) else {
                continue;
            };
            let at: i64 = row.get(2);
            r.when.insert((producer.clone(), digest), at);
            r.order.push_back((at, producer, digest));
        }
        Ok(rows.len())
    }
}

impl Remembered {
    fn expire(&mut self, before_us: i64) {
        while let Some((at, producer, digest)) = self.order.front() {
            if *at >= before_us && self.order.len() <= MAX_REMEMBERED {
                break;
            }
            let key = (producer.clone(), *digest);
            // Only if not remembered again since (a forgotten batch accepted later).
            if self.when.get(&key) == Some(at) {
                self.when.remove(&key);
            }
            self.order.pop_front();
        }
    }
}

/// Records the identities of the batches a flush completes, in its transaction.
pub async fn record(
    client: &impl GenericClient,
    identities: &[(&str, Digest)],
) -> Result<(), DbError> {
    if identities.is_empty() {
        return Ok(());
    }
    let producers: Vec<&str> = identities.iter().map(|(p, _)| *p).collect();
    let digests: Vec<&[u8]> = identities.iter().map(|(_, d)| &d[..]).collect();
    client
        .execute(
            // The same bytes accepted again after the window are a batch of their own: their commit time is
            // the one a replay compares with (pipeline::spool).
            "INSERT INTO ingest_batches (producer, digest) SELECT DISTINCT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (producer, digest) DO UPDATE SET accepted_at = now()",
            &[&producers, &digests],
        )
        .await?;
    Ok(())
}

/// Deletes committed identities older than `window`.
pub async fn prune(client: &impl GenericClient, window: Duration) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM ingest_batches WHERE accepted_at < now() - $1 * interval '1 second'",
            &[&window.as_secs_f64()],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_new_once_within_the_window() {
        let seen = Seen::new(Duration::from_secs(10));
        let p: Arc<str> = Arc::from("p");
        let d = identity(b"[{}]", None);
        assert!(seen.first_time(&p, d, 0));
        assert!(!seen.first_time(&p, d, 5_000_000));
        assert!(
            seen.first_time(&Arc::from("q"), d, 5_000_000),
            "per producer"
        );
        assert!(seen.first_time(&p, d, 11_000_000), "the window has passed");
        seen.forget(&p, d);
        assert!(seen.first_time(&p, d, 12_000_000));
        assert_ne!(identity(b"[{}]", Some(b"k")), d);
        assert!(Seen::new(Duration::ZERO).first_time(&p, d, 0));
        assert!(Seen::new(Duration::ZERO).first_time(&p, d, 0));
    }
}
