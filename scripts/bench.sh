#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: raw COPY limit, end-to-end ingest and reads, measured in one run on this machine.
# The benchmark is its own crate (bench/), not part of the collector's binary. Extra arguments go to it
# (`scripts/bench.sh --help`; e.g. --suite ingest, --suite queries, --full).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet -p collector -p bench
exec target/release/bench "$@"
