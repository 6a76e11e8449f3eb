//! Read side: a small pool of read connections used from tokio's blocking threads.
//!
//! WAL mode lets these read while the writer thread writes, so a slow replay never delays an
//! acknowledgement. Queries are synchronous SQLite calls, so they run on `spawn_blocking`
//! and never on the async worker threads.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{self, storage};
use crate::local::{Source, Storage, headers};
use crate::{Record, Result};

/// Idle connections kept for reuse; more may exist briefly under a burst of reads.
const MAX_IDLE: usize = 64;

/// Read connections to the log file (see [`distorch_embedded::ReadPool`]).
#[derive(Debug)]
pub(crate) struct ReadPool(distorch_embedded::ReadPool);

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self(distorch_embedded::ReadPool::new(path, MAX_IDLE, open))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.0.with(storage("opening a read connection"), f)
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Belt and braces: the single-writer design relies on nobody else writing.
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(16);
    // mmap: tail reads of hot pages skip a read() syscall and a copy each.
    conn.pragma_update(None, "mmap_size", 268_435_456_i64)?;
    Ok(conn)
}

/// Up to `max` records of one partition from offset `from`, in offset order.
fn read_records(conn: &Connection, source: &Source, from: u64, max: usize) -> Result<Vec<Record>> {
    let mut stmt = conn
        .prepare_cached(schema::SELECT_RECORDS)
        .map_err(storage("preparing a read"))?;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let mut rows = stmt
        .query(params![source.topic_id, source.partition, from, limit])
        .map_err(storage("reading records"))?;
    let mut records = Vec::with_capacity(max.min(1024));
    while let Some(row) = rows.next().map_err(storage("reading records"))? {
        let headers: Option<Vec<u8>> = row.get(2).map_err(storage("reading headers"))?;
        records.push(Record {
            topic: source.topic.clone(),
            partition: source.partition,
            offset: row.get(0).map_err(storage("reading an offset"))?,
            key: row.get(1).map_err(storage("reading a key"))?,
            headers: headers::decode(headers.as_deref())?,
            payload: row.get(3).map_err(storage("reading a payload"))?,
            timestamp_ms: row.get(4).map_err(storage("reading a timestamp"))?,
        });
    }
    Ok(records)
}

fn group_offset(conn: &Connection, group: &str, source: &Source) -> Result<Option<u64>> {
    conn.prepare_cached(schema::SELECT_GROUP_OFFSET)
        .and_then(|mut stmt| {
            stmt.query_row(params![group, source.topic_id, source.partition], |row| {
                row.get(0)
            })
            .optional()
        })
        .map_err(storage("reading a group offset"))
}

impl Storage for ReadPool {
    fn read(&self, source: &Source, from: u64, max: usize) -> Result<Vec<Record>> {
        self.with(|conn| read_records(conn, source, from, max))
    }

    fn group_offset(&self, group: &str, source: &Source) -> Result<Option<u64>> {
        self.with(|conn| group_offset(conn, group, source))
    }
}
