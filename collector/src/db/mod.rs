//! The database itself: the private server, the pool and its error type, migrations, partitions, advisory-lock
//! keys and the SQL builder. Called by the write side (`pipeline`) and the read side (`query`), which own their
//! SQL; imports neither.

pub mod embedded_pg;
pub mod locks;
pub mod migrate;
pub mod partitions;
pub mod sql;
pub mod tls;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Errors at the database boundary.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Config(tokio_postgres::Error),
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error("building the connection pool: {0}")]
    Build(String),
    #[error("no database connection: {0}")]
    Pool(deadpool_postgres::PoolError),
    #[error("database error: {}", detail(.0))]
    Postgres(tokio_postgres::Error),
    #[error("{0}")]
    MalformedRows(String),
    /// A stored value the collector wrote itself cannot be read back.
    #[error("unreadable stored value: {0}")]
    Corrupt(String),
    #[error("migration {version} ({name}) failed: {}", detail(.error))]
    Migration {
        version: i32,
        name: &'static str,
        error: tokio_postgres::Error,
    },
    #[error("laying the tables out on Citus (db/citus.sql) failed: {}", detail(.0))]
    CitusLayout(tokio_postgres::Error),
}

// The causes are written into each message above and not chained as sources: `{:#}` would print them twice.
impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e)
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

/// The server's own message when there is one ("db error" alone says nothing).
fn detail(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{} ({})", d.message(), d.code().code()),
    )
}

impl DbError {
    /// Errors where the data itself is refused, so retrying the same rows cannot help: SQLSTATE classes 22
    /// "data exception", 23 "integrity constraint violation" and 54 "program limit exceeded" (a value too deep
    /// or too large for the server, such as `stack depth limit exceeded`). The writer isolates such rows.
    pub fn is_data_error(&self) -> bool {
        let code = match self {
            DbError::MalformedRows(_) => return true,
            DbError::Postgres(e) => e.code(),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        code.is_some_and(|c| matches!(&c.code()[..2], "22" | "23" | "54"))
    }

    /// Errors that may come from the rows without being a data error: an error raised in a server function
    /// (SQLSTATE class P0) or an internal error (XX). Persisting, they are treated as the rows' own; anything
    /// else (connection, server state, resources, a broken schema) is retried for as long as it takes, because
    /// the rows would fare no better alone.
    pub fn may_be_the_rows(&self) -> bool {
        let code = match self {
            DbError::Postgres(e) => e.code(),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        code.is_some_and(|c| matches!(&c.code()[..2], "P0" | "XX"))
    }

    /// Every connection of the pool stayed busy for its whole wait.
    pub fn is_pool_busy(&self) -> bool {
        matches!(
            self,
            DbError::Pool(deadpool_postgres::PoolError::Timeout(
                deadpool_postgres::TimeoutType::Wait
            ))
        )
    }

    /// A statement stopped by `statement_timeout` (SQLSTATE 57014).
    pub fn is_query_canceled(&self) -> bool {
        matches!(self, DbError::Postgres(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
    }
}

/// A pool of `size` connections to `url` (a URL or a libpq key=value string, `sslmode` as libpq reads it:
/// [`tls`]); a caller waits for a free connection as long as it takes.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    pool_with_wait(url, size, None)
}

/// A pool of `size` connections to `url` where a caller waits at most `wait` for a free connection
/// ([`DbError::is_pool_busy`] after that).
pub fn pool_with_wait(
    url: &str,
    size: usize,
    wait: Option<std::time::Duration>,
) -> Result<Pool, DbError> {
    let (pg_config, tls) = tls::configure(url)?;
    build_pool(pg_config, tls, size, wait)
}

/// A pool for reads in the background (the alert rules'): each statement runs in its own backend alone, with no
/// parallel workers, so that one such read takes at most one of the database's cores from ingest whatever it
/// scans; it takes longer instead, which nobody waits for.
pub fn background_pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let (mut pg_config, tls) = tls::configure(url)?;
    let options = match pg_config.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c max_parallel_workers_per_gather=0"),
        _ => "-c max_parallel_workers_per_gather=0".to_string(),
    };
    pg_config.options(&options);
    build_pool(pg_config, tls, size, None)
}

fn build_pool(
    pg_config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    size: usize,
    wait: Option<std::time::Duration>,
) -> Result<Pool, DbError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(pg_config, tls, manager_config),
        None => Manager::from_config(pg_config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(wait)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// A round trip, for readiness.
pub async fn ping(client: &Object) -> Result<(), DbError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

/// Unix microseconds as a timestamp (the epoch when out of range).
pub fn us_to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Creates `name` on the server behind `admin_url` unless it exists.
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), DbError> {
    let pool = pool(admin_url, 1)?;
    let client = pool.get().await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is ours, not user input.
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
    }
    Ok(())
}
