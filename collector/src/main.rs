//! `collector`: command-line parsing only; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use collector::cli::{Cli, Command};
use collector::config::LogFormat;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(c) if c.log_format == LogFormat::Json);
    // The query CLI's output is its answer: keep its stderr quiet unless asked (RUST_LOG).
    if !matches!(
        cli.command,
        Command::Query(_)
            | Command::Seed(_)
            | Command::Import(_)
            | Command::Keys(_)
            | Command::Alerts(_)
    ) || std::env::var_os("RUST_LOG").is_some()
    {
        collector::telemetry::init(json_logs);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Serve(cfg) => {
                let shutdown = CancellationToken::new();
                tokio::spawn(on_signal(shutdown.clone()));
                collector::app::serve(*cfg, shutdown).await?;
            }
            Command::Migrate(db) => {
                let ran = collector::app::migrate_only(&db).await?;
                println!("Applied {ran} migration(s); the schema is up to date.");
            }
            Command::Keys(args) => collector::cli::keys::run(*args).await?,
            Command::Alerts(args) => collector::cli::alerts::run(*args).await?,
            Command::Query(args) => collector::cli::query::run(*args).await?,
            Command::Seed(args) => collector::cli::seed::run(*args).await?,
            Command::Import(args) => collector::cli::import::run(*args).await?,
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops the collector");
            let _ = ctrl_c.await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("Shutdown signal received");
    token.cancel();
}
