//! Every statement the store runs, prepared once at connect.
//!
//! Writes of view-derived rows carry `USING TIMESTAMP ?`, bound to the run's `last_seq`
//! after the write (see the module docs of `scylla.rs` for why). All statements but the
//! definition insert (a lightweight transaction) are idempotent, so the driver may retry
//! them after a timeout.

use super::cql_error;
use crate::Result;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;

/// Rows per page of the queries that page through a partition (history, inbox, dead
/// letters, catalog): bounds the memory of one response, not the answer.
pub const PAGE_SIZE: i32 = 1000;

/// Every prepared statement of the store, one field per query. `USING TIMESTAMP ?` is bound last
/// (the run's `last_seq` after the write).
pub struct Statements {
    /// A run's row: its view, creation time, and when each parked task was parked and each human
    /// task created (the clustering keys of its rows). Binds: id.
    pub load_run: PreparedStatement,
    /// A run's `last_seq` alone (what the waits poll). Binds: id.
    pub run_seq: PreparedStatement,
    /// Upserts a run's row, the commit point of `apply`.
    pub save_run: PreparedStatement,

    /// Stores one event of a run's history. Binds: workflow id, seq, event.
    pub insert_event: PreparedStatement,
    /// A run's whole history, by `seq`. Binds: workflow id.
    pub history: PreparedStatement,

    /// Upserts a run's row in one listing scope of `runs_by_time`.
    pub list_row: PreparedStatement,
    /// Deletes a run's row from one listing scope (it left that status).
    pub delete_list_row: PreparedStatement,
    /// The newest rows of one listing partition. Binds: its key, limit.
    pub list_bucket: PreparedStatement,
    /// Rows of one listing partition strictly after a cursor row. Binds: its key, (created_at_ms,
    /// id), limit.
    pub list_bucket_after: PreparedStatement,

    /// Records that a bucket (a day, or the open bucket) holds rows. Binds: kind, k1, k2, bucket.
    pub add_bucket: PreparedStatement,
    /// The buckets of a scope at or before one, newest first. Binds: kind, k1, k2, bucket, limit.
    pub buckets_desc: PreparedStatement,
    /// Every bucket of a scope, oldest first. Binds: kind, k1, k2.
    pub buckets_asc: PreparedStatement,

    /// Puts a task in the dead-letter queue.
    pub park: PreparedStatement,
    /// Takes a task out of the dead-letter queue once it is no longer parked.
    pub unpark: PreparedStatement,
    /// Every parked task of one shard. Binds: shard.
    pub dead_letters: PreparedStatement,

    /// Upserts a human task under one inbox key (scope, class, bucket).
    pub inbox_row: PreparedStatement,
    /// Deletes a human task from one inbox key it no longer belongs to.
    pub delete_inbox_row: PreparedStatement,
    /// Every human task of one inbox partition, oldest first. Binds: scope, class, bucket.
    pub inbox: PreparedStatement,

    /// Stores one SLA alert, keyed by its event (so a replay writes the same row).
    pub sla_alert: PreparedStatement,
    /// The newest SLA alerts of one day. Binds: day, limit.
    pub sla_alerts: PreparedStatement,

    /// Stores a definition version unless it exists (a lightweight transaction, so not idempotent
    /// for the driver).
    pub register_definition: PreparedStatement,
    /// Upserts a definition version in the catalogue partition. Binds: name, version, description.
    pub catalog_row: PreparedStatement,
    /// The whole catalogue: name, version, description of every definition version.
    pub catalog: PreparedStatement,
    /// One definition version's record. Binds: name, version.
    pub definition: PreparedStatement,
    /// The latest version's record of a definition (versions cluster newest first). Binds: name.
    pub latest_definition: PreparedStatement,
}

impl Statements {
    /// Prepares every statement against keyspace `ks`, paged by [`PAGE_SIZE`]; fails when a table
    /// is missing.
    pub async fn prepare(session: &Session, ks: &str) -> Result<Self> {
        let p = |cql: String, idempotent: bool| async move {
            let mut statement = Statement::new(cql);
            statement.set_is_idempotent(idempotent);
            statement.set_page_size(PAGE_SIZE);
            session.prepare(statement).await.map_err(cql_error)
        };
        let list_columns = "created_at_ms, id, definition, version, status, updated_at_ms";
        let list_key = "status_key = ? AND definition_key = ? AND day = ? AND shard = ?";
        Ok(Self {
            load_run: p(
                format!(
                    "SELECT view, created_at_ms, parked_at, inbox_created \
                     FROM {ks}.workflows WHERE id = ?"
                ),
                true,
            )
            .await?,
            run_seq: p(
                format!("SELECT last_seq FROM {ks}.workflows WHERE id = ?"),
                true,
            )
            .await?,
            save_run: p(
                format!(
                    "INSERT INTO {ks}.workflows (id, definition, version, status, \
                     created_at_ms, updated_at_ms, last_seq, view, parked_at, inbox_created) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,

            insert_event: p(
                format!("INSERT INTO {ks}.events (workflow_id, seq, event) VALUES (?, ?, ?)"),
                true,
            )
            .await?,
            history: p(
                format!("SELECT event FROM {ks}.events WHERE workflow_id = ?"),
                true,
            )
            .await?,

            list_row: p(
                format!(
                    "INSERT INTO {ks}.runs_by_time (status_key, definition_key, day, shard, \
                     {list_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            delete_list_row: p(
                format!(
                    "DELETE FROM {ks}.runs_by_time USING TIMESTAMP ? WHERE {list_key} \
                     AND created_at_ms = ? AND id = ?"
                ),
                true,
            )
            .await?,
            list_bucket: p(
                format!("SELECT {list_columns} FROM {ks}.runs_by_time WHERE {list_key} LIMIT ?"),
                true,
            )
            .await?,
            list_bucket_after: p(
                format!(
                    "SELECT {list_columns} FROM {ks}.runs_by_time WHERE {list_key} \
                     AND (created_at_ms, id) < (?, ?) LIMIT ?"
                ),
                true,
            )
            .await?,

            add_bucket: p(
                format!("INSERT INTO {ks}.buckets (kind, k1, k2, bucket) VALUES (?, ?, ?, ?)"),
                true,
            )
            .await?,
            buckets_desc: p(
                format!(
                    "SELECT bucket FROM {ks}.buckets WHERE kind = ? AND k1 = ? AND k2 = ? \
                     AND bucket <= ? LIMIT ?"
                ),
                true,
            )
            .await?,
            buckets_asc: p(
                format!(
                    "SELECT bucket FROM {ks}.buckets WHERE kind = ? AND k1 = ? AND k2 = ? \
                     ORDER BY bucket ASC"
                ),
                true,
            )
            .await?,

            park: p(
                format!(
                    "INSERT INTO {ks}.dead_letters (shard, parked_at_ms, task_id, item) \
                     VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            unpark: p(
                format!(
                    "DELETE FROM {ks}.dead_letters USING TIMESTAMP ? \
                     WHERE shard = ? AND parked_at_ms = ? AND task_id = ?"
                ),
                true,
            )
            .await?,
            dead_letters: p(
                format!(
                    "SELECT parked_at_ms, task_id, item FROM {ks}.dead_letters WHERE shard = ?"
                ),
                true,
            )
            .await?,

            inbox_row: p(
                format!(
                    "INSERT INTO {ks}.human_tasks (scope, class, bucket, created_at_ms, task_id, \
                     item) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            delete_inbox_row: p(
                format!(
                    "DELETE FROM {ks}.human_tasks USING TIMESTAMP ? WHERE scope = ? \
                     AND class = ? AND bucket = ? AND created_at_ms = ? AND task_id = ?"
                ),
                true,
            )
            .await?,
            inbox: p(
                format!(
                    "SELECT item FROM {ks}.human_tasks WHERE scope = ? AND class = ? \
                     AND bucket = ?"
                ),
                true,
            )
            .await?,

            sla_alert: p(
                format!(
                    "INSERT INTO {ks}.sla_alerts (day, at_ms, workflow_id, seq, item) \
                     VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ),
                true,
            )
            .await?,
            sla_alerts: p(
                format!("SELECT item FROM {ks}.sla_alerts WHERE day = ? LIMIT ?"),
                true,
            )
            .await?,

            register_definition: p(
                format!(
                    "INSERT INTO {ks}.definitions (name, version, record) VALUES (?, ?, ?) \
                     IF NOT EXISTS"
                ),
                false,
            )
            .await?,
            catalog_row: p(
                format!(
                    "INSERT INTO {ks}.definition_catalog (catalog, name, version, description) \
                     VALUES ('all', ?, ?, ?)"
                ),
                true,
            )
            .await?,
            catalog: p(
                format!(
                    "SELECT name, version, description FROM {ks}.definition_catalog \
                     WHERE catalog = 'all'"
                ),
                true,
            )
            .await?,
            definition: p(
                format!("SELECT record FROM {ks}.definitions WHERE name = ? AND version = ?"),
                true,
            )
            .await?,
            latest_definition: p(
                format!("SELECT record FROM {ks}.definitions WHERE name = ? LIMIT 1"),
                true,
            )
            .await?,
        })
    }
}
