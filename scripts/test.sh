#!/usr/bin/env bash
# Runs every check: formatting, clippy, and all tests (unit + integration). The integration tests start their
# own throwaway PostgreSQL (or use DATABASE_URL when it is set), so no server needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The systemd unit in deploy/ is checked with systemd-analyze.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null; }
fi
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --workspace
