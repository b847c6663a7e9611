//! The events the benchmark sends and loads: `collector seed`'s traffic ([`collector::traffic`]).

use bytes::Bytes;
use collector::traffic::Generator;

/// Deterministic JSON batches shaped like real traffic, time-ordered within the last hour.
/// Events without a timestamp: each is stamped when received, as live traffic is (an event stamped long
/// before it arrives is late, and its writer rolls its pair up itself; see db/migrations/0008_pairs.sql).
pub(crate) fn generate(seed: u64, events: usize, batch_size: usize) -> Vec<Bytes> {
    let batch_size = batch_size.max(1);
    (0..events.div_ceil(batch_size))
        .map(|b| {
            let first = b * batch_size;
            batch(seed, first, batch_size.min(events - first), None)
        })
        .collect()
}

/// Events `first .. first + n` of a stream where event i happens at `start_us + i * step_us` for `stamps` =
/// `(start_us, step_us)`, or carries no timestamp; the traffic of `collector seed`, with no malformed events.
/// Each batch has its own seed, so any batch can be made on its own (the query benchmark streams 10M+ events).
pub(crate) fn batch(seed: u64, first: usize, n: usize, stamps: Option<(i64, i64)>) -> Bytes {
    let mut generator = Generator::new(
        seed ^ (first as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        0.0,
    );
    let mut s = String::with_capacity(n * 300);
    s.push('[');
    for k in 0..n {
        if k > 0 {
            s.push(',');
        }
        let ts = stamps.map(|(start_us, step_us)| start_us + (first + k) as i64 * step_us);
        generator.next_event(&mut s, ts, None);
    }
    s.push(']');
    Bytes::from(s)
}
