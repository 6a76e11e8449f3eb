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

pub struct Statements {
    pub load_run: PreparedStatement,
    pub run_seq: PreparedStatement,
    pub save_run: PreparedStatement,

    pub insert_event: PreparedStatement,
    pub history: PreparedStatement,

    pub list_row: PreparedStatement,
    pub delete_list_row: PreparedStatement,
    pub list_bucket: PreparedStatement,
    pub list_bucket_after: PreparedStatement,

    pub add_bucket: PreparedStatement,
    pub buckets_desc: PreparedStatement,
    pub buckets_asc: PreparedStatement,

    pub park: PreparedStatement,
    pub unpark: PreparedStatement,
    pub dead_letters: PreparedStatement,

    pub inbox_row: PreparedStatement,
    pub delete_inbox_row: PreparedStatement,
    pub inbox: PreparedStatement,

    pub sla_alert: PreparedStatement,
    pub sla_alerts: PreparedStatement,

    pub register_definition: PreparedStatement,
    pub catalog_row: PreparedStatement,
    pub catalog: PreparedStatement,
    pub definition: PreparedStatement,
    pub latest_definition: PreparedStatement,
}

impl Statements {
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
