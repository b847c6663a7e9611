#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: raw COPY limit and end-to-end ingest, measured in one run on this machine.
# Extra arguments go to `collector bench` (see `collector bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --quiet -p collector -- bench "$@"
