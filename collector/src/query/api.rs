//! Every read endpoint as one function of (kind, parameters): the HTTP handlers and `collector query` against
//! a database both call [`execute`], so they cannot disagree.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde_json::{json, Value};

use super::filters::{Filters, ParamError};
use super::plan::{self, Table};
use super::{answers, cursor, logs};
use crate::db::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Volume,
    ErrorRate,
    Latency,
    TopTalkers,
    Logs,
}

impl Kind {
    /// The HTTP path serving this kind.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Volume => "/metrics/volume",
            Kind::ErrorRate => "/metrics/error-rate",
            Kind::Latency => "/metrics/latency",
            Kind::TopTalkers => "/metrics/top-talkers",
            Kind::Logs => "/api/logs",
        }
    }

    /// Parameters this kind takes besides the common filters.
    pub fn extra_params(self) -> &'static [&'static str] {
        match self {
            Kind::Volume | Kind::ErrorRate | Kind::Latency => &["bucket", "group_by"],
            Kind::TopTalkers => &["by", "metric", "limit"],
            Kind::Logs => &["min_latency_ms", "limit", "cursor"],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(
        "the query ran longer than {} ms (COLLECTOR_QUERY_TIMEOUT_MS) and was stopped; narrow the window or the \
         filters (answers from raw events grow with the events in the window: /api/logs, min_latency_ms, \
         latency with an address filter, and an address filter combined with another filter)",
        .0.as_millis()
    )]
    TimedOut(std::time::Duration),
    #[error(
        "this API key already runs {0} read(s) from raw events (COLLECTOR_RAW_READS_PER_KEY); retry when one \
         has finished, or ask for what the rollups hold (see README, \"which table answers\")"
    )]
    TooManyRawReads(usize),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Admits reads of raw events (the answers no rollup holds) up to a number at once: they grow with the events
/// in their window, and each holds a read connection while it runs. The HTTP API keeps one gate per API key.
#[derive(Debug, Clone)]
pub struct RawGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl RawGate {
    pub fn new(limit: usize) -> RawGate {
        RawGate {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }

    /// A slot for a read of `table`, held until the answer is made; none is needed for a rollup.
    fn admit(&self, table: Table) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, QueryError> {
        if table.is_rollup() {
            return Ok(None);
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| QueryError::TooManyRawReads(self.limit))
    }
}

/// Logs page size when `limit` is not given, and the most one page may hold.
const DEFAULT_LOGS_LIMIT: i64 = 100;
const MAX_LOGS_LIMIT: i64 = 1000;

/// Answers one question in a read-only transaction with one snapshot: an answer made of several statements
/// (top talkers by address take five) sees every one of them at the same moment of ingest and compaction.
/// Each statement may run for `timeout` at most; a read of raw events waits for a slot of `gate`, when given.
/// `visible`: the producers a tenant's key may read, when it is one.
pub async fn execute(
    kind: Kind,
    params: &HashMap<String, String>,
    client: &mut deadpool_postgres::Object,
    timeout: Option<std::time::Duration>,
    gate: Option<&RawGate>,
    visible: Option<&[String]>,
) -> Result<Value, QueryError> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(DbError::from)?;
    if let Some(limit) = timeout {
        // Local to this transaction: the pooled connection goes back without it.
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            limit.as_millis().max(1)
        ))
        .await
        .map_err(DbError::from)?;
    }
    let value = answer(kind, params, &tx, gate, visible)
        .await
        .map_err(|e| match (e, timeout) {
            (QueryError::Db(d), Some(limit)) if d.is_query_canceled() => {
                QueryError::TimedOut(limit)
            }
            (other, _) => other,
        })?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(value)
}

async fn answer(
    kind: Kind,
    params: &HashMap<String, String>,
    client: &impl GenericClient,
    gate: Option<&RawGate>,
    visible: Option<&[String]>,
) -> Result<Value, QueryError> {
    let now = chrono::Utc::now();
    let mut f = Filters::parse(params, kind.extra_params(), now)?;
    f.producers = visible.map(<[String]>::to_vec);
    let admit = |table: Table| gate.map(|g| g.admit(table)).transpose();
    let value = match kind {
        Kind::Volume | Kind::ErrorRate | Kind::Latency => {
            let kept = plan::finest_kept(client, f.from).await?;
            let bucket = answers::parse_bucket(params, &f, kept)?;
            answers::align(&mut f, bucket.secs);
            let latency = kind == Kind::Latency;
            let group = answers::parse_group_by(params, latency)?;
            let table = answers::series_table(&f, bucket, group, latency);
            let _slot = admit(table)?;
            match kind {
                Kind::Volume => json!(answers::volume(client, &f, bucket, group, table).await?),
                Kind::ErrorRate => {
                    json!(answers::error_rate(client, &f, bucket, group, table).await?)
                }
                _ => {
                    let by_service = group == answers::GroupBy::Service;
                    json!(answers::latency(client, &f, bucket, by_service, table).await?)
                }
            }
        }
        Kind::TopTalkers => {
            let q = answers::parse_top(params)?;
            // The rollup's grain is a minute, or the finest tier kept as far back as the window reaches: the
            // window widens to its buckets.
            let kept = plan::finest_kept(client, f.from).await?;
            answers::align(&mut f, kept.max(60));
            let table = answers::top_table(&f, q);
            let _slot = admit(table)?;
            json!(answers::top_talkers(client, &f, q, table).await?)
        }
        Kind::Logs => {
            let _slot = admit(Table::Raw)?;
            logs(params, &f, client).await?
        }
    };
    Ok(value)
}

async fn logs(
    params: &HashMap<String, String>,
    f: &Filters,
    client: &impl GenericClient,
) -> Result<Value, QueryError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LOGS_LIMIT,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LOGS_LIMIT).contains(n))
            .ok_or_else(|| {
                ParamError::new(
                    "limit",
                    format!("{v:?} is not a page size"),
                    format!("1-{MAX_LOGS_LIMIT}"),
                )
            })?,
    };
    let after = params
        .get("cursor")
        .map(|c| cursor::decode(c))
        .transpose()?;
    // One row more than asked tells whether there is a next page.
    let mut events = logs::logs(client, f, after.as_ref(), limit + 1).await?;
    let next_cursor = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|r| cursor::encode(&r.position))
    } else {
        None
    };
    Ok(json!({ "events": events, "next_cursor": next_cursor }))
}
