//! `db/schema.sql` is today's schema in one readable file: it must be what the migrations produce.
//! `scripts/schema.sh` rewrites it (this test with `UPDATE_SCHEMA=1`).

use std::path::Path;
use std::process::Command;

use crate::support::pg;

/// `pg_dump --schema-only` of the migrated template, without the lines that name versions or change per run.
fn dump() -> String {
    let bin = collector::db::embedded_pg::find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("pg_dump"))
        .args(["--schema-only", "--no-owner", "--no-privileges", "--dbname"])
        .arg(pg::template_url())
        .output()
        .expect("running pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("pg_dump writes UTF-8");
    let mut kept = String::from(
        "-- Today's schema, dumped from a database migrated with db/migrations/ (their history and reasons are\n\
         -- there). Regenerate with scripts/schema.sh; a test fails when this file no longer matches.\n",
    );
    for line in text.lines() {
        if line.starts_with("-- Dumped ")
            || line.starts_with("\\restrict")
            || line.starts_with("\\unrestrict")
        {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

#[tokio::test]
async fn schema_sql_is_what_the_migrations_make() {
    pg::fresh_database().await; // the template is migrated once the server is up
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../db/schema.sql");
    let now = tokio::task::spawn_blocking(dump).await.unwrap();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &now).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == now,
        "db/schema.sql does not match the migrations: run scripts/schema.sh (first differing line: {:?})",
        kept.lines()
            .zip(now.lines())
            .find(|(a, b)| a != b)
            .map_or_else(|| "(one file is longer)".to_string(), |(a, b)| format!("{a} → {b}"))
    );
}

/// The rollup catalog and the migrated tables agree: every shape's table and delta table have its key columns
/// with their types, latency columns exactly when it keeps latency, percentiles and top-list tables when it says
/// so, and a unique key `(res, bucket, <keys>)` that the compactor's upserts name.
#[tokio::test]
async fn the_rollup_catalog_matches_the_tables() {
    use collector::rollup::catalog::SHAPES;
    let db = pg::connect(&pg::fresh_database().await).await;
    let columns = |table: String| {
        let db = &db;
        async move {
            db.query(
                "SELECT column_name::text, udt_name::text FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = $1",
                &[&table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect::<std::collections::HashMap<String, String>>()
        }
    };
    for shape in SHAPES {
        for table in [shape.table.to_string(), format!("{}_delta", shape.table)] {
            let have = columns(table.clone()).await;
            assert!(!have.is_empty(), "{table} does not exist");
            for k in shape.keys {
                assert_eq!(
                    have.get(k.name).map(String::as_str),
                    Some(k.source.column_type().sql()),
                    "{table}.{}",
                    k.name
                );
            }
            for c in [
                "res",
                "bucket",
                "events",
                "bytes_in",
                "bytes_out",
                "errors",
                "client_errors",
            ] {
                assert!(have.contains_key(c), "{table}.{c}");
            }
            assert_eq!(have.contains_key("latency_hist"), shape.latency, "{table}");
            // Every column is the key, a count, latency, or (deltas of a sealed shape) the seal generation.
            let known = 2 + shape.keys.len() + 5 + if shape.latency { 4 } else { 0 };
            let extra = usize::from(table == shape.table && shape.percentiles)
                + usize::from(table != shape.table && shape.sealed);
            assert_eq!(have.len(), known + extra, "{table}: {have:?}");
        }
        let unique: Vec<Vec<String>> = db
            .query(
                "SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
                 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = $1::text::regclass AND i.indisunique
                 GROUP BY i.indexrelid",
                &[&shape.table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut want = vec!["res".to_string(), "bucket".to_string()];
        want.extend(shape.keys.iter().map(|k| k.name.to_string()));
        assert!(
            unique.contains(&want),
            "{} has no unique key {want:?}: {unique:?}",
            shape.table
        );
        for t in ["top", "top_floor", "top_pending"] {
            let exists: bool = db
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{}_{t}", shape.table)],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(exists, shape.top_lists.is_some(), "{}_{t}", shape.table);
        }
    }
}

/// The Citus layout places every rollup the catalog declares: distributed on `bucket` with its deltas, or (the
/// shapes with top lists, and the sealed ones) kept on the coordinator as db/citus.sql explains.
#[test]
fn the_citus_layout_places_every_rollup() {
    let layout = include_str!("../../../db/citus.sql");
    for shape in collector::rollup::catalog::SHAPES {
        let listed = |t: &str| layout.contains(&format!("'{t}'"));
        let distributed = listed(shape.table) && listed(&format!("{}_delta", shape.table));
        assert_eq!(
            distributed,
            shape.top_lists.is_none() && !shape.sealed,
            "{}: distributed {distributed}, top lists {}, sealed {}",
            shape.table,
            shape.top_lists.is_some(),
            shape.sealed
        );
    }
}

/// `latency_hist_merge` (the compactor's merge of a delta's histogram into its row's) adds bucket by bucket,
/// as the collector's own merge does, on histograms of every length and overlap, empty and NULL ones included.
#[tokio::test]
async fn the_histogram_merge_in_sql_adds_as_the_collector_does() {
    use collector::rollup::histogram::{self, Counts};
    use rand::{Rng, SeedableRng};

    let db = pg::connect(&pg::fresh_database().await).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let random = |rng: &mut rand::rngs::StdRng| {
        let mut c = Counts::default();
        let len = [0, 1, 2, 5, 40, 300][rng.random_range(0..6)];
        for _ in 0..len {
            // Negative buckets (under 1 ms) and the zero bucket included.
            c.add(rng.random_range(-60..200), rng.random_range(1..1_000_000));
        }
        if rng.random_bool(0.05) {
            c.add(i16::MIN, 1);
        }
        c
    };
    let stored = |c: &Counts| {
        histogram::to_stored(c)
            .expect("counts under 2^48")
            .collect::<Vec<i64>>()
    };
    for case in 0..400 {
        let (a, b) = (random(&mut rng), random(&mut rng));
        let mut want = a.clone();
        want.merge(&b);
        let got: Vec<i64> = db
            .query_one(
                "SELECT latency_hist_merge($1, $2)",
                &[&stored(&a), &stored(&b)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, stored(&want), "case {case}: {a:?} + {b:?}");
    }
    let null: Option<Vec<i64>> = None;
    let one = stored(&random(&mut rng));
    for (a, b, want) in [
        (null.clone(), null.clone(), Vec::new()),
        (null.clone(), Some(one.clone()), one.clone()),
        (Some(one.clone()), null.clone(), one.clone()),
    ] {
        let got: Vec<i64> = db
            .query_one("SELECT latency_hist_merge($1, $2)", &[&a, &b])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want);
    }
}
