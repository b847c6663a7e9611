#!/usr/bin/env bash
# Runs every check: formatting, clippy, and all tests (unit + integration). The integration tests start their
# own throwaway PostgreSQL (or use DATABASE_URL when it is set), so no server needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The systemd unit in deploy/ is checked with systemd-analyze; the dashboard is driven in a headless Chromium.
SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
install_pkg() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$1" >/dev/null; }
}
command -v systemd-analyze >/dev/null 2>&1 || install_pkg systemd
command -v chromium >/dev/null 2>&1 || install_pkg chromium
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --workspace
