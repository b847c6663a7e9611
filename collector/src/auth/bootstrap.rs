//! Bootstrap keys: `COLLECTOR_API_KEYS`, `name:key` pairs, compared as SHA-256 digests in constant time. They
//! hold every scope and no tenant: they start a deployment (and create its stored keys), and keep a collector
//! usable while its database is unreachable.

use std::sync::Arc;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::{digest, presented_key, Producer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error("API key entry {0:?} is not of the form name:key")]
    Malformed(String),
    #[error("API key entry for {0:?} has a key shorter than 8 characters")]
    TooShort(String),
}

#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<[(Producer, [u8; 32])]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key digests.
        f.debug_list()
            .entries(self.keys.iter().map(|(p, _)| &p.0))
            .finish()
    }
}

impl ApiKeys {
    /// Parses `name:key,name2:key2`.
    pub fn parse(spec: &str) -> Result<ApiKeys, KeyConfigError> {
        let mut keys = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, key) = entry
                .split_once(':')
                .ok_or_else(|| KeyConfigError::Malformed(entry.into()))?;
            let (name, key) = (name.trim(), key.trim());
            if name.is_empty() || key.is_empty() {
                return Err(KeyConfigError::Malformed(entry.into()));
            }
            if key.len() < 8 {
                return Err(KeyConfigError::TooShort(name.into()));
            }
            keys.push((Producer(name.into()), digest(key)));
        }
        Ok(ApiKeys { keys: keys.into() })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The producer whose key the request carries: `X-API-KEY`, `Authorization: Bearer`, or the password of
    /// `Authorization: Basic` (Fluent Bit's `http_User`/`http_Passwd`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Producer> {
        self.find(&digest(&presented_key(headers)?))
    }

    /// The producer whose key has digest `d`.
    pub fn find(&self, d: &[u8; 32]) -> Option<Producer> {
        // Compare against every key so timing does not reveal which one matched.
        let mut found = None;
        for (producer, key) in self.keys.iter() {
            if bool::from(key.ct_eq(d)) {
                found = Some(producer.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn every_header_form_authenticates() {
        let keys = ApiKeys::parse("edge:secret123, app : other-key-1").unwrap();
        let edge = Some(Producer("edge".into()));
        assert_eq!(
            keys.authenticate(&headers(&[("x-api-key", "secret123")])),
            edge
        );
        assert_eq!(
            keys.authenticate(&headers(&[("authorization", "Bearer secret123")])),
            edge
        );
        // producer-a:secret123
        assert_eq!(
            keys.authenticate(&headers(&[(
                "authorization",
                "Basic cHJvZHVjZXItYTpzZWNyZXQxMjM="
            )])),
            edge
        );
        assert_eq!(
            keys.authenticate(&headers(&[("x-api-key", "other-key-1")])),
            Some(Producer("app".into()))
        );
        assert_eq!(
            keys.authenticate(&headers(&[("x-api-key", "secret124")])),
            None
        );
        assert_eq!(keys.authenticate(&headers(&[])), None);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(
            ApiKeys::parse("nokey").unwrap_err(),
            KeyConfigError::Malformed("nokey".into())
        );
        assert_eq!(
            ApiKeys::parse("a:short").unwrap_err(),
            KeyConfigError::TooShort("a".into())
        );
        assert!(ApiKeys::parse("").unwrap().is_empty());
    }
}
