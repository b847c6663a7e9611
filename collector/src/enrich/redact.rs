//! Redaction, applied to each event as its batch is built, so that nothing unredacted is stored, spooled or
//! followed: fields dropped or replaced by a keyed hash, patterns masked in `message`, addresses cut to a
//! prefix. Dead letters (events that fail validation, bodies that do not decode) get the same rules as far as
//! their text allows: named fields of a JSON object, masks and prefixes over the whole text.
//!
//! Enrichment (GeoIP, threat lists) reads the addresses before they are cut, so a country still describes the
//! real address. Each rule counts what it changed (`collector_redactions_total{rule}`).

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use regex::Regex;
use serde_json::Value;
use sha2::Sha256;

use crate::event::Event;

/// The rules as configured (`COLLECTOR_REDACT_*`).
#[derive(Debug, Clone, Default)]
pub struct RedactRules {
    /// Fields removed: host, message, service, protocol, tags, or `tags.<key>`.
    pub drop: Vec<String>,
    /// Fields replaced by a keyed hash: host, message, service, or `tags.<key>`.
    pub hash: Vec<String>,
    pub hash_key: Option<String>,
    /// Patterns masked in `message`: email, bearer, ipv4.
    pub mask: Vec<String>,
    /// One more pattern masked in `message`, as `[redacted]`.
    pub mask_regex: Option<String>,
    /// Prefix lengths addresses are cut to (32 and 128 keep them whole).
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("{setting}: {value:?} is not a field that can be {action}; accepted: {accepted}")]
    Field {
        setting: &'static str,
        value: String,
        action: &'static str,
        accepted: &'static str,
    },
    #[error(
        "COLLECTOR_REDACT_HASH needs COLLECTOR_REDACT_HASH_KEY: a secret of at least 16 bytes, kept the same \
         across restarts so that equal values keep equal hashes"
    )]
    HashKey,
    #[error("COLLECTOR_REDACT_MASK: {0:?} is not a mask; accepted: email, bearer, ipv4")]
    Mask(String),
    #[error("COLLECTOR_REDACT_MASK_REGEX: {0}")]
    Regex(String),
    #[error("{setting}: {value} is longer than an address ({max})")]
    Prefix {
        setting: &'static str,
        value: u8,
        max: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Host,
    Message,
    Service,
    Protocol,
    Tags,
    Tag(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Drop,
    Hash,
}

struct Mask {
    regex: Regex,
    with: &'static str,
    /// A byte every match contains: messages without it are passed over without running the pattern.
    needs: Option<u8>,
}

/// Rules ready to apply, each with its counter (indexed as `names`).
pub struct Redactor {
    fields: Vec<(Target, Action)>,
    masks: Vec<Mask>,
    v4: Option<u8>,
    v6: Option<u8>,
    key: Vec<u8>,
    names: Vec<String>,
    counts: Vec<AtomicU64>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.names)
            .finish()
    }
}

/// Counts of one batch, added to the redactor's counters once the batch is built.
pub type Counts = Vec<u64>;

fn target(setting: &'static str, s: &str, action: Action) -> Result<Target, RedactError> {
    let s = s.trim();
    let t = match s {
        "host" => Target::Host,
        "message" => Target::Message,
        "service" => Target::Service,
        "protocol" if action == Action::Drop => Target::Protocol,
        "tags" if action == Action::Drop => Target::Tags,
        _ => match s.strip_prefix("tags.").filter(|k| !k.is_empty()) {
            Some(k) => Target::Tag(k.to_string()),
            None => {
                return Err(RedactError::Field {
                    setting,
                    value: s.to_string(),
                    action: if action == Action::Drop {
                        "dropped"
                    } else {
                        "hashed"
                    },
                    accepted: if action == Action::Drop {
                        "host, message, service, protocol, tags, tags.<key>"
                    } else {
                        "host, message, service, tags.<key>"
                    },
                })
            }
        },
    };
    Ok(t)
}

impl Redactor {
    /// The redactor for `rules`, or `None` when they change nothing.
    pub fn new(rules: &RedactRules) -> Result<Option<Redactor>, RedactError> {
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for (setting, list, action, verb) in [
            ("COLLECTOR_REDACT_DROP", &rules.drop, Action::Drop, "drop"),
            ("COLLECTOR_REDACT_HASH", &rules.hash, Action::Hash, "hash"),
        ] {
            for s in list.iter().filter(|s| !s.trim().is_empty()) {
                fields.push((target(setting, s, action)?, action));
                names.push(format!("{verb}:{}", s.trim()));
            }
        }
        let key = match &rules.hash_key {
            Some(k) if k.len() >= 16 => k.as_bytes().to_vec(),
            _ if fields.iter().any(|(_, a)| *a == Action::Hash) => {
                return Err(RedactError::HashKey)
            }
            _ => Vec::new(),
        };
        let mut masks = Vec::new();
        for m in rules
            .mask
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
        {
            let (pattern, with, needs) = match m {
                "email" => (
                    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+",
                    "[email]",
                    Some(b'@'),
                ),
                "bearer" => (
                    r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*",
                    "Bearer [redacted]",
                    None,
                ),
                "ipv4" => (r"\b(?:\d{1,3}\.){3}\d{1,3}\b", "[ipv4]", Some(b'.')),
                other => return Err(RedactError::Mask(other.to_string())),
            };
            let regex = Regex::new(pattern).map_err(|e| RedactError::Regex(e.to_string()))?;
            masks.push(Mask { regex, with, needs });
            names.push(format!("mask:{m}"));
        }
        if let Some(r) = rules.mask_regex.as_deref().filter(|r| !r.is_empty()) {
            let regex = Regex::new(r).map_err(|e| RedactError::Regex(e.to_string()))?;
            masks.push(Mask {
                regex,
                with: "[redacted]",
                needs: None,
            });
            names.push("mask:regex".into());
        }
        let prefix = |setting, value: u8, max: u8| match value {
            v if v > max => Err(RedactError::Prefix {
                setting,
                value: v,
                max,
            }),
            v if v == max => Ok(None),
            v => Ok(Some(v)),
        };
        let v4 = prefix("COLLECTOR_REDACT_IPV4_PREFIX", rules.ipv4_prefix, 32)?;
        let v6 = prefix("COLLECTOR_REDACT_IPV6_PREFIX", rules.ipv6_prefix, 128)?;
        if let Some(p) = v4 {
            names.push(format!("truncate:ipv4/{p}"));
        }
        if let Some(p) = v6 {
            names.push(format!("truncate:ipv6/{p}"));
        }
        if names.is_empty() {
            return Ok(None);
        }
        let counts = names.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Some(Redactor {
            fields,
            masks,
            v4,
            v6,
            key,
            names,
            counts,
        }))
    }

    pub fn counts(&self) -> Counts {
        vec![0; self.names.len()]
    }

    /// Adds a batch's counts to the totals.
    pub fn record(&self, counts: &[u64]) {
        for (total, n) in self.counts.iter().zip(counts) {
            if *n > 0 {
                total.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    /// Each rule's name and what it changed since start: for /metrics.
    pub fn totals(&self) -> impl Iterator<Item = (&str, u64)> {
        self.names
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| (n.as_str(), c.load(Ordering::Relaxed)))
    }

    fn hash(&self, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(32);
        for b in &digest[..16] {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }

    /// `text` with every mask applied (borrowed when nothing matched); `counts` gets each mask's matches.
    fn masked<'t>(&self, text: Cow<'t, str>, counts: &mut [u64]) -> Cow<'t, str> {
        let first = self.fields.len();
        let mut text = text;
        for (i, m) in self.masks.iter().enumerate() {
            if m.needs.is_some_and(|b| !text.as_bytes().contains(&b)) {
                continue;
            }
            let n = m.regex.find_iter(&text).count();
            if n > 0 {
                counts[first + i] += n as u64;
                text = Cow::Owned(m.regex.replace_all(&text, m.with).into_owned());
            }
        }
        text
    }

    fn cut(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => match self.v4 {
                Some(p) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                    IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
                }
                None => ip,
            },
            IpAddr::V6(a) => match self.v6 {
                Some(p) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
                }
                None => ip,
            },
        }
    }

    fn truncation_index(&self, ip: IpAddr) -> usize {
        let after_masks = self.fields.len() + self.masks.len();
        match ip {
            IpAddr::V4(_) => after_masks,
            IpAddr::V6(_) => after_masks + usize::from(self.v4.is_some()),
        }
    }

    /// Redacts `event` in place. Returns the new tags when a rule changed them: `Some(None)` when none are
    /// left. Allocates only for what a rule changes.
    pub fn apply(&self, event: &mut Event<'_>, counts: &mut [u64]) -> Option<Option<String>> {
        let mut tags: Option<Option<String>> = None;
        for (i, (target, action)) in self.fields.iter().enumerate() {
            let slot = match target {
                Target::Host => &mut event.host,
                Target::Message => &mut event.message,
                Target::Service => &mut event.service,
                Target::Protocol => &mut event.protocol,
                Target::Tags => {
                    if event.tags.is_some() {
                        counts[i] += 1;
                        tags = Some(None);
                    }
                    continue;
                }
                Target::Tag(_) => continue,
            };
            if let Some(v) = slot.take() {
                counts[i] += 1;
                if *action == Action::Hash {
                    *slot = Some(Cow::Owned(self.hash(&v)));
                }
            }
        }
        if let Some(m) = event.message.take() {
            event.message = Some(self.masked(m, counts));
        }
        for ip in [&mut event.src_ip, &mut event.dst_ip].into_iter().flatten() {
            let cut = self.cut(*ip);
            if cut != *ip {
                counts[self.truncation_index(*ip)] += 1;
                *ip = cut;
            }
        }
        if tags.is_none() {
            if let Some(t) = event.tags {
                tags = self.tag_rules(t, counts).map(Some);
            }
        }
        tags
    }

    /// The tags object with the `tags.<key>` rules applied, or `None` when none applies.
    fn tag_rules(&self, tags: &str, counts: &mut [u64]) -> Option<String> {
        let applies = self
            .fields
            .iter()
            .any(|(t, _)| matches!(t, Target::Tag(k) if tags.contains(k.as_str())));
        if !applies {
            return None;
        }
        let mut map: serde_json::Map<String, Value> = serde_json::from_str(tags).ok()?;
        let changed = self.object_rules(&mut map, counts, true);
        changed.then(|| Value::Object(map).to_string())
    }

    /// Applies the `tags.<key>` rules to `map`'s members (and, for a whole event's object, the field rules to
    /// its canonical fields); whether anything changed.
    fn object_rules(
        &self,
        map: &mut serde_json::Map<String, Value>,
        counts: &mut [u64],
        tags_only: bool,
    ) -> bool {
        let mut changed = false;
        for (i, (target, action)) in self.fields.iter().enumerate() {
            let key = match target {
                Target::Tag(k) => k.as_str(),
                _ if tags_only => continue,
                Target::Host => "host",
                Target::Message => "message",
                Target::Service => "service",
                Target::Protocol => "protocol",
                Target::Tags => "tags",
            };
            let Some(v) = map.remove(key) else { continue };
            counts[i] += 1;
            changed = true;
            if *action == Action::Hash {
                let text = match &v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                map.insert(key.to_string(), Value::String(self.hash(&text)));
            }
        }
        changed
    }

    /// A dead letter's text, redacted as far as it can be: a JSON object's fields by name (its `tags` or
    /// `labels` object too), then masks and address prefixes over every string (or over the whole text when it
    /// is not JSON).
    pub fn text(&self, raw: &[u8], counts: &mut [u64]) -> Vec<u8> {
        let text = String::from_utf8_lossy(raw);
        if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&text) {
            self.object_rules(&mut map, counts, false);
            for nested in ["tags", "labels"] {
                if let Some(Value::Object(inner)) = map.get_mut(nested) {
                    self.object_rules(inner, counts, true);
                }
            }
            let mut v = Value::Object(map);
            self.strings(&mut v, counts);
            return v.to_string().into_bytes();
        }
        let masked = self.masked(text, counts);
        self.addresses_in(&masked, counts).into_bytes()
    }

    fn strings(&self, v: &mut Value, counts: &mut [u64]) {
        match v {
            Value::String(s) => {
                if let Ok(ip) = s.parse::<IpAddr>() {
                    let cut = self.cut(ip);
                    if cut != ip {
                        counts[self.truncation_index(ip)] += 1;
                        *s = cut.to_string();
                    }
                    return;
                }
                if let Cow::Owned(m) = self.masked(Cow::Borrowed(s.as_str()), counts) {
                    *s = m;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.strings(v, counts)),
            Value::Object(o) => o.values_mut().for_each(|v| self.strings(v, counts)),
            _ => {}
        }
    }

    /// Every address-looking word of `text` cut to its prefix.
    fn addresses_in(&self, text: &str, counts: &mut [u64]) -> String {
        if self.v4.is_none() && self.v6.is_none() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String, counts: &mut [u64]| {
            match word.parse::<IpAddr>() {
                Ok(ip) if self.cut(ip) != ip => {
                    counts[self.truncation_index(ip)] += 1;
                    out.push_str(&self.cut(ip).to_string());
                }
                _ => out.push_str(word),
            }
            word.clear();
        };
        for c in text.chars() {
            if c.is_ascii_hexdigit() || c == '.' || c == ':' {
                word.push(c);
            } else {
                flush(&mut word, &mut out, counts);
                out.push(c);
            }
        }
        flush(&mut word, &mut out, counts);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_event, Limits, Scratch};

    fn rules() -> RedactRules {
        RedactRules {
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            ..RedactRules::default()
        }
    }

    #[test]
    fn each_rule_changes_what_it_names_and_counts_it() {
        let r = Redactor::new(&RedactRules {
            drop: vec!["protocol".into(), "tags.session".into()],
            hash: vec!["host".into(), "tags.user".into()],
            hash_key: Some("0123456789abcdef".into()),
            mask: vec!["email".into(), "bearer".into()],
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ..rules()
        })
        .unwrap()
        .unwrap();
        let mut scratch = Scratch::default();
        let json = r#"{"src_ip":"203.0.113.77","dst_ip":"2001:db8:1:2::9","protocol":"tcp","host":"h1",
            "message":"login a.b@example.com with Authorization: Bearer abc.DEF-123= ok",
            "session":"s1","user":"alice","keep":1}"#;
        let mut e = parse_event(json, 0, &Limits::default(), &mut scratch).unwrap();
        let mut counts = r.counts();
        let tags = r.apply(&mut e, &mut counts).unwrap().unwrap();
        assert_eq!(e.protocol, None);
        assert_eq!(e.host.as_deref().map(str::len), Some(32));
        assert_ne!(e.host.as_deref(), Some("h1"));
        assert_eq!(
            e.message.as_deref(),
            Some("login [email] with Authorization: Bearer [redacted] ok")
        );
        assert_eq!(e.src_ip, Some("203.0.113.0".parse().unwrap()));
        assert_eq!(e.dst_ip, Some("2001:db8:1::".parse().unwrap()));
        let tags: Value = serde_json::from_str(&tags).unwrap();
        assert_eq!(tags["keep"], 1);
        assert!(tags.get("session").is_none());
        assert_eq!(tags["user"].as_str().map(str::len), Some(32));
        // The same value hashes the same way.
        assert_eq!(r.hash("alice"), tags["user"].as_str().unwrap());
        assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(
            r.names,
            [
                "drop:protocol",
                "drop:tags.session",
                "hash:host",
                "hash:tags.user",
                "mask:email",
                "mask:bearer",
                "truncate:ipv4/24",
                "truncate:ipv6/48"
            ]
        );
    }

    #[test]
    fn dead_letters_are_redacted_as_far_as_their_text_allows() {
        let r = Redactor::new(&RedactRules {
            drop: vec!["message".into()],
            mask: vec!["email".into()],
            ipv4_prefix: 24,
            ..rules()
        })
        .unwrap()
        .unwrap();
        let mut counts = r.counts();
        let out = r.text(
            br#"{"src_ip":"198.51.100.9","message":"secret","note":"x@example.org","status":"bad"}"#,
            &mut counts,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"src_ip":"198.51.100.0","note":"[email]","status":"bad"})
        );
        let out = r.text(b"not json 198.51.100.9 y@example.org", &mut counts);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "not json 198.51.100.0 [email]"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let bad = |r: RedactRules| Redactor::new(&r).err().map(|e| e.to_string());
        assert!(bad(RedactRules {
            hash: vec!["host".into()],
            ..rules()
        })
        .unwrap()
        .contains("COLLECTOR_REDACT_HASH_KEY"));
        assert!(bad(RedactRules {
            drop: vec!["src_port".into()],
            ..rules()
        })
        .unwrap()
        .contains("accepted: host"));
        assert!(bad(RedactRules {
            mask: vec!["phone".into()],
            ..rules()
        })
        .is_some());
        assert!(bad(RedactRules {
            ipv4_prefix: 33,
            ..rules()
        })
        .is_some());
        assert!(Redactor::new(&rules()).unwrap().is_none());
    }
}
