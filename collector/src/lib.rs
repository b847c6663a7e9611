//! # Server Logger collector
//!
//! Log agents and applications POST batches of network-communication events; the collector authenticates,
//! validates, acknowledges at once, and bulk-loads them into PostgreSQL with binary COPY.
//!
//! # Layout
//! The modules follow the data flow:
//! - [`http`]: the listener (TLS optional) and thin handlers; every route checks its scope with [`auth`] (bootstrap
//!   and stored keys, tenants, client certificates); `POST /ingest` (per-key rate limit) hands the body down the
//!   line; the read endpoints call [`query::api::execute`]; `/api/keys` manages stored keys.
//! - [`decode`]: bytes → records: decompression (gzip, zstd, deflate) with size caps; JSON array, wrapper
//!   object, NDJSON, Fluent Bit msgpack.
//! - [`event`]: the canonical event: field aliases, the decoding visitor, validation and normalisation.
//! - [`enrich`]: what is added to a valid event before it is encoded: GeoIP country/city and ASN.
//! - [`pipeline`]: the write side and its SQL: batch → queue → writer (COPY, rollup deltas, dead letters, flush
//!   ledger in one transaction) → compaction, top lists and the pair seal.
//! - [`rollup`]: what writing and reading share: the catalog of rollup shapes and the latency histogram.
//! - [`query`]: the read side and its SQL: filters → planner → series, top talkers, logs → answers.
//! - [`db`]: the pool, the private PostgreSQL, migrations (`db/migrations/`), partitions, lock keys and the SQL
//!   builder; it imports neither `pipeline` nor `query`.
//! - [`app`]: wiring, run, graceful shutdown; [`config`]: the serve configuration; [`cli`]: the command line
//!   (`collector query`, `collector seed`); [`traffic`]: the deterministic traffic generator (seed and the
//!   benchmark crate); [`telemetry`]: logs and counters.

pub mod alerts;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod decode;
pub mod enrich;
pub mod event;
pub mod http;
pub mod pipeline;
pub mod query;
pub mod rollup;
pub mod telemetry;
pub mod traffic;
