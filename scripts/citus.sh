#!/usr/bin/env bash
# A local Citus cluster for development and tests: a coordinator and two workers, PostgreSQL servers on
# 127.0.0.1 with the Citus extension, started from the system's binaries as the private server is.
#
#   scripts/citus.sh start [DIR] [PORT]   # data in DIR (default /tmp/collector-citus), ports PORT..PORT+2 (9700)
#   scripts/citus.sh stop [DIR] [NODE]   # every node, or only node NODE (0 the coordinator, 1 and 2 the workers)
#   scripts/citus.sh database NAME [DIR] [PORT]   # NAME on every node, with Citus and the workers added
#
# `start` prints the coordinator's DATABASE_URL (database `collector`, ready to use):
#   DATABASE_URL=$(scripts/citus.sh start) COLLECTOR_CITUS=true scripts/run.sh
# Citus itself must be installed in the system's PostgreSQL (`citus.so`), from the Citus packages or its source
# (.ci/run builds it where a Citus source tree sits beside the repository).
set -euo pipefail

cmd=${1:-start}
dir=${2:-/tmp/collector-citus}
port=${3:-9700}
if [ "$cmd" = database ]; then
  name=${2:?database name}
  dir=${3:-/tmp/collector-citus}
  port=${4:-9700}
fi

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
  if [ -x "$d/initdb" ]; then bindir=$d; break; fi
done
[ -n "$bindir" ] || { echo "citus.sh: no PostgreSQL binaries (scripts/setup.sh installs them)" >&2; exit 1; }
libdir=$("$bindir/pg_config" --pkglibdir 2>/dev/null || echo "$(dirname "$bindir")/lib")
if [ "$cmd" != stop ] && [ ! -f "$libdir/citus.so" ]; then
  echo "citus.sh: Citus is not installed in $libdir (install it from the Citus packages or its source)" >&2
  exit 3
fi

# PostgreSQL refuses to run as root: as root, the servers run as `postgres`.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
psql_at() {
  local p=$1 db=$2; shift 2
  "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$p" -U postgres -d "$db" "$@"
}

start_node() {
  local data=$1 p=$2
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C --no-instructions >/dev/null
    cat >>"$data/postgresql.conf" <<EOF
# Written by scripts/citus.sh
port = $p
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_preload_libraries = 'citus'
max_connections = 200
shared_buffers = 128MB
max_wal_size = 1GB
fsync = ${CITUS_FSYNC:-on}
max_prepared_transactions = 100
# Four shards a worker for each distributed table (Citus makes 32 by default): a local cluster of two workers
# on a few cores spends more on tasks than it gains from them.
citus.shard_count = 8
citus.log_remote_commands = off
EOF
  fi
  if ! as_pg "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1; then
    as_pg "$bindir/pg_ctl" start -w -t 60 -s -D "$data" -l "$data/server.log" >/dev/null
  fi
}

# NAME on each node with the extension; the coordinator knows itself and the workers.
make_database() {
  local db=$1
  for p in "$port" $((port + 1)) $((port + 2)); do
    if [ -z "$(psql_at "$p" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      psql_at "$p" postgres -c "CREATE DATABASE \"$db\""
    fi
    psql_at "$p" "$db" -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
  done
  psql_at "$port" "$db" -tA >/dev/null <<EOF
SELECT citus_set_coordinator_host('127.0.0.1', $port);
SELECT citus_add_node('127.0.0.1', $((port + 1))) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $((port + 1)));
SELECT citus_add_node('127.0.0.1', $((port + 2))) WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE nodeport = $((port + 2)));
EOF
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    for n in 0 1 2; do
      start_node "$dir/node$n" $((port + n))
    done
    make_database collector
    echo "host=127.0.0.1 port=$port user=postgres dbname=collector"
    ;;
  database)
    make_database "$name"
    echo "host=127.0.0.1 port=$port user=postgres dbname=$name"
    ;;
  stop)
    nodes="0 1 2"
    [ -n "${3:-}" ] && nodes=$3
    for n in $nodes; do
      if [ -f "$dir/node$n/PG_VERSION" ]; then
        as_pg "$bindir/pg_ctl" stop -w -s -m fast -D "$dir/node$n" >/dev/null 2>&1 || true
      fi
    done
    ;;
  *)
    echo "usage: citus.sh start [DIR] [PORT] | stop [DIR] [NODE] | database NAME [DIR] [PORT]" >&2
    exit 2
    ;;
esac
