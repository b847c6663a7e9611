#!/usr/bin/env bash
# Quick start: runs the collector on 127.0.0.1:8080. Without DATABASE_URL it starts a private PostgreSQL in
# ./data/pg (stopped again when the collector exits) and prints a development API key.
# Extra arguments go to `collector serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
# Settings from .env (as Compose reads it): KEY=value lines; a variable already set in the environment wins.
if [ -f .env ]; then
  while IFS='=' read -r key value || [ -n "$key" ]; do
    case "$key" in '' | \#*) continue ;; esac
    value="${value%\"}"; value="${value#\"}"
    if [ -z "${!key+x}" ]; then export "$key=$value"; fi
  done < .env
fi
bash scripts/setup.sh
exec cargo run --release --quiet -p collector -- serve "$@"
