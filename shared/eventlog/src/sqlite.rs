//! The embedded log on SQLite: one database file, same contract as Kafka.
//!
//! The shared machinery (writer thread, in-memory tails, consumers) is in [`crate::local`];
//! this module stores a group as one transaction:
//! - `writer`: the only write connection; a group is `BEGIN IMMEDIATE` … `COMMIT`;
//! - `reader`: a pool of read connections used on blocking threads (WAL readers never wait
//!   for the writer);
//! - `schema`: tables, connection settings, migrations.
//!
//! Durability: WAL with `synchronous=FULL`, and a caller is answered only after `COMMIT`
//! returned, so an acknowledged append or commit survives `kill -9` and power loss.

mod reader;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;

use crate::Result;
use crate::local::{LocalLog, lock_file};
use reader::ReadPool;
use writer::SqliteWriter;

/// The embedded, durable [`crate::EventLog`] backed by one SQLite database file.
pub type SqliteLog = LocalLog<Sqlite>;

/// Names the SQLite storage in [`LocalLog`]'s type.
#[derive(Debug)]
pub enum Sqlite {}

impl SqliteLog {
    /// Opens (creating if missing) the log stored at `path`.
    ///
    /// Blocking: it opens the file, creates the schema and loads every partition's end
    /// offset (one index seek each). Call it at startup, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = lock_file(path)?;
        let mut conn = schema::open_connection(path)?;
        schema::create_schema(&mut conn)?;
        let loaded = schema::load_topics(&conn)?;
        let readers = Arc::new(ReadPool::new(path.to_path_buf()));
        Self::start(lock, readers, SqliteWriter::new(conn), loaded)
    }
}
