#!/usr/bin/env bash
# Rewrites db/schema.sql: today's whole schema, dumped from a throwaway PostgreSQL migrated with db/migrations/
# (the same server the tests start). The test `schema_sql_is_what_the_migrations_make` fails when it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
UPDATE_SCHEMA=1 cargo test --quiet -p collector --test it -- --exact schema::schema_sql_is_what_the_migrations_make
echo "Wrote db/schema.sql"
