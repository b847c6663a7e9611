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
