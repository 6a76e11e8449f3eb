//! The SQLite side of a group commit: one transaction on the only write connection, its
//! statements prepared once and cached.

use rusqlite::{Connection, params};

use super::schema::{self, storage};
use crate::local::{StorageWriter, Topic, headers};
use crate::{NewRecord, Result};

pub(crate) struct SqliteWriter {
    conn: Connection,
}

impl SqliteWriter {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}

impl StorageWriter for SqliteWriter {
    fn begin(&mut self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(storage("beginning a write transaction"))
    }

    fn create_topic(&mut self, name: &str, partitions: u32) -> Result<i64> {
        self.conn
            .prepare_cached(schema::INSERT_TOPIC)
            .and_then(|mut stmt| stmt.execute(params![name, partitions]))
            .map_err(storage("creating a topic"))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn append(
        &mut self,
        topic_id: i64,
        partition: u32,
        offset: u64,
        record: &NewRecord,
        now_ms: i64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(schema::INSERT_RECORD)
            .and_then(|mut insert| {
                insert.execute(params![
                    topic_id,
                    partition,
                    offset,
                    record.key,
                    headers::encode(&record.headers),
                    record.payload,
                    now_ms,
                ])
            })
            .map_err(storage("appending a record"))?;
        Ok(())
    }

    fn commit_offset(
        &mut self,
        group: &str,
        topic_id: i64,
        partition: u32,
        next: u64,
    ) -> Result<()> {
        self.conn
            .prepare_cached(schema::UPSERT_GROUP_OFFSET)
            .and_then(|mut upsert| upsert.execute(params![group, topic_id, partition, next]))
            .map_err(storage("committing a group offset"))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(storage("committing a write group"))
    }

    fn abort(&mut self) {
        // A failed COMMIT may already have rolled back; then there is nothing to undo.
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "event log could not roll back a failed group");
        }
    }

    fn reload(&mut self) -> Result<Vec<Topic>> {
        schema::load_topics(&self.conn)
    }
}
