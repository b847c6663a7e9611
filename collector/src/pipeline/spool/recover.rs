//! Opening the spool at start: lock the directory, read back what a previous run left, and find out which of
//! those batches PostgreSQL already has.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use deadpool_postgres::{GenericClient, Pool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::appender::Appender;
use super::feeder::Feeder;
use super::format::{self, Scan};
use super::{io_err, Position, Segment, Shared, Spool, SpoolConfig, SpoolOpenError, State};
use crate::db::DbError;
use crate::pipeline::dedup::{Digest, Seen};
use crate::pipeline::intake::Intake;
use crate::pipeline::queue::Queue;

const LOCK_FILE: &str = "LOCK";

/// Opens the spool in `cfg.dir`, starts its appender thread and its feeder (stopped by `stop`), and schedules
/// the replay of every batch a previous run acknowledged that PostgreSQL does not have. Those batches are
/// remembered in `seen`, so a client's retry of one is answered as a duplicate.
pub async fn open(
    cfg: SpoolConfig,
    pool: &Pool,
    seen: &Seen,
    queue: Queue,
    intake: Intake,
    stop: CancellationToken,
) -> Result<(Spool, JoinHandle<()>), SpoolOpenError> {
    let dir = cfg.dir.clone();
    let (lock, found) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock = lock_dir(&dir)?;
        Ok::<_, SpoolOpenError>((lock, read_segments(&dir)?))
    })
    .await
    .map_err(|e| SpoolOpenError::Io {
        what: "reading the spool".into(),
        error: std::io::Error::other(e),
    })??;

    let mut state = State::default();
    let mut next_seq = 1u64;
    let mut next_segment = 1u64;
    let mut records: Vec<Found> = Vec::new();
    for found in found {
        next_segment = next_segment.max(found.number + 1);
        for d in &found.damage {
            tracing::warn!(
                segment = %found.path.display(),
                offset = d.offset,
                bytes_dropped = d.bytes,
                reason = %d.reason,
                "Spool segment damaged: the whole records before and after the damage are kept, these bytes are not"
            );
        }
        if found.records.is_empty() {
            if let Err(e) = std::fs::remove_file(&found.path) {
                tracing::warn!(segment = %found.path.display(), error = %e, "Deleting an empty spool segment failed");
            }
            continue;
        }
        for r in &found.records {
            next_seq = next_seq.max(r.seq + 1);
        }
        state.bytes += found.len as u64;
        state.segments.insert(
            found.number,
            Segment {
                path: found.path,
                len: found.len,
                pending: 0,
                active: false,
                first_us: found.records.first().map(|r| r.received_at_us),
            },
        );
        records.extend(found.records);
    }

    let client = pool.get().await.map_err(DbError::from)?;
    let stored = already_stored(&client, &records).await?;
    drop(client);
    let (mut waiting, mut waiting_bytes) = (0usize, 0u64);
    for (r, stored) in records.into_iter().zip(stored) {
        if stored {
            state.committed_before.insert(r.at);
        } else {
            waiting += 1;
            if let Some(s) = state.segments.get_mut(&r.at.segment) {
                s.pending += 1;
            }
            seen.first_time(
                &Arc::from(r.producer.as_str()),
                r.identity,
                r.received_at_us,
            );
        }
    }
    let done: Vec<u64> = state
        .segments
        .iter()
        .filter(|(_, s)| s.pending == 0)
        .map(|(&k, _)| k)
        .collect();
    for segment in done {
        super::remove_segment(&mut state, segment);
    }
    for s in state.segments.values() {
        waiting_bytes += s.len as u64;
    }
    state.backlog = state.segments.keys().next().map(|&segment| Position {
        segment,
        offset: format::SEGMENT_HEADER_LEN,
    });
    if waiting > 0 {
        tracing::info!(
            batches = waiting,
            bytes = waiting_bytes,
            "Acknowledged batches from before the restart are not in PostgreSQL yet: replaying them"
        );
    }
    state.free_bytes = super::free_bytes(&cfg.dir).unwrap_or(u64::MAX);

    let shared = Arc::new(Shared {
        cfg,
        state: Mutex::new(state),
        backlog_started: tokio::sync::Notify::new(),
        counters: Default::default(),
        _lock: lock,
    });
    let (appends, rx) = std::sync::mpsc::channel();
    let appender = Appender::new(shared.clone(), queue.clone(), next_seq, next_segment)
        .map_err(io_err("starting the spool's spare segment thread"))?;
    std::thread::Builder::new()
        .name("spool-appender".into())
        .spawn(move || appender.run(rx))
        .map_err(io_err("starting the spool appender"))?;
    let feeder = Feeder {
        shared: shared.clone(),
        queue,
        intake,
    };
    let feeding = tokio::spawn(feeder.run(stop));
    Ok((Spool { shared, appends }, feeding))
}

/// Takes the directory's lock for the life of the process, or says who holds it.
fn lock_dir(dir: &std::path::Path) -> Result<File, SpoolOpenError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(SpoolOpenError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(SpoolOpenError::Io {
                what: format!("locking {}", path.display()),
                error,
            })
        }
    }
    file.set_len(0)
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(io_err(format!("writing {}", path.display())))?;
    Ok(file)
}

/// A segment found at start: what a replay needs of it, without its bytes (kept in memory one segment at a
/// time).
struct FoundSegment {
    /// From its file name: segments are numbered in the order they were made.
    number: u64,
    path: PathBuf,
    len: usize,
    damage: Vec<format::Damage>,
    records: Vec<Found>,
}

/// A whole record found at start.
struct Found {
    at: Position,
    seq: u64,
    producer: String,
    identity: Digest,
    received_at_us: i64,
}

/// Every segment in `dir`, oldest first, read and checked. Anything else in the directory is left alone, with a
/// warning.
fn read_segments(dir: &std::path::Path) -> Result<Vec<FoundSegment>, SpoolOpenError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == LOCK_FILE {
            continue;
        }
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        match format::parse_segment_name(&name) {
            Some(seq) if is_file => found.push((seq, entry.path())),
            _ => tracing::warn!(
                path = %entry.path().display(),
                "Not a spool segment: left alone (the spool directory should hold only the collector's files)"
            ),
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|(number, path)| {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io_err(format!("reading {}", path.display())))?;
            let Scan {
                records,
                damage,
                end,
            } = format::scan_segment(&Bytes::from(bytes));
            // What was written; the preallocated zeros after it are not counted.
            let len = end;
            let records = records
                .into_iter()
                .map(|(offset, r)| Found {
                    at: Position {
                        segment: number,
                        offset,
                    },
                    seq: r.seq,
                    producer: r.producer,
                    identity: r.identity,
                    received_at_us: r.received_at_us,
                })
                .collect();
            Ok(FoundSegment {
                number,
                path,
                len,
                damage,
                records,
            })
        })
        .collect()
}

/// Whether PostgreSQL has recorded each of `records` as committed: its identity, committed after it was
/// received (the same bytes accepted again after the deduplication window are another batch).
async fn already_stored(
    client: &impl GenericClient,
    records: &[Found],
) -> Result<Vec<bool>, DbError> {
    let mut stored = Vec::with_capacity(records.len());
    for chunk in records.chunks(10_000) {
        let producers: Vec<&str> = chunk.iter().map(|r| r.producer.as_str()).collect();
        let digests: Vec<&[u8]> = chunk.iter().map(|r| &r.identity[..]).collect();
        let received: Vec<i64> = chunk.iter().map(|r| r.received_at_us).collect();
        let rows = client
            .query(
                // A minute of slack for a database clock behind ours.
                "SELECT EXISTS (SELECT 1 FROM ingest_batches b
                                 WHERE b.producer = s.producer AND b.digest = s.digest
                                   AND b.accepted_at > to_timestamp(s.received / 1e6) - interval '1 minute')
                 FROM unnest($1::text[], $2::bytea[], $3::int8[]) WITH ORDINALITY AS s(producer, digest, received, n)
                 ORDER BY n",
                &[&producers, &digests, &received],
            )
            .await?;
        stored.extend(rows.iter().map(|row| row.get::<_, bool>(0)));
    }
    Ok(stored)
}
