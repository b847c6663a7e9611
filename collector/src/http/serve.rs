//! The listener: accepts connections up to a cap, serves each with timeouts on reading a request's headers
//! (which also closes a kept-alive connection that stays idle that long) and its body, and drains the open ones
//! at shutdown. A client that opens connections and sends nothing, or sends slowly, holds at most one of the
//! capped slots for at most the timeout. With TLS, the handshake runs on the connection's own task, within the
//! header timeout, and a verified client certificate's identity goes with each of its requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::tls::{self, Tls};
use crate::auth::ClientCertificate;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; one more is closed at once, with a log line.
    pub max_connections: usize,
    /// Longest wait for a request's headers, counted from the connection's start or the previous answer.
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request's body.
    pub body_read_timeout: Duration,
    /// Longest the open connections get to finish at shutdown.
    pub drain_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`, then lets open connections
/// finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_read_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    // One line per interval while connections are refused, not one per connection.
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: wait for some to close instead of spinning.
                    tracing::warn!(error = %e, "Accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_refusal_log = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    %peer,
                    "Connection refused: COLLECTOR_MAX_CONNECTIONS are open"
                );
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let service = TowerToHyperService::new(app);
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, %peer, "Connection ended with an error");
                }
                drop(slot);
                return;
            };
            let stream =
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let identity = tls::client_identity(stream.get_ref().1).map(ClientCertificate);
            let app = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                if let Some(id) = &identity {
                    req.extensions_mut().insert(id.clone());
                }
                req
            });
            let service = TowerToHyperService::new(app);
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, %peer, "Connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Open connections did not finish in time; closing them");
    }
    Ok(())
}
