//! `/api/alerts/*`: alert rules and incidents. Reading needs the read scope; making, changing and deleting rules,
//! and acknowledging, resolving or commenting on incidents, the admin scope. A tenant's key sees and manages its
//! tenant's only. The same operations as `collector alerts`, in [`crate::alerts`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::alerts::incidents::{self, Action, IncidentError};
use crate::alerts::rules::{self, Rule, RuleError, RuleSpec};
use crate::auth::{Principal, Scope};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/alerts/rules", get(list_rules).post(create_rule))
        .route(
            "/api/alerts/rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/api/alerts/incidents", get(list_incidents))
        .route("/api/alerts/incidents/{id}", get(get_incident))
        .route("/api/alerts/incidents/{id}/{action}", post(act))
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            RuleError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RuleError::Db(d) => ApiError::Internal(d.to_string()),
        }
    }
}

impl From<IncidentError> for ApiError {
    fn from(e: IncidentError) -> Self {
        match e {
            IncidentError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            IncidentError::NotFound(_) => ApiError::NotFound(e.to_string()),
            IncidentError::Db(d) => ApiError::Internal(d.to_string()),
        }
    }
}

fn require(p: &Principal, scope: Scope, what: &str) -> Result<(), ApiError> {
    if p.scopes.contains(scope) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this key ({}) has the scopes [{}]; {what} needs the {} scope",
            p.producer.0,
            p.scopes.names().join(", "),
            scope.name()
        )))
    }
}

fn require_admin(p: &Principal, what: &str) -> Result<(), ApiError> {
    require(p, Scope::Admin, what)
}

fn require_read(p: &Principal, what: &str) -> Result<(), ApiError> {
    require(p, Scope::Read, what)
}

async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state.pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "Alerts found the database unreachable");
        ApiError::NotReady("database unreachable (the error is in the collector's log)".into())
    })
}

fn spec_of(body: Result<Json<RuleSpec>, JsonRejection>) -> Result<RuleSpec, ApiError> {
    body.map(|Json(s)| s)
        .map_err(|e| ApiError::BadRequest(format!("body: {}", e.body_text())))
}

/// Every rule (a tenant's key: its tenant's), the webhooks' secrets left out.
#[utoipa::path(get, path = "/api/alerts/rules", tag = "alerts", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "`{\"rules\": [...]}`", body = Value)))]
pub(super) async fn list_rules(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    require_read(&p, "listing alert rules")?;
    let client = connection(&state).await?;
    let rules: Vec<Rule> = rules::list(&client, p.tenant.as_deref())
        .await?
        .into_iter()
        .map(Rule::shown)
        .collect();
    Ok(Json(json!({ "rules": rules })))
}

/// Makes a rule; evaluated from the next cycle on.
#[utoipa::path(post, path = "/api/alerts/rules", tag = "alerts", request_body = RuleSpec,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = Rule),
        (status = 400, description = "A field cannot work: which and why", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::error::ErrorBody)))]
pub(super) async fn create_rule(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Result<Json<RuleSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    require_admin(&p, "making an alert rule")?;
    let spec = spec_of(body)?;
    let client = connection(&state).await?;
    let rule = rules::create(&client, &spec, p.tenant.as_deref()).await?;
    tracing::info!(id = %rule.id, name = %rule.spec.name, by = %p.producer.0, "Alert rule made");
    Ok((StatusCode::CREATED, Json(rule.shown())))
}

#[utoipa::path(get, path = "/api/alerts/rules/{id}", tag = "alerts", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Rule), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn get_rule(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Rule>, ApiError> {
    require_read(&p, "reading an alert rule")?;
    let client = connection(&state).await?;
    Ok(Json(
        rules::get(&client, &id, p.tenant.as_deref()).await?.shown(),
    ))
}

/// Replaces a rule (a webhook given without `secret` keeps the stored one).
#[utoipa::path(put, path = "/api/alerts/rules/{id}", tag = "alerts", request_body = RuleSpec,
    security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Rule), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn update_rule(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<RuleSpec>, JsonRejection>,
) -> Result<Json<Rule>, ApiError> {
    require_admin(&p, "changing an alert rule")?;
    let spec = spec_of(body)?;
    let client = connection(&state).await?;
    let rule = rules::update(&client, &id, &spec, p.tenant.as_deref()).await?;
    tracing::info!(id = %rule.id, by = %p.producer.0, "Alert rule changed");
    Ok(Json(rule.shown()))
}

/// Deletes a rule and its states; its incidents stay.
#[utoipa::path(delete, path = "/api/alerts/rules/{id}", tag = "alerts",
    security(("api_key" = []), ("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn delete_rule(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&p, "deleting an alert rule")?;
    let mut client = connection(&state).await?;
    rules::delete(&mut client, &id, p.tenant.as_deref()).await?;
    tracing::info!(%id, by = %p.producer.0, "Alert rule deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct IncidentQuery {
    /// open, acknowledged or resolved.
    status: Option<String>,
    /// A rule's id.
    rule: Option<String>,
    /// 1–1000, default 100.
    limit: Option<i64>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/api/alerts/incidents", tag = "alerts", params(IncidentQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "`{\"incidents\": [...]}`", body = Value),
        (status = 400, body = super::error::ErrorBody)))]
pub(super) async fn list_incidents(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    query: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_read(&p, "listing incidents")?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: {limit} is not from 1 to 1000"
        )));
    }
    let client = connection(&state).await?;
    let list = incidents::list(
        &client,
        q.status.as_deref(),
        q.rule.as_deref(),
        p.tenant.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(json!({ "incidents": list })))
}

/// One incident with its timeline (transitions, evidence, people's actions) and its notifications' deliveries.
#[utoipa::path(get, path = "/api/alerts/incidents/{id}", tag = "alerts", params(("id" = i64, Path)),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Value), (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn get_incident(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_read(&p, "reading an incident")?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::NotFound(format!("no incident {id:?}: incidents have numeric ids"))
    })?;
    let client = connection(&state).await?;
    let (incident, timeline, deliveries) = incidents::get(&client, id, p.tenant.as_deref()).await?;
    Ok(Json(
        json!({ "incident": incident, "timeline": timeline, "deliveries": deliveries }),
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActBody {
    comment: Option<String>,
}

/// `acknowledge`, `resolve` or `comment` (body `{"comment": "…"}`, required for a comment).
#[utoipa::path(post, path = "/api/alerts/incidents/{id}/{action}", tag = "alerts",
    params(("id" = i64, Path), ("action" = String, Path, description = "acknowledge, resolve or comment")),
    request_body = ActBody, security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = Value), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)))]
pub(super) async fn act(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_admin(&p, "acting on an incident")?;
    let id: i64 = id.parse().map_err(|_| {
        ApiError::NotFound(format!("no incident {id:?}: incidents have numeric ids"))
    })?;
    let action = match action.as_str() {
        "acknowledge" => Action::Acknowledge,
        "resolve" => Action::Resolve,
        "comment" => Action::Comment,
        other => {
            return Err(ApiError::NotFound(format!(
                "{other:?} is not an action on an incident; accepted: acknowledge, resolve, comment"
            )))
        }
    };
    let body: ActBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("body: {e}; accepted: {{\"comment\": \"…\"}}"))
        })?
    };
    let mut client = connection(&state).await?;
    let incident = incidents::act(
        &mut client,
        id,
        action,
        &p.producer.0,
        body.comment.as_deref(),
        p.tenant.as_deref(),
    )
    .await?;
    Ok(Json(json!({ "incident": incident })))
}
