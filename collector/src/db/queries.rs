//! Every SQL statement the collector runs outside migrations, each in a named function.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Object};
use uuid::Uuid;

use super::DbError;
use crate::pipeline::batch::Reject;

#[tracing::instrument(skip(client))]
pub async fn ensure_partition(client: &Object, day: NaiveDate) -> Result<bool, DbError> {
    Ok(client
        .query_one("SELECT comm_logs_ensure_partition($1)", &[&day])
        .await?
        .get(0))
}

/// The flush ledger only has to outlive a writer's retry loop; a day is plenty.
pub async fn prune_flush_ledger(client: &Object) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM ingest_flushes WHERE committed_at < now() - interval '1 day'",
            &[],
        )
        .await?)
}

pub async fn flush_committed(client: &impl GenericClient, flush_id: Uuid) -> Result<bool, DbError> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM ingest_flushes WHERE flush_id = $1",
            &[&flush_id],
        )
        .await?
        .is_some())
}

pub async fn record_flush(
    client: &impl GenericClient,
    flush_id: Uuid,
    rows: usize,
    rejects: usize,
) -> Result<(), DbError> {
    client
        .execute(
            "INSERT INTO ingest_flushes (flush_id, rows, rejects) VALUES ($1, $2, $3)",
            &[&flush_id, &(rows as i32), &(rejects as i32)],
        )
        .await?;
    Ok(())
}

pub async fn insert_rejects<'a>(
    client: &impl GenericClient,
    rejects: impl Iterator<Item = &'a Reject>,
) -> Result<u64, DbError> {
    let mut received = Vec::new();
    let mut producers = Vec::new();
    let mut indexes = Vec::new();
    let mut reasons = Vec::new();
    let mut raws = Vec::new();
    let mut truncated = Vec::new();
    for r in rejects {
        received.push(us_to_datetime(r.received_at_us));
        producers.push(&*r.producer);
        indexes.push(r.event_index);
        reasons.push(r.reason.as_str());
        raws.push(&r.raw[..]);
        truncated.push(r.raw_truncated);
    }
    if received.is_empty() {
        return Ok(0);
    }
    Ok(client
        .execute(
            "INSERT INTO ingest_rejects (received_at, producer, event_index, reason, raw, raw_truncated)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int4[], $4::text[], $5::bytea[], $6::bool[])",
            &[&received, &producers, &indexes, &reasons, &raws, &truncated],
        )
        .await?)
}

pub async fn ping(client: &Object) -> Result<(), DbError> {
    client.simple_query("SELECT 1").await?;
    Ok(())
}

pub fn us_to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}
