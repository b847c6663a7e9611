//! Threat feeds: local lists of networks, each with a name (`COLLECTOR_THREAT_LISTS=[name=]path,…`; the name is
//! the file's stem unless given). A list is a text file of one address or network per line, as the common
//! blocklists publish them: `1.2.3.0/24`, `1.2.3.4`, `2001:db8::/32`; anything after `;` or `#` is a comment
//! (Spamhaus DROP's `1.2.3.0/24 ; SBL123`), and lines that are neither are skipped and counted. Lists are
//! reloaded when they change (checked every 2 s) and on SIGHUP; a list that does not load keeps the previous
//! one in use. Nothing is ever fetched from the network.
//!
//! Each list is kept as sorted, merged address ranges (IPv4 and IPv6 apart), so that a lookup is a binary search
//! per list: about 17 comparisons for 100,000 networks, and no allocation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Stamp;

/// One configured list: its name and file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreatFile {
    pub name: String,
    pub path: PathBuf,
}

impl std::str::FromStr for ThreatFile {
    type Err = String;

    /// `name=path`, or `path` (named after the file's stem).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, path) = match s.split_once('=') {
            Some((name, path)) => (name.trim().to_string(), PathBuf::from(path.trim())),
            None => {
                let path = PathBuf::from(s.trim());
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                (stem.to_string(), path)
            }
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            return Err(format!(
                "threat list name {name:?} (of {s:?}): 1 to 64 letters, digits, '-', '_' or '.'; \
                 give one as name=path"
            ));
        }
        Ok(ThreatFile { name, path })
    }
}

/// A list as loaded: merged, sorted inclusive ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Ranges {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match unmapped(ip) {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }

    /// Ranges after merging overlapping and adjacent networks.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(start, _)| start <= x);
    after > 0 && ranges[after - 1].1 >= x
}

fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| start <= n) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// What reading a list's text found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub ranges: Ranges,
    /// Networks and addresses read.
    pub entries: usize,
    /// Lines that were neither blank, comment nor an address: (line number, its text, cut).
    pub skipped: Vec<(usize, String)>,
    pub skipped_count: usize,
}

/// Lines kept to say what was skipped.
const SKIPPED_SHOWN: usize = 3;

/// Reads a list's text.
pub fn parse(text: &str) -> Parsed {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut out = Parsed::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split([';', '#']).next().unwrap_or_default().trim();
        let Some(token) = line.split_whitespace().next() else {
            continue;
        };
        let network = token
            .parse::<ipnetwork::IpNetwork>()
            .or_else(|_| token.parse::<IpAddr>().map(ipnetwork::IpNetwork::from));
        match network {
            Ok(ipnetwork::IpNetwork::V4(net)) => {
                v4.push((u32::from(net.network()), u32::from(net.broadcast())));
                out.entries += 1;
            }
            Ok(ipnetwork::IpNetwork::V6(net)) => {
                let start = u128::from(net.network());
                let host_mask = u128::MAX.checked_shr(u32::from(net.prefix())).unwrap_or(0);
                v6.push((start, start | host_mask));
                out.entries += 1;
            }
            Err(_) => {
                out.skipped_count += 1;
                if out.skipped.len() < SKIPPED_SHOWN {
                    out.skipped
                        .push((n + 1, token.chars().take(60).collect::<String>()));
                }
            }
        }
    }
    out.ranges = Ranges {
        v4: merged(v4, |x: u32| x.checked_add(1)),
        v6: merged(v6, |x: u128| x.checked_add(1)),
    };
    out
}

struct List {
    name: Arc<str>,
    ranges: Ranges,
    entries: usize,
    stamp: Stamp,
}

/// The configured lists, in their order: a match names the first list that has the address.
pub struct Threats {
    files: Vec<ThreatFile>,
    /// Addresses found on each list since start.
    hits: Arc<[AtomicU64]>,
    lists: RwLock<Arc<Vec<Option<Arc<List>>>>>,
    /// Each file's stamp when it last failed to load: not tried again until it changes.
    failed: std::sync::Mutex<Vec<Option<Stamp>>>,
}

impl std::fmt::Debug for Threats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threats")
            .field("files", &self.files)
            .finish()
    }
}

/// The lists as loaded at one moment: a batch looks up in one snapshot.
pub struct Snapshot {
    lists: Arc<Vec<Option<Arc<List>>>>,
    hits: Arc<[AtomicU64]>,
}

impl Snapshot {
    /// The name of the first list holding `ip` (and the match counted).
    pub fn matching(&self, ip: IpAddr) -> Option<&Arc<str>> {
        let (i, list) = self
            .lists
            .iter()
            .enumerate()
            .find_map(|(i, l)| l.as_ref().filter(|l| l.ranges.contains(ip)).map(|l| (i, l)))?;
        self.hits[i].fetch_add(1, Ordering::Relaxed);
        Some(&list.name)
    }
}

impl Threats {
    /// Loads the lists; one that does not load is logged and left out until it does.
    pub fn open(files: Vec<ThreatFile>) -> Arc<Threats> {
        let n = files.len();
        let t = Arc::new(Threats {
            files,
            hits: (0..n).map(|_| AtomicU64::new(0)).collect(),
            lists: RwLock::new(Arc::new(vec![None; n])),
            failed: std::sync::Mutex::new(vec![None; n]),
        });
        t.reload(true);
        t
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            lists: self.lists.read().unwrap_or_else(|e| e.into_inner()).clone(),
            hits: self.hits.clone(),
        }
    }

    /// Loads the lists that changed (all of them when `all`).
    pub fn reload(&self, all: bool) -> bool {
        let current = self.snapshot().lists;
        let mut next = current.as_ref().clone();
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for (i, file) in self.files.iter().enumerate() {
            let now = super::stamp(&file.path);
            let unchanged = next[i].as_ref().is_some_and(|l| l.stamp == now);
            if !all && (unchanged || failed[i] == Some(now)) {
                continue;
            }
            match load(file, now) {
                Ok(list) => {
                    tracing::info!(list = %file.name, path = %file.path.display(), networks = list.entries,
                        ranges = list.ranges.len(), "Threat list loaded");
                    next[i] = Some(Arc::new(list));
                    failed[i] = None;
                    changed = true;
                }
                Err(e) => {
                    failed[i] = Some(now);
                    tracing::error!(list = %file.name, error = %e,
                        "Threat list does not load; the previous one (if any) stays in use until it does");
                }
            }
        }
        if changed {
            *self.lists.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        }
        changed
    }

    /// Reloads changed lists every `every`, and every list on SIGHUP, until cancelled.
    pub async fn watch(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        super::watch(every, shutdown, move |all| {
            self.reload(all);
        })
        .await;
    }

    /// Each list's name, networks (`None` when it is not loaded) and addresses matched: for /readyz and
    /// /metrics.
    pub fn status(&self) -> Vec<(String, Option<usize>, u64)> {
        let lists = self.snapshot().lists;
        self.files
            .iter()
            .zip(lists.iter())
            .zip(self.hits.iter())
            .map(|((f, l), h)| {
                (
                    f.name.clone(),
                    l.as_ref().map(|l| l.entries),
                    h.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

fn load(file: &ThreatFile, stamp: Stamp) -> Result<List, String> {
    let text = std::fs::read(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let parsed = parse(&text);
    if parsed.skipped_count > 0 {
        let shown: Vec<String> = parsed
            .skipped
            .iter()
            .map(|(n, t)| format!("line {n}: {t:?}"))
            .collect();
        tracing::warn!(list = %file.name, skipped = parsed.skipped_count, first = %shown.join(", "),
            "Threat list lines that are not an address or network were skipped");
    }
    if parsed.entries == 0 && parsed.skipped_count > 0 {
        return Err(format!(
            "{}: no line is an address or network",
            file.path.display()
        ));
    }
    Ok(List {
        name: Arc::from(file.name.as_str()),
        ranges: parsed.ranges,
        entries: parsed.entries,
        stamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn has(list: &str, ip: &str) -> bool {
        parse(list).ranges.contains(ip.parse().unwrap())
    }

    #[test]
    fn networks_match_up_to_their_boundaries_and_not_past_them() {
        let list = "; Spamhaus-style header\n192.0.2.0/25 ; SBL1\n198.51.100.7\n# comment\n\n2001:db8:1::/48\n";
        for (ip, want) in [
            ("192.0.1.255", false),
            ("192.0.2.0", true),
            ("192.0.2.127", true),
            ("192.0.2.128", false),
            ("198.51.100.6", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("::ffff:198.51.100.7", true),
            ("2001:db8:0:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db8:1::", true),
            ("2001:db8:1:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db8:2::", false),
        ] {
            assert_eq!(has(list, ip), want, "{ip}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge_and_junk_is_counted() {
        let p = parse(
            "10.0.0.0/24\n10.0.1.0/24\n10.0.0.128/25\nnot-an-ip\n0.0.0.0/0 extra words\n::/0\n",
        );
        assert_eq!(p.entries, 5);
        assert_eq!(p.skipped_count, 1);
        assert_eq!(p.skipped, vec![(4, "not-an-ip".to_string())]);
        // 0.0.0.0/0 swallows the rest; ::/0 is one range.
        assert_eq!(p.ranges.len(), 2);
        assert!(p.ranges.contains("255.255.255.255".parse().unwrap()));
        assert!(p.ranges.contains("ffff::1".parse().unwrap()));
    }

    #[test]
    fn names_come_from_the_setting_or_the_file() {
        let f: ThreatFile = "/x/drop.txt".parse().unwrap();
        assert_eq!(f.name, "drop");
        let f: ThreatFile = "tor = /x/exits.list".parse().unwrap();
        assert_eq!(
            (f.name.as_str(), f.path.as_path()),
            ("tor", Path::new("/x/exits.list"))
        );
        assert!("bad name=/x".parse::<ThreatFile>().is_err());
    }
}
