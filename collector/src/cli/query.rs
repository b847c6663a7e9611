//! `collector query <kind>`: the read endpoints from the command line, against the collector's HTTP API or
//! straight against `DATABASE_URL` (same code as the API: [`crate::query::api::execute`]), printed as aligned
//! tables or JSON.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::query::api::{self, Kind};

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// What to ask for.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The collector to ask (HTTP API). Used unless --database-url is given; default http://127.0.0.1:8080.
    #[arg(long, env = "COLLECTOR_URL")]
    pub url: Option<String>,
    /// API key for --url; default: the development key in ./data/dev-api-key.
    #[arg(long, env = "COLLECTOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Query PostgreSQL directly instead of the HTTP API.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print the JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Volume, error-rate, latency: print every bucket of the series, not one summary row (per group).
    #[arg(long)]
    pub series: bool,
    #[arg(
        long,
        allow_hyphen_values = true,
        help = "Start: RFC 3339 or relative (-15m, -1h, -7d); default -1h"
    )]
    pub from: Option<String>,
    #[arg(
        long,
        allow_hyphen_values = true,
        help = "End (exclusive): RFC 3339, relative, or now"
    )]
    pub to: Option<String>,
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub protocol: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub producer: Option<String>,
    /// Source IP or CIDR.
    #[arg(long)]
    pub src: Option<String>,
    /// Destination IP or CIDR.
    #[arg(long)]
    pub dst: Option<String>,
    #[arg(long)]
    pub dst_port: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    /// 1xx … 5xx.
    #[arg(long)]
    pub status_class: Option<String>,
    /// Source country: ISO code or range label (with enrichment).
    #[arg(long)]
    pub src_country: Option<String>,
    /// Destination country.
    #[arg(long)]
    pub dst_country: Option<String>,
    /// Source AS number (64500 or AS64500).
    #[arg(long)]
    pub src_asn: Option<String>,
    /// Destination AS number.
    #[arg(long)]
    pub dst_asn: Option<String>,
    /// Events that matched a threat list: `any` or a list's name.
    #[arg(long)]
    pub threat: Option<String>,
    /// 1m, 5m, 1h or 1d (volume, error-rate, latency).
    #[arg(long)]
    pub bucket: Option<String>,
    /// `service`; for volume and error-rate also src_country, dst_country, src_asn or dst_asn.
    #[arg(long)]
    pub group_by: Option<String>,
    /// src_ip, dst_ip, pair, dst_port, service, protocol, src_country, dst_country, src_asn, dst_asn or
    /// threat (top-talkers).
    #[arg(long)]
    pub by: Option<String>,
    /// events or bytes (top-talkers).
    #[arg(long)]
    pub metric: Option<String>,
    /// Rows (top-talkers, logs).
    #[arg(long)]
    pub limit: Option<String>,
    /// Only events at least this slow (logs).
    #[arg(long)]
    pub min_latency_ms: Option<String>,
    /// next_cursor of a previous page (logs).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl QueryArgs {
    /// The same parameter names the HTTP API takes.
    fn params(&self) -> HashMap<String, String> {
        let pairs = [
            ("from", &self.from),
            ("to", &self.to),
            ("service", &self.service),
            ("protocol", &self.protocol),
            ("host", &self.host),
            ("producer", &self.producer),
            ("src", &self.src),
            ("dst", &self.dst),
            ("dst_port", &self.dst_port),
            ("status", &self.status),
            ("status_class", &self.status_class),
            ("src_country", &self.src_country),
            ("dst_country", &self.dst_country),
            ("src_asn", &self.src_asn),
            ("dst_asn", &self.dst_asn),
            ("threat", &self.threat),
            ("bucket", &self.bucket),
            ("group_by", &self.group_by),
            ("by", &self.by),
            ("metric", &self.metric),
            ("limit", &self.limit),
            ("min_latency_ms", &self.min_latency_ms),
            ("cursor", &self.cursor),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect()
    }
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let params = args.params();
    let answer = match (&args.database_url, &args.url) {
        (Some(db), None) => {
            let pool = crate::db::pool(db, 1)?;
            let mut client = pool.get().await.context("connecting to the database")?;
            // At a terminal the user decides how long to wait.
            api::execute(args.kind, &params, &mut client, None, None, None).await?
        }
        _ => over_http(&args, &params).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render(args.kind, &answer, args.series));
    }
    Ok(())
}

async fn over_http(args: &QueryArgs, params: &HashMap<String, String>) -> anyhow::Result<Value> {
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let key = match &args.api_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string("data/dev-api-key")
            .map(|k| k.trim().to_string())
            .context("no --api-key (COLLECTOR_API_KEY) and no ./data/dev-api-key")?,
    };
    let url = format!("{}{}", base.trim_end_matches('/'), args.kind.path());
    let resp = reqwest::Client::new()
        .get(&url)
        .header("x-api-key", key)
        .query(params)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["detail"].as_str().unwrap_or("(no detail)")
        );
    }
    Ok(body)
}

/// An aligned table of the answer's rows, with a line of context above it: for volume, error rate and latency,
/// one summary row over the window (per group), or with `series` every bucket.
pub fn render(kind: Kind, v: &Value, series: bool) -> String {
    let mut out = String::new();
    if let (Some(from), Some(to)) = (v["from"].as_str(), v["to"].as_str()) {
        let _ = write!(out, "{from} → {to}");
        if let Some(b) = v["bucket"].as_str() {
            let _ = write!(out, ", bucket {b}");
        }
        let _ = writeln!(out, ", from {}", v["source"].as_str().unwrap_or("?"));
    }
    // A grouped answer names each group by the `group_by` it was asked with.
    let group = v["groups"]
        .as_array()
        .and_then(|g| g.first())
        .and_then(|g| {
            g.as_object()?
                .keys()
                .find(|k| !["overall", "series", "total"].contains(&k.as_str()))
                .cloned()
        });
    let grouped = |cols: &[&'static str]| -> Vec<String> {
        group
            .iter()
            .cloned()
            .chain(cols.iter().map(|c| c.to_string()))
            .collect()
    };
    let summary = if kind == Kind::Volume {
        "total"
    } else {
        "overall"
    };
    let (rows, columns): (Vec<Value>, Vec<String>) = match kind {
        Kind::Volume if !series => (
            summary_rows(v, summary, group.as_deref()),
            grouped(&["events", "bytes_in", "bytes_out"]),
        ),
        Kind::ErrorRate if !series => (
            summary_rows(v, summary, group.as_deref()),
            grouped(&["total", "errors", "client_errors", "error_ratio"]),
        ),
        Kind::Latency if !series => (
            summary_rows(v, summary, group.as_deref()),
            grouped(&["count", "p50", "p90", "p95", "p99", "max"]),
        ),
        Kind::Volume => (
            rows_of(v, group.as_deref()),
            grouped(&["t", "events", "bytes_in", "bytes_out"]),
        ),
        Kind::ErrorRate => (
            rows_of(v, group.as_deref()),
            grouped(&["t", "total", "errors", "client_errors", "error_ratio"]),
        ),
        Kind::Latency => (
            rows_of(v, group.as_deref()),
            grouped(&["t", "count", "p50", "p90", "p95", "p99", "max"]),
        ),
        Kind::TopTalkers => {
            let mut cols: Vec<String> = match v["by"].as_str() {
                Some("src_ip+dst_ip") => vec!["src_ip".into(), "dst_ip".into()],
                Some(by) => vec![by.to_string()],
                None => vec![],
            };
            cols.extend(["events", "bytes", "errors", "client_errors", "share"].map(String::from));
            (v["top"].as_array().cloned().unwrap_or_default(), cols)
        }
        Kind::Logs => (
            v["events"].as_array().cloned().unwrap_or_default(),
            [
                "timestamp",
                "src_ip",
                "src_port",
                "dst_ip",
                "dst_port",
                "protocol",
                "service",
                "status",
                "latency_ms",
                "bytes_in",
                "bytes_out",
                "host",
                "message",
            ]
            .map(String::from)
            .to_vec(),
        ),
    };
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    out.push_str(&table(&rows, &columns));
    if kind == Kind::Logs {
        if let Some(c) = v["next_cursor"].as_str() {
            let _ = writeln!(out, "next page: --cursor {c}");
        }
    }
    if let Some(o) = v
        .get("overall")
        .filter(|_| series && kind == Kind::ErrorRate)
    {
        let _ = writeln!(
            out,
            "overall: {} events, {} errors, ratio {}",
            o["total"],
            o["errors"],
            cell(&o["error_ratio"])
        );
    }
    out
}

/// One row over the whole window: the answer's `summary` (`overall`, or volume's `total`), or each group's
/// with its key.
fn summary_rows(v: &Value, summary: &str, group: Option<&str>) -> Vec<Value> {
    match (v["groups"].as_array(), group) {
        (Some(groups), Some(key)) => groups
            .iter()
            .map(|g| {
                let mut o = g[summary].clone();
                if let Some(obj) = o.as_object_mut() {
                    obj.insert(key.into(), g[key].clone());
                }
                o
            })
            .collect(),
        _ => vec![v[summary].clone()],
    }
}

/// The series rows, or the rows of every group with the group's key added to each.
fn rows_of(v: &Value, group: Option<&str>) -> Vec<Value> {
    if let Some(series) = v["series"].as_array() {
        return series.clone();
    }
    let mut rows = Vec::new();
    for g in v["groups"].as_array().into_iter().flatten() {
        for p in g["series"].as_array().into_iter().flatten() {
            let mut p = p.clone();
            if let (Some(obj), Some(key)) = (p.as_object_mut(), group) {
                obj.insert(key.into(), g[key].clone());
            }
            rows.push(p);
        }
    }
    rows
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f:.3}")
            }
        }
        other => other.to_string(),
    }
}

pub(crate) fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, vals: &[String]| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(
        &mut out,
        &columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    for r in &cells {
        line(&mut out, r);
    }
    out
}
