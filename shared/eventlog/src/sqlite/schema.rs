//! Table layout, connection settings and the header encoding of the SQLite log.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::time::Duration;

use crate::local::Topic;
use crate::{LogError, Result};

/// `records` is a rowid table: rows are numbered in append order, so a group commit appends
/// at the right edge of the table and fills each page once. The primary key's index on
/// (topic, partition, offset) makes a partition read one range scan and "max offset of a
/// partition" a single seek. (Layout 0 clustered the rows themselves on that key with
/// `WITHOUT ROWID`: interior pages then held whole records, a large record was reassembled
/// from its overflow pages at every key comparison, and every partition's tail split pages in
/// the middle of the tree. See [`migrate`].)
/// The column is called `off` because `OFFSET` is an SQL keyword.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    topic_id     INTEGER NOT NULL,
    part         INTEGER NOT NULL,
    off          INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    headers      BLOB,
    payload      BLOB    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic_id, part, off)
);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp         TEXT    NOT NULL,
    topic_id    INTEGER NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic_id, part)
) WITHOUT ROWID;
";

pub(crate) const INSERT_RECORD: &str = "INSERT INTO records \
    (topic_id, part, off, key, headers, payload, timestamp_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
pub(crate) const INSERT_TOPIC: &str = "INSERT INTO topics (name, partitions) VALUES (?1, ?2)";
pub(crate) const UPSERT_GROUP_OFFSET: &str = "INSERT INTO group_offsets \
    (grp, topic_id, part, next_offset) VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (grp, topic_id, part) DO UPDATE SET next_offset = excluded.next_offset";
pub(crate) const SELECT_RECORDS: &str = "SELECT off, key, headers, payload, timestamp_ms \
    FROM records WHERE topic_id = ?1 AND part = ?2 AND off >= ?3 ORDER BY off LIMIT ?4";
pub(crate) const SELECT_GROUP_OFFSET: &str =
    "SELECT next_offset FROM group_offsets WHERE grp = ?1 AND topic_id = ?2 AND part = ?3";

/// Wraps an SQLite error with what we were doing, so a log line says more than "disk I/O
/// error".
pub(crate) fn storage(context: &str) -> impl FnOnce(rusqlite::Error) -> LogError + '_ {
    move |e| LogError::Storage(format!("{context}: {e}"))
}

/// Opens a connection with the settings every connection needs.
///
/// WAL lets readers run beside the single writer; `synchronous=FULL` fsyncs the WAL on every
/// commit, which is what makes an acknowledged append survive power loss (NORMAL would only
/// survive a process crash). The busy timeout covers checkpoints briefly locking readers out.
pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(storage("opening the log database"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(storage("setting busy_timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(storage("enabling WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(storage("setting synchronous=FULL"))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// The layout [`SCHEMA`] describes, kept in `PRAGMA user_version`.
const LAYOUT: i64 = 1;

/// Creates the schema, first bringing a file of an older layout to the current one.
pub(crate) fn create_schema(conn: &mut Connection) -> Result<()> {
    migrate(conn)?;
    conn.execute_batch(SCHEMA)
        .map_err(storage("creating the log schema"))
}

/// Moves a layout-0 file (`records` as a `WITHOUT ROWID` table) to the current layout in one
/// transaction: every record is copied with its topic, partition and offset unchanged, so
/// consumer positions and group commits stay valid. A new file is only stamped.
fn migrate(conn: &mut Connection) -> Result<()> {
    let layout: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage("reading the log layout"))?;
    if layout >= LAYOUT {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(storage("migrating the log"))?;
    let old: Option<String> = tx
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(storage("migrating the log"))?;
    if old.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        let started = std::time::Instant::now();
        tx.execute_batch("ALTER TABLE records RENAME TO records_layout0;")
            .and_then(|()| tx.execute_batch(SCHEMA))
            .and_then(|()| {
                tx.execute_batch(
                    "INSERT INTO records (topic_id, part, off, key, headers, payload, timestamp_ms)
                     SELECT topic_id, part, off, key, headers, payload, timestamp_ms
                     FROM records_layout0;
                     DROP TABLE records_layout0;",
                )
            })
            .map_err(storage("migrating the log's records to layout 1"))?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log: records moved to a rowid table (layout {LAYOUT})"
        );
    }
    tx.pragma_update(None, "user_version", LAYOUT)
        .map_err(storage("stamping the log layout"))?;
    tx.commit().map_err(storage("migrating the log"))
}

/// Loads every topic with its partitions' end offsets (one index seek per partition, never a
/// scan of the records).
pub(crate) fn load_topics(conn: &Connection) -> Result<Vec<Topic>> {
    let mut stmt = conn
        .prepare("SELECT id, name, partitions FROM topics ORDER BY id")
        .map_err(storage("loading topics"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, u32>(2)?,
            ))
        })
        .map_err(storage("loading topics"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(storage("loading topics"))?;

    let mut max_offset = conn
        .prepare("SELECT MAX(off) FROM records WHERE topic_id = ?1 AND part = ?2")
        .map_err(storage("loading end offsets"))?;
    let mut topics = Vec::with_capacity(rows.len());
    for (id, name, partitions) in rows {
        let mut ends = Vec::with_capacity(partitions as usize);
        for partition in 0..partitions {
            let max: Option<u64> = max_offset
                .query_row(params![id, partition], |row| row.get(0))
                .optional()
                .map_err(storage("loading end offsets"))?
                .flatten();
            ends.push(max.map_or(0, |m| m + 1));
        }
        topics.push(Topic::new(id, name, ends));
    }
    Ok(topics)
}
