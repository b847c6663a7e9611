//! `bench`: measures, in one run on this machine, the limit (raw `COPY BINARY` of pre-encoded rows into the real
//! schema), the collector end to end (HTTP batches from concurrent clients → rows committed) and the reads, then
//! writes BENCHMARKS.md. Run by `scripts/bench.sh`; not part of the collector's binary. Nothing here is a test:
//! no figure is asserted.

mod alerts;
mod args;
mod baseline;
mod citus;
mod data;
mod enrich;
mod ingest;
mod process;
mod queries;
mod report;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = args::BenchArgs::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ingest::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
