//! API keys: `name:key` pairs, compared as SHA-256 digests in constant time.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The producer a request was authenticated as; stored with each of its events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Producer(pub Arc<str>);

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
        let presented = presented_key(headers)?;
        let d = digest(&presented);
        // Compare against every key so timing does not reveal which one matched.
        let mut found = None;
        for (producer, key) in self.keys.iter() {
            if bool::from(key.ct_eq(&d)) {
                found = Some(producer.clone());
            }
        }
        found
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
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
