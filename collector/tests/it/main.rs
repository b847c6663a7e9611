//! Integration tests: real PostgreSQL, real HTTP, real files. One binary, one shared harness (`support`).

mod agents;
mod alerts;
mod citus;
mod dashboard;
mod durability;
mod enrich;
mod hardening;
mod import;
mod ingest;
mod metrics;
mod properties;
mod protocols;
mod query;
mod reliability;
mod schema;
mod security;
mod seed;
mod sources;
mod support;
mod tail;
mod tls;
