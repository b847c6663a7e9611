//! Observers of a collector under load: live tails reading every committed event, and a dashboard's
//! periodic reads, so that their cost on ingest is measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::args::KEY;

pub(crate) struct Watchers {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    events: Arc<AtomicU64>,
}

/// `tails` followers of `/api/tail` and one dashboard; `None` when `tails` is 0.
pub(crate) async fn start(
    addr: std::net::SocketAddr,
    tails: usize,
) -> anyhow::Result<Option<Watchers>> {
    if tails == 0 {
        return Ok(None);
    }
    let stop = CancellationToken::new();
    let events = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..tails {
        let mut resp = http
            .get(format!("http://{addr}/api/tail"))
            .header("x-api-key", KEY)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "tail answered {}", resp.status());
        let (stop, events) = (stop.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let chunk = tokio::select! {
                    () = stop.cancelled() => return,
                    c = resp.chunk() => c,
                };
                match chunk {
                    // Counting events by their start is enough to keep up: `"ts_us":` begins each one.
                    Ok(Some(bytes)) => {
                        let n = bytes.windows(8).filter(|w| w == b"\"ts_us\":").count();
                        events.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ => return,
                }
            }
        }));
    }
    let page = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let base = format!("http://{addr}");
            let reads = [
                "/api/status",
                "/metrics/volume?from=-1h",
                "/metrics/error-rate?from=-1h",
                "/metrics/error-rate?from=-2h&to=-1h",
                "/metrics/latency?from=-1h",
                "/metrics/top-talkers?from=-1h&by=src_ip&limit=10",
                "/api/logs?from=-1h&limit=50",
            ];
            loop {
                for path in reads {
                    let _ = http
                        .get(format!("{base}{path}"))
                        .header("x-api-key", KEY)
                        .send()
                        .await;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        })
    };
    tasks.push(page);
    Ok(Some(Watchers {
        stop,
        tasks,
        events,
    }))
}

impl Watchers {
    /// Stops them; the events the tails received.
    pub(crate) async fn stop(self) -> u64 {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        self.events.load(Ordering::Relaxed)
    }
}
