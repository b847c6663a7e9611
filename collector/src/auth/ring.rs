//! The keys a collector accepts, held in memory: the bootstrap keys, and the stored keys reloaded from
//! PostgreSQL every `COLLECTOR_KEY_REFRESH_MS`, so that a key made or revoked by any collector (or
//! `collector keys`) takes effect on all of them within that time. A request is authenticated without a query;
//! when the database is unreachable the last keys loaded stay in force.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::{digest, presented_key, store, ApiKeys, Principal, Producer, Scopes};
use crate::db::DbError;

/// A stored key as the ring holds it.
struct Held {
    principal: Principal,
    revoked_at: Option<DateTime<Utc>>,
    /// Set when it authenticates a request, cleared when the refresh records its last use.
    used: AtomicBool,
}

#[derive(Default)]
struct Snapshot {
    by_digest: HashMap<[u8; 32], Arc<Held>>,
    /// Each tenant's producers: the names of its keys, revoked ones included.
    tenants: HashMap<Arc<str>, Arc<[String]>>,
}

pub struct KeyRing {
    bootstrap: ApiKeys,
    stored: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("bootstrap", &self.bootstrap)
            .field("stored", &self.snapshot().by_digest.len())
            .finish()
    }
}

impl KeyRing {
    /// The bootstrap keys alone, until [`KeyRing::refresh`] loads the stored ones.
    pub fn new(bootstrap: ApiKeys) -> Arc<KeyRing> {
        Arc::new(KeyRing {
            bootstrap,
            stored: RwLock::new(Arc::default()),
        })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.stored
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Who presents the key in `headers`, if it is a bootstrap key or a stored key not revoked.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        let d = digest(&presented_key(headers)?);
        if let Some(producer) = self.bootstrap.find(&d) {
            return Some(Principal {
                producer,
                scopes: Scopes::ALL,
                tenant: None,
                key_id: None,
            });
        }
        let held = self.snapshot().by_digest.get(&d)?.clone();
        if held.revoked_at.is_some_and(|at| at <= Utc::now()) {
            return None;
        }
        held.used.store(true, Ordering::Relaxed);
        Some(held.principal.clone())
    }

    /// The producers whose events `principal` may read: its tenant's, or every one (`None`) without a tenant.
    pub fn visible_to(&self, principal: &Principal) -> Option<Arc<[String]>> {
        principal
            .tenant
            .as_deref()
            .map(|t| self.tenant_producers(t))
    }

    /// The producers whose events `tenant` may read.
    pub(crate) fn tenant_producers(&self, tenant: &str) -> Arc<[String]> {
        self.snapshot()
            .tenants
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Records which keys were used since the last refresh, then reloads every stored key.
    pub async fn refresh(&self, pool: &Pool) -> Result<usize, DbError> {
        let client = pool.get().await?;
        let used: Vec<String> = self
            .snapshot()
            .by_digest
            .values()
            .filter(|h| h.used.swap(false, Ordering::Relaxed))
            .filter_map(|h| h.principal.key_id.as_deref().map(String::from))
            .collect();
        if let Err(e) = store::touch(&client, &used).await {
            // Marked again so that the next refresh records them.
            self.mark_used(&used);
            return Err(e);
        }
        let loaded = store::load(&client).await?;
        let mut next = Snapshot::default();
        let mut tenants: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for key in loaded {
            let tenant: Option<Arc<str>> = key.info.tenant.as_deref().map(Arc::from);
            if let Some(t) = &tenant {
                let names = tenants.entry(t.clone()).or_default();
                if !names.contains(&key.info.name) {
                    names.push(key.info.name.clone());
                }
            }
            next.by_digest.insert(
                key.digest,
                Arc::new(Held {
                    principal: Principal {
                        producer: Producer(key.info.name.as_str().into()),
                        scopes: key.scopes,
                        tenant,
                        key_id: Some(key.info.id.as_str().into()),
                    },
                    revoked_at: key.info.revoked_at,
                    used: AtomicBool::new(false),
                }),
            );
        }
        next.tenants = tenants
            .into_iter()
            .map(|(t, names)| (t, Arc::from(names)))
            .collect();
        let count = next.by_digest.len();
        *self.stored.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(count)
    }

    fn mark_used(&self, ids: &[String]) {
        for held in self.snapshot().by_digest.values() {
            if held
                .principal
                .key_id
                .as_deref()
                .is_some_and(|id| ids.iter().any(|u| u == id))
            {
                held.used.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Refreshes every `every` until cancelled, then once more (so the last uses are recorded).
    pub async fn maintain(
        self: Arc<Self>,
        pool: Pool,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
            match self.refresh(&pool).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("API keys reloaded from the database again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "Reloading API keys failed; the keys last loaded stay in force");
                }
                Err(_) => {}
            }
        }
        let _ = self.refresh(&pool).await;
    }
}
