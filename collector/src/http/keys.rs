//! `/api/keys`: stored API keys, for a key with the admin scope. An admin key of a tenant manages that tenant's
//! keys only. The same operations as `collector keys`, in [`crate::auth::store`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::auth::store::{self, CreatedKey, KeyError, KeyInfo, NewKey};
use crate::auth::Principal;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/keys", get(list).post(create))
        .route("/api/keys/{id}/revoke", post(revoke))
        .route("/api/keys/{id}/rotate", post(rotate))
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            KeyError::NameTaken { .. } | KeyError::AlreadyRevoked(_) => {
                ApiError::Conflict(e.to_string())
            }
            KeyError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            KeyError::Db(d) => ApiError::Internal(d.to_string()),
        }
    }
}

async fn connection(state: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    state.pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "Managing keys found the database unreachable");
        ApiError::NotReady("database unreachable (the error is in the collector's log)".into())
    })
}

/// Makes a key; its secret is in this answer only.
#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = NewKey,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Made; `secret` is shown this once", body = CreatedKey),
        (status = 400, description = "A field is wrong: which and why", body = super::error::ErrorBody),
        (status = 403, description = "Not an admin key, or another tenant", body = super::error::ErrorBody),
        (status = 409, description = "The name belongs to another tenant's keys", body = super::error::ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let Json(mut new) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(own) = &admin.tenant {
        match &new.tenant {
            None => new.tenant = Some(own.to_string()),
            Some(t) if **t == **own => {}
            Some(t) => {
                return Err(ApiError::Forbidden(format!(
                    "this admin key belongs to tenant {own:?} and cannot make keys of tenant {t:?}"
                )))
            }
        }
    }
    new.validate()?;
    let mut client = connection(&state).await?;
    let created = store::create(&mut client, &new, None).await?;
    tracing::info!(id = %created.key.id, name = %created.key.name, tenant = ?created.key.tenant,
        scopes = ?created.key.scopes, by = %admin.producer.0, "API key made");
    refresh(&state).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every stored key (an admin key of a tenant: that tenant's), never their secrets. Bootstrap keys
/// (COLLECTOR_API_KEYS) are not stored and not listed.
#[utoipa::path(get, path = "/api/keys", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "`{\"keys\": [...]}`, newest first", body = Value)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let client = connection(&state).await?;
    let keys = store::list(&client, admin.tenant.as_deref()).await?;
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Grace {
    /// Seconds before the key stops being accepted; 0 (the default for revoke): at once.
    #[serde(default)]
    grace_secs: Option<u64>,
}

/// An empty body, or `{"grace_secs": n}`.
fn grace(body: &[u8]) -> Result<std::time::Duration, ApiError> {
    let secs = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Grace>(body)
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "body: {e}; accepted: {{\"grace_secs\": <seconds>}} or nothing"
                ))
            })?
            .grace_secs
    };
    Ok(std::time::Duration::from_secs(secs.unwrap_or(0)))
}

/// Stops accepting the key, on every collector within COLLECTOR_KEY_REFRESH_MS (optionally after
/// `grace_secs`).
#[utoipa::path(post, path = "/api/keys/{id}/revoke", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked (or to be, at `revoked_at`)", body = KeyInfo),
        (status = 404, description = "No such key (in this tenant)", body = super::error::ErrorBody),
        (status = 409, description = "Already revoked", body = super::error::ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<KeyInfo>, ApiError> {
    let after = grace(&body)?;
    let client = connection(&state).await?;
    let key = store::revoke(&client, &id, admin.tenant.as_deref(), after).await?;
    tracing::info!(%id, name = %key.name, revoked_at = ?key.revoked_at, by = %admin.producer.0, "API key revoked");
    refresh(&state).await;
    Ok(Json(key))
}

/// Makes a key with the same name, tenant and scopes, and revokes this one after `grace_secs` (default 0).
#[utoipa::path(post, path = "/api/keys/{id}/rotate", tag = "keys", security(("api_key" = []), ("bearer" = [])),
    params(("id" = String, Path, description = "The key to replace")),
    responses((status = 201, description = "The new key; its `secret` is shown this once", body = CreatedKey),
        (status = 404, description = "No such key (in this tenant)", body = super::error::ErrorBody)))]
pub(super) async fn rotate(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let after = grace(&body)?;
    let mut client = connection(&state).await?;
    let created = store::rotate(&mut client, &id, admin.tenant.as_deref(), after).await?;
    tracing::info!(old = %id, new = %created.key.id, by = %admin.producer.0, "API key rotated");
    refresh(&state).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// This collector applies a change at once; the others at their next refresh.
async fn refresh(state: &AppState) {
    if let Err(e) = state.keys.refresh(&state.pool).await {
        tracing::warn!(error = %e, "Reloading API keys after a change failed; retried at the next refresh");
    }
}
