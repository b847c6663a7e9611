//! The command line: `collector serve | migrate | keys | seed | import | query`. Parsing only; `main` dispatches.

pub mod alerts;
pub mod import;
pub mod keys;
pub mod query;
pub mod seed;

use clap::{Parser, Subcommand};

use crate::config::{DatabaseArgs, ServeConfig};

#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "Server Logger: network-communications log collector"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: migrate, then accept batches on POST /ingest.
    Serve(Box<ServeConfig>),
    /// Apply database migrations to DATABASE_URL (or the private server in --data-dir) and exit.
    Migrate(DatabaseArgs),
    /// Make, list, revoke and rotate stored API keys (scopes, tenants).
    Keys(Box<keys::KeysArgs>),
    /// Alert rules and incidents: make, list, change, delete rules; list, show, acknowledge, resolve incidents.
    Alerts(Box<alerts::AlertsArgs>),
    /// Send realistic, deterministic traffic to a collector (smoke tests, demos, load).
    Seed(Box<seed::SeedArgs>),
    /// Backfill log files (NDJSON, Zeek, Suricata EVE) through a running collector, resumably.
    Import(Box<import::ImportArgs>),
    /// Ask for volume, error rate, latency, top talkers or raw logs (HTTP API or DATABASE_URL).
    Query(Box<query::QueryArgs>),
}
