//! The HTTP API. Each module exports `router()`; handlers are thin and call named functions.

mod alerts;
mod compat;
mod dashboard;
pub mod error;
mod health;
mod ingest;
mod keys;
mod live;
pub mod openapi;
mod prometheus;
mod read;
mod serve;
pub mod tls;

pub use read::RawReads;
pub use serve::{serve, ConnLimits};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use deadpool_postgres::Pool;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::auth::{ClientCertificate, KeyRing, Principal, Producer, Scope, Scopes};
use crate::pipeline::intake::Intake;
use crate::pipeline::queue::Queue;
use crate::pipeline::spool::Spool;
use crate::telemetry::Stats;
use error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The writers' side: readiness checks and maintenance.
    pub pool: Pool,
    /// Reads only, so that they never take a connection the writers need.
    pub read_pool: Pool,
    /// Per-key gates on reads of raw events; `None`: no limit.
    pub raw_reads: Option<Arc<read::RawReads>>,
    pub queue: Queue,
    /// The write-ahead spool, in `spool` durability.
    pub spool: Option<Spool>,
    /// The private PostgreSQL's free disk, when the collector runs one.
    pub db_disk: Option<Arc<crate::pipeline::disk::DiskGuard>>,
    /// Bootstrap and stored API keys.
    pub keys: Arc<KeyRing>,
    /// GeoIP and ASN enrichment, when configured (its databases in /readyz and /metrics).
    pub geo: Option<Arc<crate::enrich::Geo>>,
    /// The live tail's followers.
    pub tail: Arc<crate::pipeline::tail::TailHub>,
    /// Decoding: its limits and the memory budget of ingest.
    pub intake: Intake,
    pub max_body_bytes: usize,
    /// Batches accepted within the dedup window, by identity.
    pub seen: Arc<crate::pipeline::dedup::Seen>,
    /// Queue depth (events) above which /readyz says not ready.
    pub queue_high_water: usize,
    /// Longest one statement of a read may run (`None`: no limit).
    pub query_timeout: Option<std::time::Duration>,
    pub stats: Arc<Stats>,
    /// What alert evaluation and delivery cost and did.
    pub alerts: Arc<crate::alerts::AlertStats>,
}

/// Rate limiting is per API key, so one noisy producer cannot starve the others.
#[derive(Clone)]
struct ProducerKey;

impl KeyExtractor for ProducerKey {
    type Key = Producer;

    fn extract<T>(&self, req: &http::Request<T>) -> Result<Producer, GovernorError> {
        req.extensions()
            .get::<Producer>()
            .cloned()
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// The whole API. `rate` is (requests per second per key, burst); `None` disables rate limiting.
pub fn router(state: AppState, rate: Option<(u32, u32)>) -> Router {
    let mut ingest = ingest::router()
        .merge(compat::router())
        .layer(DefaultBodyLimit::max(state.max_body_bytes));
    if let Some((per_sec, burst)) = rate {
        let period = Duration::from_nanos(1_000_000_000 / u64::from(per_sec.max(1)));
        let config = GovernorConfigBuilder::default()
            .key_extractor(ProducerKey)
            .period(period)
            .burst_size(burst.max(1))
            .use_headers()
            .finish();
        if let Some(config) = config {
            ingest = ingest.layer(GovernorLayer::new(config).error_handler(|e| {
                match e {
                    GovernorError::TooManyRequests { wait_time, headers } => {
                        ApiError::RateLimited {
                            wait_secs: wait_time,
                            headers,
                        }
                    }
                    other => ApiError::Internal(other.to_string()),
                }
                .into_response()
            }));
        }
    }
    // Authentication runs first (outermost), so the rate limiter sees the producer.
    let ingest = ingest
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_ingest,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), time_ingest));
    // Reading data needs a key with the read scope; health and the collector's own metrics need none
    // (scrapers and probes).
    let api = read::router()
        .merge(live::router())
        .layer(middleware::from_fn_with_state(state.clone(), require_read));
    // Reading alerts needs the read scope, changing them the admin scope: each handler says which.
    let alerts = alerts::router().layer(middleware::from_fn_with_state(
        state.clone(),
        require_read_or_admin,
    ));
    let admin = keys::router().layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(ingest)
        .merge(api)
        .merge(alerts)
        .merge(admin)
        .merge(health::router())
        .merge(prometheus::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .layer(middleware::from_fn(dashboard::page_for_browsers))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

async fn count_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    state.stats.record_response(response.status().as_u16());
    response
}

/// The acknowledgement time of every ingest answer: a client's own figure adds the network and its own
/// scheduling, which this one leaves out.
async fn time_ingest(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state
        .stats
        .ingest_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn require_ingest(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authorize(&[Scope::Ingest], &state, req, next).await
}

async fn require_read(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authorize(&[Scope::Read], &state, req, next).await
}

async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authorize(&[Scope::Admin], &state, req, next).await
}

async fn require_read_or_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    authorize(&[Scope::Read, Scope::Admin], &state, req, next).await
}

/// Who the request is, from its key or else its client certificate (which may only ingest); refused unless
/// that identity holds one of `scopes`. The handlers find the [`Principal`] and its [`Producer`] in the
/// extensions.
async fn authorize(scopes: &[Scope], state: &AppState, mut req: Request, next: Next) -> Response {
    // A key, when one is sent, decides (a wrong one is refused, not replaced by the certificate).
    let principal = if crate::auth::presented_key(req.headers()).is_some() {
        state.keys.authenticate(req.headers())
    } else {
        req.extensions()
            .get::<ClientCertificate>()
            .map(|cert| Principal {
                producer: cert.0.clone(),
                scopes: Scopes::of(&[Scope::Ingest]),
                tenant: None,
                key_id: None,
            })
    };
    let Some(principal) = principal else {
        return ApiError::Unauthorized.into_response();
    };
    if !scopes.iter().any(|s| principal.scopes.contains(*s)) {
        let needed: Vec<&str> = scopes.iter().map(|s| s.name()).collect();
        return ApiError::Forbidden(format!(
            "this key ({}) has the scopes [{}]; {} needs the {} scope",
            principal.producer.0,
            principal.scopes.names().join(", "),
            req.uri().path(),
            needed.join(" or ")
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal.producer.clone());
    req.extensions_mut().insert(principal);
    next.run(req).await
}
