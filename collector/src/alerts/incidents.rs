//! Incidents: opened by a firing rule (one per rule and group until it resolves), with a timeline of what
//! happened; acknowledged, resolved and commented on by people.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde_json::Value;

use crate::db::DbError;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: i64,
    pub rule_id: String,
    pub rule_name: Option<String>,
    pub group: String,
    /// open, acknowledged or resolved.
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// fired, recovered, refired, resolved, acknowledged, comment.
    pub kind: String,
    pub actor: Option<String>,
    pub value: Option<f64>,
    #[schema(value_type = Object)]
    pub evidence: Option<Value>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub url: String,
    pub event: Option<String>,
    pub attempts: i32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident {0}")]
    NotFound(i64),
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for IncidentError {
    fn from(e: tokio_postgres::Error) -> Self {
        IncidentError::Db(e.into())
    }
}

const COLUMNS: &str =
    "i.id, i.rule_id, r.name, i.group_key, i.status, i.opened_at, i.updated_at, i.resolved_at";

fn incident(r: &tokio_postgres::Row) -> Incident {
    Incident {
        id: r.get(0),
        rule_id: r.get(1),
        rule_name: r.get(2),
        group: r.get(3),
        status: r.get(4),
        opened_at: r.get(5),
        updated_at: r.get(6),
        resolved_at: r.get(7),
    }
}

/// Incidents newest first, of one status and rule when given (of `tenant`'s rules when given).
pub async fn list(
    client: &impl GenericClient,
    status: Option<&str>,
    rule: Option<&str>,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<Incident>, IncidentError> {
    if let Some(s) = status {
        if !["open", "acknowledged", "resolved"].contains(&s) {
            return Err(IncidentError::Invalid {
                field: "status",
                problem: format!("{s:?} is not a status; accepted: open, acknowledged, resolved"),
            });
        }
    }
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM alert_incidents i LEFT JOIN alert_rules r ON r.id = i.rule_id
                 WHERE ($1::text IS NULL OR i.status = $1) AND ($2::text IS NULL OR i.rule_id = $2)
                   AND ($3::text IS NULL OR i.tenant = $3)
                 ORDER BY i.opened_at DESC, i.id DESC LIMIT $4"
            ),
            &[&status, &rule, &tenant, &limit],
        )
        .await?;
    Ok(rows.iter().map(incident).collect())
}

/// One incident, its timeline (oldest first) and its notifications' deliveries.
pub async fn get(
    client: &impl GenericClient,
    id: i64,
    tenant: Option<&str>,
) -> Result<(Incident, Vec<TimelineEntry>, Vec<Delivery>), IncidentError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM alert_incidents i LEFT JOIN alert_rules r ON r.id = i.rule_id
                 WHERE i.id = $1 AND ($2::text IS NULL OR i.tenant = $2)"
            ),
            &[&id, &tenant],
        )
        .await?
        .ok_or(IncidentError::NotFound(id))?;
    let timeline = client
        .query(
            "SELECT at, kind, actor, value, evidence, comment FROM alert_incident_events
             WHERE incident_id = $1 ORDER BY at, id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| TimelineEntry {
            at: r.get(0),
            kind: r.get(1),
            actor: r.get(2),
            value: r.get(3),
            evidence: r.get(4),
            comment: r.get(5),
        })
        .collect();
    let deliveries = client
        .query(
            "SELECT id::text, url, payload->>'event', attempts, delivered_at, dead_at, next_attempt_at, last_status,
                    last_error
             FROM alert_outbox WHERE incident_id = $1 ORDER BY created_at",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| Delivery {
            id: r.get(0),
            url: r.get(1),
            event: r.get(2),
            attempts: r.get(3),
            delivered_at: r.get(4),
            dead_at: r.get(5),
            next_attempt_at: r.get(6),
            last_status: r.get(7),
            last_error: r.get(8),
        })
        .collect();
    Ok((incident(&row), timeline, deliveries))
}

/// What a person does to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Acknowledge,
    Resolve,
    Comment,
}

/// Records `action` by `actor` (with `comment`) in the timeline; acknowledging or resolving changes the status.
pub async fn act(
    client: &mut deadpool_postgres::Object,
    id: i64,
    action: Action,
    actor: &str,
    comment: Option<&str>,
    tenant: Option<&str>,
) -> Result<Incident, IncidentError> {
    if action == Action::Comment && comment.is_none_or(|c| c.trim().is_empty()) {
        return Err(IncidentError::Invalid {
            field: "comment",
            problem: "required: the text to add".into(),
        });
    }
    if comment.is_some_and(|c| c.len() > 4096) {
        return Err(IncidentError::Invalid {
            field: "comment",
            problem: "at most 4,096 bytes".into(),
        });
    }
    let tx = client.transaction().await?;
    let status: Option<String> = tx
        .query_opt(
            "SELECT status FROM alert_incidents WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
            &[&id, &tenant],
        )
        .await?
        .map(|r| r.get(0));
    let Some(status) = status else {
        return Err(IncidentError::NotFound(id));
    };
    let (kind, next) = match action {
        Action::Acknowledge if status == "open" => ("acknowledged", "acknowledged"),
        Action::Acknowledge => ("acknowledged", status.as_str()),
        Action::Resolve => ("resolved", "resolved"),
        Action::Comment => ("comment", status.as_str()),
    };
    tx.execute(
        "UPDATE alert_incidents SET status = $2, updated_at = now(),
                resolved_at = CASE WHEN $2 = 'resolved' THEN coalesce(resolved_at, now()) END
         WHERE id = $1",
        &[&id, &next],
    )
    .await?;
    tx.execute(
        "INSERT INTO alert_incident_events (incident_id, kind, actor, comment) VALUES ($1, $2, $3, $4)",
        &[&id, &kind, &actor, &comment],
    )
    .await?;
    tx.commit().await?;
    Ok(get(&*client, id, tenant).await?.0)
}
