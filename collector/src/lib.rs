//! # Server Logger collector
//!
//! Log agents and applications POST batches of network-communication events; the collector authenticates,
//! validates, acknowledges at once, and bulk-loads them into PostgreSQL with binary COPY.
//!
//! # Layout
//! The modules follow the data flow:
//! - [`http`]: the API; `POST /ingest` authenticates (per-key rate limit), then hands the body down the line.
//! - [`decode`]: bytes → records: decompression (gzip, zstd, deflate) with size caps; JSON array, wrapper
//!   object, NDJSON, Fluent Bit msgpack.
//! - [`event`]: the canonical event: field aliases, validation and normalisation into typed values.
//! - [`pipeline`]: [`pipeline::batch`] encodes valid events as COPY rows and keeps rejects raw;
//!   [`pipeline::queue`] is the bounded hand-off (503 when full); [`pipeline::writer`] COPYs in transactions
//!   with retries that neither lose nor duplicate rows.
//! - [`db`]: the private PostgreSQL, pool, migrations (`db/migrations/`), partitions, and every query.
//! - [`app`]: wiring, run, graceful shutdown; [`config`]: every setting; [`auth`]: API keys;
//!   [`telemetry`]: logs and counters; [`bench`]: the ingest benchmark behind `collector bench`.
//! - [`query`]: the read side: filters, rollup/raw aggregates, percentiles from the rollup's histogram, and
//!   [`query::api::execute`], which both the HTTP read endpoints and [`query_cli`] (`collector query`) call.
//! - [`seed`]: `collector seed`, deterministic realistic traffic for demos, smoke tests and load.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod decode;
pub mod event;
pub mod http;
pub mod pipeline;
pub mod query;
pub mod rollup;
pub mod telemetry;
pub mod traffic;
