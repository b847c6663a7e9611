//! The baseline a user would otherwise build: parse each JSON batch and insert it with one multi-row INSERT per
//! batch through deadpool-postgres, several connections at once. Measured on the same events and schema as
//! the collector, so the report can show the collector's ratio to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use collector::decode::{self, Format};
use collector::event::{parse_event, Limits, Scratch};

type Param = Box<dyn ToSql + Sync + Send>;

/// The columns a hand-written collector would fill (no enrichment), in the order of its parameters.
const COLUMNS: &str =
    "ts, received_at, producer, src_ip, src_port, dst_ip, dst_port, protocol, service, status, \
                       bytes_in, bytes_out, latency_ms, host, message, tags";

/// One JSON batch as INSERT parameters (16 per event, in `COLUMNS` order).
fn params_of(batch: &Bytes) -> anyhow::Result<(usize, Vec<Param>)> {
    let text = decode::as_text(batch)?;
    let records = decode::split(text, Format::Json)?;
    let now = chrono::Utc::now();
    let mut params: Vec<Param> = Vec::with_capacity(records.len() * 16);
    let mut scratch = Scratch::default();
    for r in &records {
        let e = parse_event(
            r.text,
            now.timestamp_micros(),
            &Limits::default(),
            &mut scratch,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        params.push(Box::new(
            chrono::DateTime::from_timestamp_micros(e.ts_us).unwrap_or(now),
        ));
        params.push(Box::new(now));
        params.push(Box::new("bench"));
        params.push(Box::new(e.src_ip));
        params.push(Box::new(e.src_port.map(i32::from)));
        params.push(Box::new(e.dst_ip));
        params.push(Box::new(e.dst_port.map(i32::from)));
        params.push(Box::new(e.protocol.map(|s| s.into_owned())));
        params.push(Box::new(e.service.map(|s| s.into_owned())));
        params.push(Box::new(e.status));
        params.push(Box::new(e.bytes_in));
        params.push(Box::new(e.bytes_out));
        params.push(Box::new(e.latency_ms));
        params.push(Box::new(e.host.map(|s| s.into_owned())));
        params.push(Box::new(e.message.map(|s| s.into_owned())));
        params.push(Box::new(
            e.tags
                .map(serde_json::from_str::<serde_json::Value>)
                .transpose()?,
        ));
    }
    Ok((records.len(), params))
}

fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO comm_logs ({COLUMNS}) VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..16 {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", r * 16 + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// Seconds to parse and INSERT every batch over `conns` connections (a transaction per batch, as committed
/// batches are what an acknowledging collector would need).
pub async fn run(pool: &Pool, batches: &[Bytes], conns: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(batches.to_vec());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (pool, next, batches) = (pool.clone(), next.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            let client = pool.get().await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(b) = batches.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let (rows, params) = params_of(b)?;
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
                client.execute(&insert_sql(rows), &refs).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}
