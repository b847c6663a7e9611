#!/usr/bin/env bash
# Installs what the collector and its tests need on a fresh Debian/Ubuntu machine: PostgreSQL's server
# binaries (and the unprivileged `postgres` user they run as when we are root). Idempotent and quiet when
# everything is already there.
set -euo pipefail

have_pg_binaries() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null || true)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
  fi
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
  done
  return 1
}

need_install=0
have_pg_binaries || need_install=1
# PostgreSQL refuses to run as root: as root we need the `postgres` user, which the package creates.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then need_install=1; fi

if [ "$need_install" = 1 ]; then
  echo "setup: installing PostgreSQL server binaries (Debian package 'postgresql')" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to apt-get install postgresql" >&2; exit 1; }
    SUDO=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The package's own cluster is not used: the collector runs a private server in its data directory.
  $SUDO apt-get install -y -qq postgresql >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (the Rust toolchain) is required: see https://rustup.rs" >&2
  exit 1
fi
