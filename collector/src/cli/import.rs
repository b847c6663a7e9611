//! `collector import FILE…`: backfills log files through a running collector's `POST /ingest`, the same
//! pipeline agents use: NDJSON (any shape the collector maps, Suricata's EVE JSON and Zeek's JSON logs
//! included) and Zeek's tab-separated logs (their `#fields`/`#types` header read, each line sent as an object).
//! The position reached in each file is saved after every acknowledged request, so an interrupted import
//! resumes where it stopped, and a file that grew is read on from there; a resent request (an import killed
//! between the answer and the save) is recognised by the collector as a duplicate.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files to import; `-` (or none) reads standard input, which is not resumable.
    pub files: Vec<PathBuf>,

    /// The collector to send to.
    #[arg(long, env = "COLLECTOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// API key; default: the development key in ./data/dev-api-key.
    #[arg(long, env = "COLLECTOR_API_KEY")]
    pub api_key: Option<String>,

    /// Lines per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,

    /// Where the position reached in each file is kept.
    #[arg(long, default_value = ".collector-import.json")]
    pub state_file: PathBuf,

    /// Read every file from its start, whatever position is saved.
    #[arg(long)]
    pub from_start: bool,
}

/// How far each file was imported, by canonical path.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Positions {
    files: BTreeMap<String, Position>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Position {
    /// Bytes of the file acknowledged by the collector (always at a line's end).
    offset: u64,
    /// The file's inode when it was read: another inode at the same path is a new file (rotation).
    inode: u64,
}

/// What an import did, for its summary.
#[derive(Debug, Default)]
struct Totals {
    lines: u64,
    accepted: u64,
    rejected: u64,
    duplicates: u64,
    retries: u64,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string("data/dev-api-key")
            .map(|k| k.trim().to_string())
            .context(
                "no --api-key / COLLECTOR_API_KEY, and no development key in ./data/dev-api-key",
            )?,
    };
    let sender = Sender {
        http: reqwest::Client::new(),
        endpoint: format!("{}/ingest", args.url.trim_end_matches('/')),
        key,
    };
    let mut positions: Positions = std::fs::read(&args.state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut totals = Totals::default();
    let started = Instant::now();
    let stdin_only = args.files.is_empty() || args.files.iter().all(|f| f.as_os_str() == "-");
    if stdin_only {
        let stdin = std::io::stdin();
        import_stream(
            &sender,
            &args,
            BufReader::new(stdin.lock()),
            0,
            &mut totals,
            |_| Ok(()),
        )
        .await?;
    }
    for file in args.files.iter().filter(|f| f.as_os_str() != "-") {
        import_file(&sender, &args, file, &mut positions, &mut totals).await?;
    }
    println!(
        "Imported {} lines in {:.1} s: {} events accepted, {} rejected (in ingest_rejects), {} requests already \
         acknowledged before (duplicates), {} retries after 429/503",
        totals.lines,
        started.elapsed().as_secs_f64(),
        totals.accepted,
        totals.rejected,
        totals.duplicates,
        totals.retries
    );
    Ok(())
}

async fn import_file(
    sender: &Sender,
    args: &ImportArgs,
    path: &Path,
    positions: &mut Positions,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata()?;
    let name = std::fs::canonicalize(path)?.display().to_string();
    let saved = positions.files.get(&name).copied().unwrap_or_default();
    let resume = !args.from_start && saved.inode == meta.ino() && saved.offset <= meta.len();
    let offset = if resume { saved.offset } else { 0 };
    if offset == meta.len() {
        println!("{}: already imported ({} bytes)", path.display(), offset);
        return Ok(());
    }
    if offset > 0 {
        println!(
            "{}: resuming at byte {offset} of {}",
            path.display(),
            meta.len()
        );
    }
    let bar = indicatif::ProgressBar::new(meta.len());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(path.display().to_string());
    bar.set_position(offset);
    // A Zeek tab-separated log: its header, read from the start, applies to every line.
    let mut head = String::new();
    BufReader::new(&mut file).read_line(&mut head)?;
    let zeek = head.starts_with("#separator");
    file.seek(SeekFrom::Start(0))?;
    let zeek_header = if zeek {
        Some(ZeekHeader::read(&mut file)?)
    } else {
        None
    };
    file.seek(SeekFrom::Start(offset))?;
    let inode = meta.ino();
    let state_file = args.state_file.clone();
    let mut save = |acknowledged: u64| -> anyhow::Result<()> {
        positions.files.insert(
            name.clone(),
            Position {
                offset: acknowledged,
                inode,
            },
        );
        let tmp = state_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*positions)?)?;
        std::fs::rename(&tmp, &state_file)?;
        bar.set_position(acknowledged);
        Ok(())
    };
    let reader = BufReader::new(file);
    match zeek_header {
        Some(header) => {
            let converted = ZeekLines {
                inner: reader,
                header,
            };
            import_stream(sender, args, converted, offset, totals, &mut save).await?;
        }
        None => import_stream(sender, args, reader, offset, totals, &mut save).await?,
    }
    bar.finish_and_clear();
    println!(
        "{}: imported to byte {}",
        path.display(),
        meta.len().max(offset)
    );
    Ok(())
}

/// A source of lines with the byte offset each ends at.
trait Lines {
    /// The next line (without its newline) and how many bytes it took; `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<(String, u64)>>;
}

impl<R: BufRead> Lines for R {
    fn next_line(&mut self) -> std::io::Result<Option<(String, u64)>> {
        let mut raw = Vec::new();
        let n = self.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        Ok(Some((text, n as u64)))
    }
}

/// Sends the lines of `lines` in requests of `batch_size`, calling `acknowledged` with the offset reached after
/// each one the collector took.
async fn import_stream(
    sender: &Sender,
    args: &ImportArgs,
    mut lines: impl Lines,
    mut offset: u64,
    totals: &mut Totals,
    mut acknowledged: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    loop {
        let mut body = String::new();
        let mut n = 0;
        let mut end = offset;
        while n < args.batch_size.max(1) {
            let Some((line, len)) = lines.next_line()? else {
                break;
            };
            end += len;
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            body.push_str(&line);
            body.push('\n');
            n += 1;
        }
        if n > 0 {
            sender.send(body, totals).await?;
            totals.lines += n as u64;
        }
        if end == offset {
            return Ok(());
        }
        offset = end;
        acknowledged(offset)?;
    }
}

struct Sender {
    http: reqwest::Client,
    endpoint: String,
    key: String,
}

impl Sender {
    /// POSTs one NDJSON body until it is acknowledged, backing off on 429/503 and connection errors.
    async fn send(&self, body: String, totals: &mut Totals) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = self
                .http
                .post(&self.endpoint)
                .header("x-api-key", &self.key)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 202 => {
                    let receipt: Value = r.json().await.unwrap_or_default();
                    totals.accepted += receipt["accepted"].as_u64().unwrap_or(0);
                    totals.rejected += receipt["rejected"].as_u64().unwrap_or(0);
                    totals.duplicates += u64::from(receipt["duplicate"] == true);
                    return Ok(());
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {}
                Ok(r) => {
                    let status = r.status();
                    let answer = r.text().await.unwrap_or_default();
                    anyhow::bail!("the collector answered {status}: {answer}");
                }
                Err(e) if e.is_connect() || e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
            totals.retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// The header of a Zeek tab-separated log.
struct ZeekHeader {
    separator: String,
    set_separator: String,
    empty: String,
    unset: String,
    fields: Vec<String>,
    types: Vec<String>,
}

impl ZeekHeader {
    fn read(file: &mut std::fs::File) -> anyhow::Result<ZeekHeader> {
        let mut h = ZeekHeader {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty: "(empty)".into(),
            unset: "-".into(),
            fields: Vec::new(),
            types: Vec::new(),
        };
        let mut text = String::new();
        BufReader::new(file.take(1 << 20))
            .read_to_string(&mut text)
            .ok();
        for line in text.lines().take_while(|l| l.starts_with('#')) {
            if let Some(sep) = line.strip_prefix("#separator ") {
                h.separator = unescape(sep);
                continue;
            }
            let mut parts = line.split(h.separator.as_str());
            let name = parts.next().unwrap_or_default();
            let rest: Vec<String> = parts.map(str::to_string).collect();
            match name {
                "#set_separator" => h.set_separator = rest.concat(),
                "#empty_field" => h.empty = rest.concat(),
                "#unset_field" => h.unset = rest.concat(),
                "#fields" => h.fields = rest,
                "#types" => h.types = rest,
                _ => {}
            }
        }
        anyhow::ensure!(!h.fields.is_empty(), "a Zeek log without a #fields line");
        Ok(h)
    }

    /// One data line as a JSON object.
    fn to_json(&self, line: &str) -> String {
        let mut object = Map::new();
        for (i, value) in line.split(self.separator.as_str()).enumerate() {
            let (Some(name), kind) = (self.fields.get(i), self.types.get(i).map(String::as_str))
            else {
                continue;
            };
            if value == self.unset || value == self.empty {
                continue;
            }
            let typed = match kind.unwrap_or("string") {
                "time" | "interval" | "double" => value.parse::<f64>().ok().map(Value::from),
                "count" | "int" | "port" => value.parse::<i64>().ok().map(Value::from),
                "bool" => Some(Value::Bool(value == "T")),
                k if k.starts_with("set[") || k.starts_with("vector[") => Some(Value::Array(
                    value
                        .split(self.set_separator.as_str())
                        .map(|v| Value::String(v.to_string()))
                        .collect(),
                )),
                _ => None,
            };
            object.insert(
                name.clone(),
                typed.unwrap_or_else(|| Value::String(value.to_string())),
            );
        }
        Value::Object(object).to_string()
    }
}

/// `\x09` → a tab.
fn unescape(s: &str) -> String {
    let s = s.trim();
    match s
        .strip_prefix("\\x")
        .and_then(|h| u8::from_str_radix(h, 16).ok())
    {
        Some(b) => (b as char).to_string(),
        None => s.to_string(),
    }
}

/// The data lines of a Zeek log as JSON objects (header and `#close` lines pass as comments).
struct ZeekLines<R> {
    inner: R,
    header: ZeekHeader,
}

impl<R: BufRead> Lines for ZeekLines<R> {
    fn next_line(&mut self) -> std::io::Result<Option<(String, u64)>> {
        Ok(self.inner.next_line()?.map(|(line, n)| {
            if line.starts_with('#') || line.trim().is_empty() {
                (line, n)
            } else {
                (self.header.to_json(&line), n)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeek_tab_separated_lines_become_typed_objects() {
        let h = ZeekHeader {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty: "(empty)".into(),
            unset: "-".into(),
            fields: [
                "ts",
                "id.orig_p",
                "service",
                "duration",
                "local_orig",
                "tunnel_parents",
            ]
            .map(String::from)
            .into(),
            types: ["time", "port", "string", "interval", "bool", "set[string]"]
                .map(String::from)
                .into(),
        };
        let v: Value =
            serde_json::from_str(&h.to_json("1764324000.5\t443\t-\t0.25\tT\ta,b")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ts": 1764324000.5, "id.orig_p": 443, "duration": 0.25, "local_orig": true,
                               "tunnel_parents": ["a", "b"]})
        );
        assert_eq!(unescape("\\x09"), "\t");
    }
}
