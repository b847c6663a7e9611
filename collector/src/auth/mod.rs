//! Who a request is and what it may do. A request presents an API key (`X-API-KEY`, `Authorization: Bearer`, or
//! the password of `Authorization: Basic`), or comes over TLS with a client certificate. Keys are the bootstrap
//! keys of `COLLECTOR_API_KEYS` ([`bootstrap`]) and the keys stored hashed in PostgreSQL ([`store`]), which
//! carry scopes and a tenant; [`ring::KeyRing`] holds both and answers each request from memory.

pub mod bootstrap;
pub mod ring;
pub mod store;

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use sha2::{Digest, Sha256};

pub use bootstrap::{ApiKeys, KeyConfigError};
pub use ring::KeyRing;

/// The producer a request was authenticated as; stored with each of its events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Producer(pub Arc<str>);

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Send events: `POST /ingest`, `/_bulk`, `/v1/logs` and the agents' handshakes.
    Ingest,
    /// Read events and their aggregates: `/metrics/*`, `/api/logs`, producer labels in `GET /metrics`.
    Read,
    /// Manage keys: `/api/keys`.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name() == name.trim())
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b111);

    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |a, s| a | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::name)
            .collect()
    }
}

/// An authenticated caller: the producer its events are stored under, what it may do, and the tenant whose
/// events alone it may read (`None`: every producer's).
#[derive(Debug, Clone)]
pub struct Principal {
    pub producer: Producer,
    pub scopes: Scopes,
    pub tenant: Option<Arc<str>>,
    /// The stored key's id; `None` for a bootstrap key or a client certificate.
    pub key_id: Option<Arc<str>>,
}

/// The identity a verified TLS client certificate gives its connection: the certificate's common name (or
/// its first DNS name) as the producer. Put in each request's extensions by the listener.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Producer);

/// The key a request presents, if any.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text
            .split_once(':')
            .map(|(_, password)| password.to_string());
    }
    None
}

/// Keys are compared and stored as SHA-256 digests: a stored key is 256 random bits, so a plain digest is as
/// strong as a slow password hash would be, and costs nothing per request.
pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}
