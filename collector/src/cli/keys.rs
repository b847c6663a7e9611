//! `collector keys create|list|revoke|rotate`: stored API keys, straight in the database (DATABASE_URL, or the
//! private server in --data-dir, started or shared with a running collector). Every collector on that database
//! applies a change within COLLECTOR_KEY_REFRESH_MS.

use std::time::Duration;

use anyhow::Context as _;

use crate::app::Database;
use crate::auth::store::{self, CreatedKey, KeyInfo, NewKey};
use crate::config::DatabaseArgs;
use crate::db::{self, migrate};

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Make a key and print its secret (shown this once).
    Create {
        /// The producer its events are stored under.
        #[arg(long)]
        name: String,
        /// Comma-separated: ingest, read, admin.
        #[arg(long, value_delimiter = ',', default_value = "ingest")]
        scopes: Vec<String>,
        /// Limits its reads (and, for an admin key, the keys it manages) to this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the stored keys (never their secrets).
    List,
    /// Stop accepting a key.
    Revoke {
        id: String,
        /// Keep accepting it this long first: 30s, 15m, 1h, 7d.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        after: Duration,
    },
    /// Make a key with the same name, tenant and scopes, and revoke the old one after --grace.
    Rotate {
        id: String,
        /// How long the old key keeps working: 30s, 15m, 1h, 7d.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        grace: Duration,
    },
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{v:?} has no unit; accepted: 30s, 15m, 1h, 7d"))?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{v:?} is not a duration; accepted: 30s, 15m, 1h, 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{v:?}: unknown unit; accepted: s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database).await?;
    let result = act(&args, &database.url).await;
    database.close().await;
    result
}

async fn act(args: &KeysArgs, url: &str) -> anyhow::Result<()> {
    let pool = db::pool(url, 1)?;
    migrate::run(&pool).await?;
    let mut client = pool.get().await.context("connecting to the database")?;
    match &args.action {
        KeysAction::Create {
            name,
            scopes,
            tenant,
        } => {
            let new = NewKey {
                name: name.clone(),
                scopes: scopes.clone(),
                tenant: tenant.clone(),
            };
            let created = store::create(&mut client, &new, None).await?;
            print_created(&created, args.json)?;
        }
        KeysAction::List => {
            let keys = store::list(&client, None).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print!("{}", table(&keys));
            }
        }
        KeysAction::Revoke { id, after } => {
            let key = store::revoke(&client, id, None, *after).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!(
                    "Key {} ({}) is revoked from {}; every collector stops accepting it within \
                     COLLECTOR_KEY_REFRESH_MS of that.",
                    key.id,
                    key.name,
                    key.revoked_at.map_or_else(String::new, |t| t.to_rfc3339())
                );
            }
        }
        KeysAction::Rotate { id, grace } => {
            let created = store::rotate(&mut client, id, None, *grace).await?;
            print_created(&created, args.json)?;
            if !args.json {
                println!("The old key {id} is revoked after {}s.", grace.as_secs());
            }
        }
    }
    Ok(())
}

fn print_created(created: &CreatedKey, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(created)?);
        return Ok(());
    }
    let k = &created.key;
    println!(
        "Key {} for producer {:?}{} with scopes {}.",
        k.id,
        k.name,
        k.tenant
            .as_deref()
            .map_or_else(String::new, |t| format!(" of tenant {t:?}")),
        k.scopes.join(",")
    );
    println!("Secret (shown this once; store it now):");
    println!("{}", created.secret);
    Ok(())
}

/// One aligned row per key.
fn table(keys: &[KeyInfo]) -> String {
    let header = [
        "ID",
        "NAME",
        "TENANT",
        "SCOPES",
        "CREATED",
        "LAST USED",
        "REVOKED",
    ];
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
    };
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.name.clone(),
                k.tenant.clone().unwrap_or_else(|| "-".into()),
                k.scopes.join(","),
                time(Some(k.created_at)),
                time(k.last_used_at),
                time(k.revoked_at),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    if keys.is_empty() {
        out.push_str("(no stored keys; bootstrap keys from COLLECTOR_API_KEYS are not listed)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
