//! `collector alerts rules|incidents …`: alert rules and incidents, straight in the database (DATABASE_URL, or
//! the private server in --data-dir). The same operations as `/api/alerts/*`; every collector on that database
//! evaluates a rule from its next cycle.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::alerts::incidents::{self, Action};
use crate::alerts::rules::{self, RuleSpec};
use crate::app::Database;
use crate::config::DatabaseArgs;
use crate::db::{self, migrate};

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub action: AlertsAction,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertsAction {
    /// List the rules.
    Rules,
    /// Make a rule from a JSON file (`-` for standard input): the body `POST /api/alerts/rules` takes.
    Create { file: PathBuf },
    /// Replace a rule from a JSON file.
    Update { id: String, file: PathBuf },
    /// Delete a rule (its incidents stay).
    Delete { id: String },
    /// List incidents, newest first.
    Incidents {
        /// open, acknowledged or resolved.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One incident with its timeline and deliveries.
    Show { id: i64 },
    /// Acknowledge an incident.
    Ack {
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Resolve an incident.
    Resolve {
        id: i64,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Add a comment to an incident's timeline.
    Comment { id: i64, text: String },
}

pub async fn run(args: AlertsArgs) -> anyhow::Result<()> {
    let database = Database::open(&args.database).await?;
    let result = act(&args, &database.url).await;
    database.close().await;
    result
}

fn read_spec(file: &PathBuf) -> anyhow::Result<RuleSpec> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{}: not a rule", file.display()))
}

/// Who acts, in an incident's timeline.
fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

async fn act(args: &AlertsArgs, url: &str) -> anyhow::Result<()> {
    let pool = db::pool(url, 1)?;
    migrate::run(&pool).await?;
    let mut client = pool.get().await.context("connecting to the database")?;
    let out: Value = match &args.action {
        AlertsAction::Rules => {
            let list: Vec<_> = rules::list(&client, None)
                .await?
                .into_iter()
                .map(rules::Rule::shown)
                .collect();
            if !args.json {
                let rows: Vec<Value> = list
                    .iter()
                    .map(|r| {
                        json!({"id": r.id, "name": r.spec.name, "kind": r.spec.kind, "query": r.spec.query,
                               "field": r.spec.field(), "enabled": r.spec.enabled})
                    })
                    .collect();
                print!(
                    "{}",
                    super::query::table(
                        &rows,
                        &["id", "name", "kind", "query", "field", "enabled"]
                    )
                );
                return Ok(());
            }
            json!({ "rules": list })
        }
        AlertsAction::Create { file } => {
            let rule = rules::create(&client, &read_spec(file)?, None).await?;
            json!(rule.shown())
        }
        AlertsAction::Update { id, file } => {
            let rule = rules::update(&client, id, &read_spec(file)?, None).await?;
            json!(rule.shown())
        }
        AlertsAction::Delete { id } => {
            rules::delete(&mut client, id, None).await?;
            json!({ "deleted": id })
        }
        AlertsAction::Incidents { status, limit } => {
            let list = incidents::list(&client, status.as_deref(), None, None, *limit).await?;
            if !args.json {
                let rows: Vec<Value> = list.iter().map(|i| json!(i)).collect();
                print!(
                    "{}",
                    super::query::table(
                        &rows,
                        &[
                            "id",
                            "rule_name",
                            "group",
                            "status",
                            "opened_at",
                            "resolved_at"
                        ]
                    )
                );
                return Ok(());
            }
            json!({ "incidents": list })
        }
        AlertsAction::Show { id } => {
            let (incident, timeline, deliveries) = incidents::get(&client, *id, None).await?;
            json!({ "incident": incident, "timeline": timeline, "deliveries": deliveries })
        }
        AlertsAction::Ack { id, comment } | AlertsAction::Resolve { id, comment } => {
            let action = if matches!(args.action, AlertsAction::Ack { .. }) {
                Action::Acknowledge
            } else {
                Action::Resolve
            };
            let i = incidents::act(&mut client, *id, action, &actor(), comment.as_deref(), None)
                .await?;
            json!({ "incident": i })
        }
        AlertsAction::Comment { id, text } => {
            let i = incidents::act(
                &mut client,
                *id,
                Action::Comment,
                &actor(),
                Some(text),
                None,
            )
            .await?;
            json!({ "incident": i })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
