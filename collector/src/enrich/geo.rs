//! GeoIP and ASN from MaxMind DB files (`maxminddb`): a country/city database (`COLLECTOR_GEOIP_CITY_DB`:
//! GeoIP2/GeoLite2 City or Country, DB-IP lite, any file with `country.iso_code`) and an ASN database
//! (`COLLECTOR_GEOIP_ASN_DB`: `autonomous_system_number` and `_organization`); one combined file may be given
//! as both. Private, loopback, link-local, documentation, shared and multicast addresses are labelled as such
//! (in the country column) and not looked up. The files are reloaded when they change (checked every 2 s) and
//! on SIGHUP; a file that does not load leaves the previous one in use (or none), with a log line: the
//! collector keeps running without it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{stamp, Stamp};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Where the databases are, and whether city names are stored.
#[derive(Debug, Clone, Default)]
pub struct GeoFiles {
    pub city: Option<PathBuf>,
    pub asn: Option<PathBuf>,
    pub with_city: bool,
}

impl GeoFiles {
    pub fn is_empty(&self) -> bool {
        self.city.is_none() && self.asn.is_none()
    }
}

/// What is known of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166 code, or the label of a special range (`private`, `loopback`, …).
    pub country: Option<Box<str>>,
    pub city: Option<Box<str>>,
    pub asn: Option<i64>,
    pub org: Option<Box<str>>,
}

/// Addresses remembered per shard at most; a full shard is emptied (traffic repeats its talkers, so a small
/// cache takes most lookups off the database's tree).
const SHARD_ENTRIES: usize = 4096;
const SHARDS: usize = 16;

struct Db {
    reader: maxminddb::Reader<Vec<u8>>,
    stamp: Stamp,
}

#[derive(Default)]
struct Dbs {
    city: Option<Arc<Db>>,
    asn: Option<Arc<Db>>,
}

pub struct Geo {
    files: GeoFiles,
    dbs: RwLock<Arc<Dbs>>,
    /// Each file's size and time when it last failed to load: not tried again (nor logged) until it changes.
    failed: Mutex<HashMap<&'static str, Stamp>>,
    cache: Vec<Mutex<HashMap<IpAddr, Arc<Place>>>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo").field("files", &self.files).finish()
    }
}

#[derive(Deserialize)]
struct Names {
    en: Option<String>,
}

#[derive(Deserialize)]
struct Named {
    iso_code: Option<String>,
    names: Option<Names>,
}

/// GeoIP2's layout (MaxMind, DB-IP): nested `country.iso_code`, `city.names.en`.
#[derive(Deserialize)]
struct Record {
    country: Option<Named>,
    city: Option<Named>,
    autonomous_system_number: Option<u64>,
    autonomous_system_organization: Option<String>,
}

/// The flat layout of the ip-location-db files `scripts/geoip.sh` installs: `country_code`, `city`.
#[derive(Deserialize)]
struct FlatRecord {
    country_code: Option<String>,
    city: Option<String>,
    autonomous_system_number: Option<u64>,
    autonomous_system_organization: Option<String>,
}

impl From<FlatRecord> for Record {
    fn from(f: FlatRecord) -> Record {
        let named = |code: Option<String>, name: Option<String>| Named {
            iso_code: code,
            names: Some(Names { en: name }),
        };
        Record {
            country: Some(named(f.country_code, None)),
            city: Some(named(None, f.city)),
            autonomous_system_number: f.autonomous_system_number,
            autonomous_system_organization: f.autonomous_system_organization,
        }
    }
}

fn open(path: &Path) -> Result<Db, String> {
    let stamp = stamp(path);
    let reader =
        maxminddb::Reader::open_readfile(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Db { reader, stamp })
}

impl Geo {
    /// Opens the databases; one that does not load is logged and left out (enrichment runs without it).
    pub fn open(files: GeoFiles) -> Arc<Geo> {
        let geo = Arc::new(Geo {
            files,
            dbs: RwLock::new(Arc::default()),
            failed: Mutex::default(),
            cache: (0..SHARDS).map(|_| Mutex::default()).collect(),
        });
        geo.reload(true);
        geo
    }

    /// Loads what changed (everything when `all`); keeps what does not load.
    fn reload(&self, all: bool) -> bool {
        let current = self.current();
        let mut next = Dbs {
            city: current.city.clone(),
            asn: current.asn.clone(),
        };
        let mut changed = false;
        let same = self.files.city.is_some() && self.files.city == self.files.asn;
        for (path, slot, kind) in [
            (&self.files.city, &mut next.city, "city"),
            (&self.files.asn, &mut next.asn, "asn"),
        ] {
            let Some(path) = path else { continue };
            let now = stamp(path);
            if !all && slot.as_ref().is_some_and(|db| db.stamp == now) {
                continue;
            }
            let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
            if !all && failed.get(kind) == Some(&now) {
                continue;
            }
            match open(path) {
                Ok(db) => {
                    tracing::info!(database = kind, path = %path.display(),
                        built = db.reader.metadata().build_epoch, kind = %db.reader.metadata().database_type,
                        "GeoIP database loaded");
                    *slot = Some(Arc::new(db));
                    failed.remove(kind);
                    changed = true;
                }
                Err(e) => {
                    failed.insert(kind, now);
                    // Checked again at the next change.
                    if slot.is_none() || all {
                        tracing::error!(database = kind, error = %e,
                            "GeoIP database does not load; enrichment runs without it until it does");
                    } else {
                        tracing::warn!(database = kind, error = %e,
                            "GeoIP database changed but does not load; the previous one stays in use");
                    }
                }
            }
            if same {
                break;
            }
        }
        if same {
            next.asn = next.city.clone();
        }
        if changed {
            *self.dbs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
            for shard in &self.cache {
                shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
        }
        changed
    }

    fn current(&self) -> Arc<Dbs> {
        self.dbs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What is known of `ip`: a special range's label, or the databases' answer (empty when neither knows it).
    pub fn place(&self, ip: IpAddr) -> Option<Arc<Place>> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let shard = &self.cache[shard_of(ip)];
        if let Some(p) = shard.lock().unwrap_or_else(|e| e.into_inner()).get(&ip) {
            return Some(p.clone());
        }
        let place = Arc::new(self.look_up(ip));
        let mut entries = shard.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SHARD_ENTRIES {
            entries.clear();
        }
        entries.insert(ip, place.clone());
        Some(place)
    }

    fn look_up(&self, ip: IpAddr) -> Place {
        if let Some(label) = special(ip) {
            return Place {
                country: Some(label.into()),
                ..Place::default()
            };
        }
        let dbs = self.current();
        let mut place = Place::default();
        let record = |db: &Option<Arc<Db>>| -> Option<Record> {
            let found = db.as_ref()?.reader.lookup(ip).ok()?;
            match found.decode::<Record>() {
                Ok(Some(r)) if r.country.is_some() || r.autonomous_system_number.is_some() => {
                    Some(r)
                }
                _ => found.decode::<FlatRecord>().ok()?.map(Record::from),
            }
        };
        if let Some(r) = record(&dbs.city) {
            place.country = r.country.and_then(|c| c.iso_code).map(Into::into);
            if self.files.with_city {
                place.city = r.city.and_then(|c| c.names?.en).map(Into::into);
            }
            place.asn = r
                .autonomous_system_number
                .and_then(|n| i64::try_from(n).ok());
            place.org = r.autonomous_system_organization.map(Into::into);
        }
        let same = matches!((&dbs.asn, &dbs.city), (Some(a), Some(c)) if Arc::ptr_eq(a, c));
        if !same {
            if let Some(r) = record(&dbs.asn) {
                place.asn = r
                    .autonomous_system_number
                    .and_then(|n| i64::try_from(n).ok())
                    .or(place.asn);
                place.org = r
                    .autonomous_system_organization
                    .map(Into::into)
                    .or(place.org);
            }
        }
        place
    }

    /// Each database's path and build time (Unix seconds), or `null` when it is not loaded: for /readyz and
    /// /metrics.
    pub fn status(&self) -> Vec<(&'static str, String, Option<u64>)> {
        let dbs = self.current();
        let mut out = Vec::new();
        for (kind, path, db) in [
            ("city", &self.files.city, &dbs.city),
            ("asn", &self.files.asn, &dbs.asn),
        ] {
            if let Some(path) = path {
                out.push((
                    kind,
                    path.display().to_string(),
                    db.as_ref().map(|d| d.reader.metadata().build_epoch),
                ));
            }
        }
        out
    }

    /// Reloads changed files every `every`, and every file on SIGHUP, until cancelled.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        super::watch(every, shutdown, move |all| {
            self.reload(all);
        })
        .await;
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let h = match ip {
        IpAddr::V4(a) => u32::from(a) as u64,
        IpAddr::V6(a) => {
            let n = u128::from(a);
            (n as u64) ^ ((n >> 64) as u64)
        }
    };
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

/// The label of a range no database describes.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(match o {
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => "private",
        [127, ..] => "loopback",
        [169, 254, ..] => "link-local",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [100, 64..=127, ..] => "shared",
        [224..=239, ..] => "multicast",
        [0, ..] => "unspecified",
        [240..=255, ..] => "reserved",
        _ => return None,
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    Some(if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_labelled_at_their_boundaries() {
        for (ip, label) in [
            ("10.0.0.1", Some("private")),
            ("172.15.255.255", None),
            ("172.16.0.0", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.0", None),
            ("192.168.1.1", Some("private")),
            ("127.0.0.1", Some("loopback")),
            ("169.254.3.4", Some("link-local")),
            ("192.0.2.7", Some("documentation")),
            ("198.51.100.1", Some("documentation")),
            ("100.63.255.255", None),
            ("100.64.0.1", Some("shared")),
            ("8.8.8.8", None),
            ("::1", Some("loopback")),
            ("fd00::1", Some("private")),
            ("fe80::1", Some("link-local")),
            ("2001:db8::1", Some("documentation")),
            ("2001:4860::8888", None),
            ("ff02::1", Some("multicast")),
        ] {
            assert_eq!(special(ip.parse().unwrap()), label, "{ip}");
        }
    }
}
