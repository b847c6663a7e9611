#!/usr/bin/env bash
# Sends realistic sample traffic to a running collector (default http://127.0.0.1:8080 with the development
# key in ./data/dev-api-key). Arguments go to `collector seed`, e.g. --count 50000 --expect, or
# --rate 2000 --duration 60, or --start -24h --spread 86400 to backfill a day.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet -p collector -- seed "$@"
