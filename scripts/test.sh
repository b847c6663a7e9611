#!/usr/bin/env bash
# Runs every check: formatting, clippy, and all tests (unit + integration). The integration tests start their
# own throwaway PostgreSQL (or use DATABASE_URL when it is set), so no server needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --workspace
