//! Delivery of the outbox: every second, any collector takes the notifications that are due (rows locked while
//! they are sent, so two collectors never send one twice at once), POSTs each to its webhook, and records the
//! outcome: delivered on a 2xx, else retried with backoff (2 s doubling to 5 minutes), and given up (`dead_at`)
//! after `COLLECTOR_ALERT_MAX_ATTEMPTS`. Every attempt of one notification carries the same
//! `X-Collector-Delivery` id: a receiver that saw it already (a collector stopped between its request and
//! recording the answer sends it again) ignores the repeat.
//!
//! `json` notifications are signed: `X-Collector-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of
//! "<t>.<body>" under the rule's webhook secret>` (README, "Alerts", has the receiver's recipe).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::AlertStats;
use crate::db::DbError;

/// Notifications taken per round.
const BATCH: i64 = 20;
/// Longest wait between attempts.
const MAX_BACKOFF_SECS: f64 = 300.0;

#[derive(Clone)]
pub struct Notifier {
    pub pool: Pool,
    pub http: reqwest::Client,
    pub max_attempts: i32,
    pub stats: Arc<AlertStats>,
}

/// `t=<t>,v1=<hex>`: the signature of `body` sent at `t` (Unix seconds).
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// A Slack incoming-webhook body for a notification.
fn slack(payload: &Value) -> Value {
    let state = if payload["event"] == "resolved" {
        "RESOLVED"
    } else {
        "FIRING"
    };
    let group = match payload["group"].as_str() {
        Some("*") | None => String::new(),
        Some(g) => format!(" ({}={g})", payload["group_by"].as_str().unwrap_or("group")),
    };
    json!({
        "text": format!(
            "[{state}] {}{group}: {} (value {}) <{}|metrics> <{}|logs>",
            payload["rule"]["name"].as_str().unwrap_or("rule"),
            payload["condition"].as_str().unwrap_or(""),
            payload["value"],
            payload["links"]["metrics"].as_str().unwrap_or(""),
            payload["links"]["logs"].as_str().unwrap_or(""),
        )
    })
}

impl Notifier {
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "Alert notifications not delivered this round; retried");
            }
        }
    }

    /// Sends what is due; returns how many were attempted.
    pub async fn deliver_due(&self) -> Result<usize, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx
            .query(
                "SELECT o.id, o.url, o.format, o.payload, o.attempts, r.spec->'webhook'->>'secret'
                 FROM alert_outbox o LEFT JOIN alert_rules r ON r.id = o.rule_id
                 WHERE o.delivered_at IS NULL AND o.dead_at IS NULL AND o.next_attempt_at <= now()
                 ORDER BY o.created_at LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
                &[&BATCH],
            )
            .await?;
        for row in &due {
            let id: uuid::Uuid = row.get(0);
            let url: String = row.get(1);
            let format: String = row.get(2);
            let payload: Value = row.get(3);
            let attempts: i32 = row.get::<_, i32>(4) + 1;
            let secret: Option<String> = row.get(5);
            let body = if format == "slack" {
                slack(&payload)
            } else {
                payload
            };
            let body = body.to_string();
            let mut request = self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .header("x-collector-delivery", id.to_string())
                .body(body.clone());
            if let (Some(secret), "json") = (&secret, format.as_str()) {
                let t = chrono::Utc::now().timestamp();
                request = request.header(
                    "x-collector-signature",
                    signature(secret.as_bytes(), t, body.as_bytes()),
                );
            }
            let outcome = match request.send().await {
                Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                Ok(r) => Err((
                    Some(r.status().as_u16()),
                    format!("answered {}", r.status()),
                )),
                Err(e) => Err((None, format!("not reached: {e}"))),
            };
            match outcome {
                Ok(status) => {
                    tx.execute(
                        "UPDATE alert_outbox SET attempts = $2, delivered_at = now(), last_status = $3,
                         last_error = NULL WHERE id = $1",
                        &[&id, &attempts, &i32::from(status)],
                    )
                    .await?;
                    self.stats.delivered();
                }
                Err((status, error)) => {
                    let status = status.map(i32::from);
                    let dead = attempts >= self.max_attempts;
                    let wait = (2f64.powi(attempts)).min(MAX_BACKOFF_SECS);
                    tx.execute(
                        "UPDATE alert_outbox SET attempts = $2, last_status = $3, last_error = $4,
                         next_attempt_at = now() + $5 * interval '1 second',
                         dead_at = CASE WHEN $6 THEN now() END WHERE id = $1",
                        &[&id, &attempts, &status, &error, &wait, &dead],
                    )
                    .await?;
                    if dead {
                        tracing::warn!(delivery = %id, url = %url, attempts, error = %error,
                            "Alert notification given up (COLLECTOR_ALERT_MAX_ATTEMPTS)");
                    }
                    self.stats.failed(dead);
                }
            }
        }
        tx.commit().await?;
        Ok(due.len())
    }
}
