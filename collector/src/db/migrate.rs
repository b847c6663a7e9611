//! Versioned, idempotent migrations from `db/migrations/`, embedded in the binary.

use deadpool_postgres::Pool;

use super::DbError;

/// (version, name, SQL). Append only: an applied migration is never edited.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../../../db/migrations/0001_core.sql"),
    ),
    (
        2,
        "rollups",
        include_str!("../../../db/migrations/0002_rollups.sql"),
    ),
    (
        3,
        "rollup tiers",
        include_str!("../../../db/migrations/0003_rollup_tiers.sql"),
    ),
    (
        4,
        "uncompressed histograms",
        include_str!("../../../db/migrations/0004_uncompressed_histograms.sql"),
    ),
    (
        5,
        "source networks",
        include_str!("../../../db/migrations/0005_src_networks.sql"),
    ),
    (
        6,
        "packed histograms",
        include_str!("../../../db/migrations/0006_packed_histograms.sql"),
    ),
    (
        7,
        "source top lists",
        include_str!("../../../db/migrations/0007_src_top.sql"),
    ),
    (
        8,
        "pair rollup",
        include_str!("../../../db/migrations/0008_pairs.sql"),
    ),
    (
        9,
        "pair events inlined",
        include_str!("../../../db/migrations/0009_pair_events_inline.sql"),
    ),
    (
        10,
        "service percentiles",
        include_str!("../../../db/migrations/0010_service_percentiles.sql"),
    ),
    (
        11,
        "batch identities",
        include_str!("../../../db/migrations/0011_batch_identities.sql"),
    ),
    (
        12,
        "api keys",
        include_str!("../../../db/migrations/0012_api_keys.sql"),
    ),
    (
        13,
        "rollup pruning",
        include_str!("../../../db/migrations/0013_rollup_pruned.sql"),
    ),
    (
        14,
        "geo columns",
        include_str!("../../../db/migrations/0014_geo.sql"),
    ),
    (
        15,
        "threat column",
        include_str!("../../../db/migrations/0015_threat.sql"),
    ),
    (
        16,
        "geo rollup",
        include_str!("../../../db/migrations/0016_geo_rollup.sql"),
    ),
    (
        17,
        "alerts",
        include_str!("../../../db/migrations/0017_alerts.sql"),
    ),
    (
        18,
        "sources by port",
        include_str!("../../../db/migrations/0018_src_ports.sql"),
    ),
    (
        19,
        "rollup by host",
        include_str!("../../../db/migrations/0019_host_rollup.sql"),
    ),
    (
        20,
        "histogram merge as one walk",
        include_str!("../../../db/migrations/0020_hist_merge_walk.sql"),
    ),
];

/// Whether the database has the Citus extension (it is a Citus coordinator).
pub async fn is_citus(client: &impl deadpool_postgres::GenericClient) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await?
        .get(0))
}

/// Distributes the tables over a Citus cluster as db/citus.sql says; idempotent, after [`run`]. Fails with the
/// reason when the database is not a Citus coordinator with workers.
pub async fn citus_layout(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::locks::MIGRATIONS],
    )
    .await?;
    tx.batch_execute(include_str!("../../../db/citus.sql"))
        .await
        .map_err(DbError::CitusLayout)?;
    tx.commit().await?;
    Ok(())
}

/// Applies every migration not yet recorded in `schema_migrations`; returns how many ran. Concurrent callers
/// serialise on an advisory lock, so two collectors starting at once are safe.
pub async fn run(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    // Checked first rather than `CREATE TABLE IF NOT EXISTS`, whose NOTICE would be logged at every start.
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::locks::MIGRATIONS],
    )
    .await?;
    if is_citus(&tx).await? {
        // Many statements on distributed tables in one transaction: one connection per worker, not one per
        // shard, or Citus refuses the later statements of the transaction.
        tx.batch_execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
            .await?;
    }
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut ran = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|error| DbError::Migration {
                version: *version,
                name,
                error,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tracing::info!(version, name, "Applied migration");
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
