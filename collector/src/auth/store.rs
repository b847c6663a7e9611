//! Stored keys and their SQL (`api_keys`, db/migrations/0012_api_keys.sql): made, listed, revoked and rotated
//! by `collector keys` and `/api/keys`, read by every collector's [`super::KeyRing`].

use base64::Engine as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};

use super::{digest, Scope, Scopes};
use crate::db::{locks, DbError};

/// Prefix of every stored key's secret: recognisable in a leaked file or a secret scanner.
const SECRET_PREFIX: &str = "slk_";

/// Longest key name or tenant.
const MAX_NAME_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error(
        "the name {name:?} is used by keys of {}; a producer's events belong to one tenant, so choose another name",
        .other.as_deref().map_or_else(|| "no tenant".to_string(), |t| format!("tenant {t:?}"))
    )]
    NameTaken { name: String, other: Option<String> },
    #[error("no key with id {id:?}{}", if *.in_tenant { " in this key's tenant" } else { "" })]
    NotFound { id: String, in_tenant: bool },
    #[error("key {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for KeyError {
    fn from(e: tokio_postgres::Error) -> Self {
        KeyError::Db(e.into())
    }
}

/// A key to make, as asked for over the API or the command line.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The producer its events are stored under: letters, digits, `.`, `_`, `-`; at most 64 bytes.
    pub name: String,
    /// Any of `ingest`, `read`, `admin`.
    pub scopes: Vec<String>,
    /// Limits reads to this tenant's producers; same characters as `name`.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A stored key as listed (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// When it stops (or stopped) being accepted; in the future during a rotation's grace period.
    pub revoked_at: Option<DateTime<Utc>>,
    /// To within the collectors' refresh interval (COLLECTOR_KEY_REFRESH_MS).
    pub last_used_at: Option<DateTime<Utc>>,
    pub replaces: Option<String>,
}

/// A key just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyInfo,
    /// Send it as `X-API-KEY`, `Authorization: Bearer`, or a Basic password. Not shown again.
    pub secret: String,
}

/// A stored key as the ring holds it.
pub(crate) struct Loaded {
    pub info: KeyInfo,
    pub scopes: Scopes,
    pub digest: [u8; 32],
}

/// Checks a name or tenant: `field` names it in the error.
fn check_name(field: &'static str, v: &str) -> Result<(), KeyError> {
    let invalid = |problem: String| KeyError::Invalid { field, problem };
    if v.is_empty() {
        return Err(invalid("is empty".into()));
    }
    if v.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "is {} bytes; at most {MAX_NAME_BYTES}",
            v.len()
        )));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "{v:?} holds {c:?}; accepted: letters, digits, '.', '_', '-'"
        )));
    }
    Ok(())
}

/// The scopes named, each known and at least one.
pub fn parse_scopes(names: &[String]) -> Result<Scopes, KeyError> {
    let mut scopes = Vec::new();
    for n in names {
        scopes.push(Scope::parse(n).ok_or_else(|| KeyError::Invalid {
            field: "scopes",
            problem: format!("{n:?} is not a scope; accepted: ingest, read, admin"),
        })?);
    }
    let scopes = Scopes::of(&scopes);
    if scopes.is_empty() {
        return Err(KeyError::Invalid {
            field: "scopes",
            problem: "is empty; give at least one of ingest, read, admin".into(),
        });
    }
    Ok(scopes)
}

impl NewKey {
    /// Its scopes, once every field is checked.
    pub fn validate(&self) -> Result<Scopes, KeyError> {
        check_name("name", &self.name)?;
        if let Some(t) = &self.tenant {
            check_name("tenant", t)?;
        }
        parse_scopes(&self.scopes)
    }
}

/// A new id and secret: 48 and 256 random bits.
fn new_secret() -> (String, String) {
    let id: String = (0..6)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    (id.clone(), format!("{SECRET_PREFIX}{id}_{secret}"))
}

const COLUMNS: &str =
    "id, name, tenant, scopes, created_at, revoked_at, last_used_at, replaces, secret_sha256";

fn info(row: &tokio_postgres::Row) -> KeyInfo {
    KeyInfo {
        id: row.get(0),
        name: row.get(1),
        tenant: row.get(2),
        scopes: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
        last_used_at: row.get(6),
        replaces: row.get(7),
    }
}

/// Makes a key. `replaces`: the key it rotates. The name must not belong to another tenant's keys: a
/// producer's events would otherwise be readable by two tenants.
pub async fn create(
    client: &mut deadpool_postgres::Object,
    new: &NewKey,
    replaces: Option<&str>,
) -> Result<CreatedKey, KeyError> {
    let scopes = new.validate()?;
    let tx = client.transaction().await?;
    // Two keys made at once for one name in two tenants would each see the other's absence.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&locks::API_KEYS])
        .await?;
    let other = tx
        .query_opt(
            "SELECT tenant FROM api_keys WHERE name = $1 AND tenant IS DISTINCT FROM $2 LIMIT 1",
            &[&new.name, &new.tenant],
        )
        .await?;
    if let Some(row) = other {
        return Err(KeyError::NameTaken {
            name: new.name.clone(),
            other: row.get(0),
        });
    }
    let (id, secret) = new_secret();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO api_keys (id, name, tenant, scopes, secret_sha256, replaces)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &new.name,
                &new.tenant,
                &scopes.names(),
                &digest(&secret).as_slice(),
                &replaces,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        key: info(&row),
        secret,
    })
}

/// Every stored key, or `tenant`'s only, newest first.
pub async fn list(
    client: &impl GenericClient,
    tenant: Option<&str>,
) -> Result<Vec<KeyInfo>, KeyError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM api_keys WHERE $1::text IS NULL OR tenant = $1
                 ORDER BY created_at DESC, id"
            ),
            &[&tenant],
        )
        .await?;
    Ok(rows.iter().map(info).collect())
}

/// The key `id`, when `tenant` (if given) owns it.
pub async fn get(
    client: &impl GenericClient,
    id: &str,
    tenant: Option<&str>,
) -> Result<KeyInfo, KeyError> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"
            ),
            &[&id, &tenant],
        )
        .await?
        .map(|r| info(&r))
        .ok_or_else(|| KeyError::NotFound {
            id: id.into(),
            in_tenant: tenant.is_some(),
        })
}

/// Revokes `id` `after` from now (zero: at once; every collector stops accepting it at its next refresh).
pub async fn revoke(
    client: &impl GenericClient,
    id: &str,
    tenant: Option<&str>,
    after: std::time::Duration,
) -> Result<KeyInfo, KeyError> {
    let current = get(client, id, tenant).await?;
    if current.revoked_at.is_some_and(|at| at <= Utc::now()) {
        return Err(KeyError::AlreadyRevoked(id.into()));
    }
    let secs = after.as_secs_f64();
    let row = client
        .query_one(
            &format!(
                "UPDATE api_keys SET revoked_at = now() + make_interval(secs => $2)
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &secs],
        )
        .await?;
    Ok(info(&row))
}

/// Makes a key with `id`'s name, tenant and scopes, and revokes `id` once `grace` has passed, so that agents
/// can be given the new secret before the old one stops working.
pub async fn rotate(
    client: &mut deadpool_postgres::Object,
    id: &str,
    tenant: Option<&str>,
    grace: std::time::Duration,
) -> Result<CreatedKey, KeyError> {
    let old = get(&*client, id, tenant).await?;
    if old.revoked_at.is_some_and(|at| at <= Utc::now()) {
        return Err(KeyError::AlreadyRevoked(id.into()));
    }
    let new = NewKey {
        name: old.name,
        scopes: old.scopes,
        tenant: old.tenant,
    };
    let created = create(client, &new, Some(id)).await?;
    revoke(&*client, id, tenant, grace).await?;
    Ok(created)
}

/// Every stored key, revoked ones included (their names still say whose events are whose).
pub(crate) async fn load(client: &impl GenericClient) -> Result<Vec<Loaded>, DbError> {
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM api_keys"), &[])
        .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        let info = info(row);
        let stored: &[u8] = row.get(8);
        let digest: [u8; 32] = stored.try_into().map_err(|_| {
            DbError::Corrupt(format!("api_keys.secret_sha256 of key {:?}", info.id))
        })?;
        let scopes: Vec<Scope> = info.scopes.iter().filter_map(|n| Scope::parse(n)).collect();
        let scopes = Scopes::of(&scopes);
        keys.push(Loaded {
            info,
            scopes,
            digest,
        });
    }
    Ok(keys)
}

/// Records that the keys `ids` were used now.
pub(crate) async fn touch(client: &impl GenericClient, ids: &[String]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, scopes: &[&str], tenant: Option<&str>) -> NewKey {
        NewKey {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            tenant: tenant.map(String::from),
        }
    }

    #[test]
    fn fields_are_checked_with_what_is_wrong() {
        assert!(new("edge-1", &["ingest"], Some("acme")).validate().is_ok());
        for (key, field, says) in [
            (new("", &["ingest"], None), "name", "is empty"),
            (new("a b", &["ingest"], None), "name", "' '"),
            (new(&"x".repeat(65), &["read"], None), "name", "65 bytes"),
            (new("a", &[], None), "scopes", "is empty"),
            (
                new("a", &["write"], None),
                "scopes",
                "\"write\" is not a scope",
            ),
            (new("a", &["read"], Some("a/b")), "tenant", "'/'"),
        ] {
            match key.validate() {
                Err(KeyError::Invalid { field: f, problem }) => {
                    assert_eq!(f, field);
                    assert!(problem.contains(says), "{problem}");
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_are_random_and_carry_their_id() {
        let (id, secret) = new_secret();
        let (id2, secret2) = new_secret();
        assert_ne!(secret, secret2);
        assert_ne!(id, id2);
        assert!(secret.starts_with(&format!("{SECRET_PREFIX}{id}_")));
        assert!(secret.len() > 50);
    }
}
