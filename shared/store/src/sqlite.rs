//! The embedded read store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous=NORMAL`. In WAL mode that keeps the file consistent across
//! crashes (`kill -9` loses nothing) but a power loss may take the last transactions, so an
//! `apply` is durable only after the next [`ReadStore::flush`], which syncs the WAL. The
//! projector flushes before it commits its log offsets past what it applied: a write lost
//! with the power is then always one whose records the log delivers again.
//!
//! Threads: SQLite calls block, so they run on tokio's blocking pool. One writer connection
//! (SQLite allows one writer anyway) and a small pool of reader connections, which WAL lets
//! read while the writer writes.
//!
//! Waiting: `apply` bumps a watch channel after each commit, so `wait_for_*` re-check as soon
//! as something changed, plus a slow poll in case another process writes the same file.

use crate::{
    DefinitionSummary, HumanTask, HumanTaskFilter, InboxStatus, MAX_LIMIT, Page, ReadStore, Result,
    SlaRecord, StoreError, WorkflowFilter, WorkflowSummary,
};
use async_trait::async_trait;
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope};
use distorch_domain::view::{DeadLetter, TaskView, WorkflowView, rfc3339};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Readers kept open between calls; more are opened under load and closed afterwards.
const IDLE_READERS: usize = 64;
/// Fallback re-check for waiters when the writer is another process.
const WAIT_POLL: Duration = Duration::from_millis(50);

const SCHEMA: &str = "
-- A rowid table, not WITHOUT ROWID: a view is several KB, and a WITHOUT ROWID row that
-- spills to overflow pages is reassembled for every key comparison of every lookup.
CREATE TABLE IF NOT EXISTS workflows (
    id            TEXT PRIMARY KEY,
    definition    TEXT NOT NULL,
    version       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    -- LZ4-compressed JSON (see StoredView); older rows hold plain JSON text.
    view          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflows_newest ON workflows (created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS workflows_by_status
    ON workflows (status, created_at_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS workflows_by_definition
    ON workflows (definition, created_at_ms DESC, id DESC);

CREATE TABLE IF NOT EXISTS events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;

-- rowid order = the order tasks were parked: the queue is served oldest first.
CREATE TABLE IF NOT EXISTS dead_letters (
    task_id     TEXT NOT NULL UNIQUE,
    workflow_id TEXT NOT NULL,
    item        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_workflow ON dead_letters (workflow_id);

-- The inbox: one row per human task, upserted whenever its view changes.
CREATE TABLE IF NOT EXISTS human_tasks (
    task_id       TEXT PRIMARY KEY,
    workflow_id   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status        TEXT NOT NULL,
    assignee      TEXT,
    grp           TEXT,
    item          TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS human_tasks_by_assignee
    ON human_tasks (assignee, created_at_ms, task_id);
CREATE INDEX IF NOT EXISTS human_tasks_by_group ON human_tasks (grp, created_at_ms, task_id);
CREATE INDEX IF NOT EXISTS human_tasks_by_status
    ON human_tasks (status, created_at_ms, task_id);

-- SLA warnings and breaches, keyed by the event that reported them.
CREATE TABLE IF NOT EXISTS sla_alerts (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    item        TEXT NOT NULL,
    PRIMARY KEY (workflow_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sla_alerts_newest ON sla_alerts (at_ms DESC, workflow_id DESC, seq DESC);

CREATE TABLE IF NOT EXISTS definitions (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    description TEXT,
    -- The whole DefinitionRegistered, so new fields need no migration.
    record      TEXT NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
";

/// The SQLite [`ReadStore`]. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Bumped after every committed write.
    changed: watch::Sender<u64>,
    /// What this process last folded of each run it applied, so read-your-writes waits and
    /// long-polls are answered from memory instead of a query per write per waiter.
    seqs: Mutex<HashMap<WorkflowId, Folded>>,
    /// The committed views of running runs, decoded: a batch folds its events into them
    /// instead of reading, decompressing and parsing each touched run's view again (it
    /// only checks the stored `last_seq`). Only written after a commit (and under the
    /// writer's lock), so it never runs ahead of the file; an ended run leaves it.
    views: Mutex<HashMap<WorkflowId, WorkflowView>>,
}

/// Bound of the view cache; past it the cache starts over (views are then read again).
const MAX_CACHED_VIEWS: usize = 4_096;

/// The last event of a run folded into its view.
#[derive(Debug, Clone, Copy, Default)]
struct Folded {
    seq: u64,
    /// Whether that event ended the run.
    ended: bool,
}

/// Brings a file written by an older version to the current layout, in one transaction.
///
/// Layout 0 kept `workflows` as a `WITHOUT ROWID` table; it is copied into the rowid table
/// [`SCHEMA`] now declares (its indexes go with the old table and `SCHEMA` recreates them).
/// A new file has no `workflows` table yet and is only stamped.
fn migrate(conn: &mut Connection) -> Result<()> {
    const LAYOUT: i64 = 1;
    let layout: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(storage)?;
    if layout >= LAYOUT {
        return Ok(());
    }
    let tx = conn.transaction().map_err(storage)?;
    let old: Option<String> = tx
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'workflows'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(storage)?;
    if old.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        tracing::info!("read store: moving workflows to a rowid table (layout {LAYOUT})");
        tx.execute_batch(
            "ALTER TABLE workflows RENAME TO workflows_layout0;
             DROP INDEX IF EXISTS workflows_newest;
             DROP INDEX IF EXISTS workflows_by_status;
             DROP INDEX IF EXISTS workflows_by_definition;",
        )
        .map_err(storage)?;
        tx.execute_batch(SCHEMA).map_err(storage)?;
        tx.execute_batch(
            "INSERT INTO workflows SELECT * FROM workflows_layout0;
             DROP TABLE workflows_layout0;",
        )
        .map_err(storage)?;
    }
    tx.pragma_update(None, "user_version", LAYOUT)
        .map_err(storage)?;
    tx.commit().map_err(storage)
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

/// How every SQLite file of this crate journals: WAL, synced lazily (at checkpoints and by
/// [`make_durable`]), and checkpointed once the WAL holds 10,000 pages (~40 MB) rather than
/// SQLite's default 1,000. Every batch rewrites the same hot pages (the views and history
/// leaves of the runs in flight), and a checkpoint copies each page once however often the
/// WAL holds it, so the bigger WAL writes less in all and syncs the file less often: measured
/// at 3,000 runs × 10 steps, faster in 5 of 6 interleaved pairs (+6% steps/s on average).
pub(crate) const LAZY_WAL: &str =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;";

/// The row [`make_durable`] rewrites; created by every SQLite file of this crate.
pub(crate) const DURABILITY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS durable_marker (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    at_ms INTEGER NOT NULL
);";

/// Makes every transaction committed so far on `conn`'s file durable: one tiny write
/// committed with `synchronous=FULL`, which syncs the WAL (and with it every earlier frame),
/// then back to `NORMAL`. Needs [`DURABILITY_SCHEMA`].
pub(crate) fn make_durable(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let written = conn.execute(
        "INSERT OR REPLACE INTO durable_marker (id, at_ms) VALUES (1, ?1)",
        [at_ms],
    );
    let restored = conn.pragma_update(None, "synchronous", "NORMAL");
    written.and(restored)
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(storage)?;
    // mmap: reads of hot pages skip a read() syscall and a copy each.
    conn.execute_batch(LAZY_WAL).map_err(storage)?;
    conn.execute_batch("PRAGMA mmap_size=268435456;")
        .map_err(storage)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`. Blocks briefly: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut writer = connect(&path)?;
        migrate(&mut writer)?;
        writer.execute_batch(SCHEMA).map_err(storage)?;
        writer.execute_batch(DURABILITY_SCHEMA).map_err(storage)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                changed: watch::channel(0).0,
                seqs: Mutex::new(HashMap::new()),
                views: Mutex::new(HashMap::new()),
            }),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => connect(&inner.path)?,
            };
            let out = f(&conn);
            let mut idle = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(storage)?
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(storage)??;
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(out)
    }

    /// Re-runs `check` after every local write (and every [`WAIT_POLL`]) until it holds or
    /// `timeout` passes.
    async fn wait_until<F>(&self, timeout: Duration, check: F) -> Result<bool>
    where
        F: Fn(&Connection) -> Result<bool> + Send + Sync + 'static,
    {
        let deadline = Instant::now() + timeout;
        let check = Arc::new(check);
        let mut changed = self.inner.changed.subscribe();
        loop {
            // Mark the current version seen before checking, so a write that lands between
            // the check and the wait still wakes us.
            changed.borrow_and_update();
            let c = check.clone();
            if self.read(move |conn| c(conn)).await? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let nap = (deadline - now).min(WAIT_POLL);
            // An error means the sender is gone, which cannot happen while `self` lives.
            let _ = tokio::time::timeout(nap, changed.changed()).await;
        }
    }
}

impl SqliteStore {
    /// Waits for `done` to hold of what this process folded of run `id`, waking on every
    /// write without a query. `None` when the run is not in memory (folded before a restart,
    /// or by another process): the caller asks the database instead.
    async fn wait_in_memory(
        &self,
        id: WorkflowId,
        timeout: Duration,
        done: impl Fn(Folded) -> bool,
    ) -> Option<bool> {
        let remembered = || {
            let seqs = self.inner.seqs.lock().unwrap_or_else(|p| p.into_inner());
            seqs.get(&id).copied()
        };
        remembered()?;
        let deadline = Instant::now() + timeout;
        let mut changed = self.inner.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if remembered().is_some_and(&done) {
                return Some(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Some(false);
            }
            let _ = tokio::time::timeout(deadline - now, changed.changed()).await;
        }
    }
}

/// Bound of the in-memory sequence map; past it the map starts over (waits then fall back
/// to a query until runs are seen again).
const MAX_REMEMBERED_SEQS: usize = 1_000_000;

/// The runs of a batch in first-seen order, each with its events in batch order.
fn group_by_run(events: &[EventEnvelope]) -> Vec<(WorkflowId, Vec<&EventEnvelope>)> {
    let mut index = HashMap::new();
    let mut groups: Vec<(WorkflowId, Vec<&EventEnvelope>)> = Vec::new();
    for e in events {
        let i = *index.entry(e.workflow_id).or_insert_with(|| {
            groups.push((e.workflow_id, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(e);
    }
    groups
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(storage)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(storage)
}

/// Folds `events` into the stored views in one transaction. `views` holds decoded committed
/// views (see `Inner::views`): a run found there is not read back; the runs still running
/// go (back) into it only once the transaction committed.
fn apply_batch(
    conn: &mut Connection,
    events: &[EventEnvelope],
    views: &mut HashMap<WorkflowId, WorkflowView>,
) -> Result<()> {
    let mut running: Vec<(WorkflowId, WorkflowView)> = Vec::new();
    let tx = conn.transaction().map_err(storage)?;
    {
        let mut load = tx
            .prepare_cached("SELECT view FROM workflows WHERE id = ?1")
            .map_err(storage)?;
        let mut last_seq = tx
            .prepare_cached("SELECT last_seq FROM workflows WHERE id = ?1")
            .map_err(storage)?;
        let mut history = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events (workflow_id, seq, event) VALUES (?1, ?2, ?3)",
            )
            .map_err(storage)?;
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO workflows
                    (id, definition, version, status, created_at_ms, updated_at_ms, last_seq, view)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET
                    status = excluded.status,
                    updated_at_ms = excluded.updated_at_ms,
                    last_seq = excluded.last_seq,
                    view = excluded.view",
            )
            .map_err(storage)?;
        let mut park = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO dead_letters (task_id, workflow_id, item)
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(storage)?;
        let mut unpark = tx
            .prepare_cached("DELETE FROM dead_letters WHERE task_id = ?1")
            .map_err(storage)?;
        let mut inbox = tx
            .prepare_cached(
                "INSERT INTO human_tasks
                    (task_id, workflow_id, created_at_ms, status, assignee, grp, item)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (task_id) DO UPDATE SET
                    status = excluded.status,
                    assignee = excluded.assignee,
                    grp = excluded.grp,
                    item = excluded.item",
            )
            .map_err(storage)?;
        let mut alert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO sla_alerts (workflow_id, seq, at_ms, item)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(storage)?;

        for (id, run_events) in group_by_run(events) {
            let id_text = id.to_string();
            // A cached view is used only if the file still holds that version: another
            // process writing the same file (a second projector) may have moved the run on.
            let cached = match views.remove(&id) {
                Some(view) => {
                    let stored_seq: Option<i64> = last_seq
                        .query_row([&id_text], |r| r.get(0))
                        .optional()
                        .map_err(storage)?;
                    (stored_seq == Some(view.last_seq as i64)).then_some(view)
                }
                None => None,
            };
            let stored: Option<WorkflowView> = match cached {
                Some(view) => Some(view),
                None => load
                    .query_row([&id_text], |r| StoredView::decode(r, 0))
                    .optional()
                    .map_err(storage)?
                    .transpose()?,
            };
            let stored_seq = stored.as_ref().map_or(0, |v| v.last_seq);
            let parked_before: Vec<TaskId> = parked(stored.as_ref());
            let humans_before: HashMap<TaskId, HumanTask> = stored
                .as_ref()
                .map(|v| {
                    HumanTask::all_of(v)
                        .map(|h| (h.task_id.clone(), h))
                        .collect()
                })
                .unwrap_or_default();
            let alerts_before = stored.as_ref().map_or(0, |v| v.sla.len());
            let mut view = stored;
            let mut created_at_ms = 0;
            let mut updated_at_ms = 0;
            // Folded in this batch: when each human task was created, and the SLA events.
            let mut humans_created: HashMap<TaskId, i64> = HashMap::new();
            let mut alert_events: Vec<(u64, i64)> = Vec::new();

            for e in run_events {
                // Already folded in, so already in the history (same transaction back then).
                if e.seq <= stored_seq {
                    continue;
                }
                history
                    .execute(params![id_text, e.seq as i64, to_json(e)?])
                    .map_err(storage)?;
                match view.as_mut() {
                    Some(v) => v.apply(e),
                    None => {
                        view = WorkflowView::start(e);
                        if view.is_none() {
                            tracing::warn!(
                                workflow_id = %id, seq = e.seq, event = e.event.name(),
                                "event for a run whose start was never seen; history only"
                            );
                            continue;
                        }
                        created_at_ms = e.at_ms;
                    }
                }
                match &e.event {
                    Event::HumanTaskCreated { task_id, .. } => {
                        humans_created.insert(task_id.clone(), e.at_ms);
                    }
                    Event::SlaWarned { .. } | Event::SlaBreached { .. } => {
                        alert_events.push((e.seq, e.at_ms));
                    }
                    _ => {}
                }
                updated_at_ms = e.at_ms;
            }

            let Some(view) = view else { continue };
            if view.last_seq == stored_seq {
                running.push((id, view));
                continue;
            }
            upsert
                .execute(params![
                    id_text,
                    view.definition,
                    view.version,
                    view.status.as_str(),
                    created_at_ms,
                    updated_at_ms,
                    view.last_seq as i64,
                    StoredView::encode(&view)?,
                ])
                .map_err(storage)?;

            let parked_after = parked(Some(&view));
            for t in parked_before.iter().filter(|t| !parked_after.contains(t)) {
                unpark.execute([&t.0]).map_err(storage)?;
            }
            for t in view
                .tasks
                .iter()
                .filter(|t| t.parked && !parked_before.contains(&t.task_id))
            {
                park.execute(params![
                    t.task_id.0,
                    id_text,
                    to_json(&DeadLetter::from(t))?
                ])
                .map_err(storage)?;
            }

            for h in HumanTask::all_of(&view) {
                if humans_before.get(&h.task_id) == Some(&h) {
                    continue;
                }
                // An existing row keeps its creation time (the upsert leaves it alone).
                let created = humans_created
                    .get(&h.task_id)
                    .copied()
                    .unwrap_or(updated_at_ms);
                inbox
                    .execute(params![
                        h.task_id.0,
                        id_text,
                        created,
                        h.status.as_str(),
                        h.assignee,
                        h.group,
                        to_json(&h)?,
                    ])
                    .map_err(storage)?;
            }

            // The fold adds exactly one alert per SLA event, in order.
            let new_alerts = view.sla.get(alerts_before..).unwrap_or_default();
            for ((seq, at_ms), a) in alert_events.iter().zip(new_alerts) {
                alert
                    .execute(params![
                        id_text,
                        *seq as i64,
                        at_ms,
                        to_json(&SlaRecord::new(&view, a))?
                    ])
                    .map_err(storage)?;
            }
            if !view.status.is_terminal() {
                running.push((id, view));
            }
        }
    }
    tx.commit().map_err(storage)?;
    if views.len() + running.len() > MAX_CACHED_VIEWS {
        views.clear();
    }
    views.extend(running);
    Ok(())
}

fn inbox(conn: &Connection, filter: &HumanTaskFilter, limit: usize) -> Result<Vec<HumanTask>> {
    use rusqlite::types::Value as Sql;
    let mut sql = String::from("SELECT item FROM human_tasks WHERE 1 = 1");
    let mut args: Vec<Sql> = Vec::new();
    if let Some(assignee) = &filter.assignee {
        sql.push_str(" AND assignee = ?");
        args.push(Sql::Text(assignee.clone()));
    }
    if let Some(group) = &filter.group {
        sql.push_str(" AND grp = ?");
        args.push(Sql::Text(group.clone()));
    }
    match filter.status {
        None => {}
        Some(InboxStatus::Open) => sql.push_str(" AND status IN ('scheduled', 'running')"),
        Some(InboxStatus::Is(status)) => {
            sql.push_str(" AND status = ?");
            args.push(Sql::Text(status.as_str().into()));
        }
    }
    sql.push_str(" ORDER BY created_at_ms, task_id LIMIT ?");
    args.push(Sql::Integer(limit.clamp(1, MAX_LIMIT) as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))
        .map_err(storage)?;
    rows.map(|row| from_json(&row.map_err(storage)?)).collect()
}

fn parked(view: Option<&WorkflowView>) -> Vec<TaskId> {
    view.map(|v| {
        v.tasks
            .iter()
            .filter(|t| t.parked)
            .map(|t| t.task_id.clone())
            .collect()
    })
    .unwrap_or_default()
}

fn apply_definitions(conn: &mut Connection, defs: &[DefinitionRegistered]) -> Result<()> {
    let tx = conn.transaction().map_err(storage)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO definitions (name, version, description, record)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(storage)?;
        for d in defs {
            let description = d.source.get("description").and_then(|v| v.as_str());
            insert
                .execute(params![d.name, d.version, description, to_json(d)?])
                .map_err(storage)?;
        }
    }
    tx.commit().map_err(storage)
}

/// A run's view as stored in `workflows.view`: LZ4-compressed JSON (a BLOB), or plain JSON
/// text as files written before compression hold it. A 10-step run's view is about 5.6 KB of
/// JSON and ~1 KB compressed; it is rewritten on every batch that touches the run, so its
/// size is most of what the read store writes.
struct StoredView;

impl StoredView {
    fn encode(view: &WorkflowView) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(view).map_err(storage)?;
        Ok(lz4_flex::block::compress_prepend_size(&json))
    }

    /// Decodes column `column` of `row` in place, without copying the stored bytes out.
    fn decode(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Result<WorkflowView>> {
        Ok(match row.get_ref(column)? {
            rusqlite::types::ValueRef::Blob(bytes) => {
                lz4_flex::block::decompress_size_prepended(bytes)
                    .map_err(|e| StoreError::Storage(format!("corrupt stored view: {e}")))
                    .and_then(|json| serde_json::from_slice(&json).map_err(storage))
            }
            rusqlite::types::ValueRef::Text(text) => serde_json::from_slice(text).map_err(storage),
            other => Err(StoreError::Storage(format!(
                "a stored view is {:?}, not a blob or text",
                other.data_type()
            ))),
        })
    }
}

fn load_view(conn: &Connection, id: WorkflowId) -> Result<Option<WorkflowView>> {
    conn.prepare_cached("SELECT view FROM workflows WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| StoredView::decode(r, 0))
                .optional()
        })
        .map_err(storage)?
        .transpose()
}

fn status_from_str(s: &str) -> Option<Status> {
    use Status::*;
    [
        Running,
        Paused,
        Parked,
        Compensating,
        Completed,
        Failed,
        Compensated,
        Cancelled,
    ]
    .into_iter()
    .find(|status| status.as_str() == s)
}

/// `<created_at_ms>:<workflow id>` of the last row of the previous page.
fn parse_cursor(cursor: &str) -> Result<(i64, String)> {
    let bad = || StoreError::BadCursor(cursor.to_owned());
    let (ms, id) = cursor.split_once(':').ok_or_else(bad)?;
    let ms = ms.parse::<i64>().map_err(|_| bad())?;
    let id = id.parse::<WorkflowId>().map_err(|_| bad())?;
    Ok((ms, id.to_string()))
}

fn list(
    conn: &Connection,
    filter: &WorkflowFilter,
    limit: usize,
    after: Option<(i64, String)>,
) -> Result<Page<WorkflowSummary>> {
    use rusqlite::types::Value as Sql;
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut sql = String::from(
        "SELECT id, definition, version, status, created_at_ms, updated_at_ms
         FROM workflows WHERE 1 = 1",
    );
    let mut args: Vec<Sql> = Vec::new();
    if let Some(status) = filter.status {
        sql.push_str(" AND status = ?");
        args.push(Sql::Text(status.as_str().into()));
    }
    if let Some(definition) = &filter.definition {
        sql.push_str(" AND definition = ?");
        args.push(Sql::Text(definition.clone()));
    }
    if let Some((ms, id)) = after {
        sql.push_str(" AND (created_at_ms, id) < (?, ?)");
        args.push(Sql::Integer(ms));
        args.push(Sql::Text(id));
    }
    sql.push_str(" ORDER BY created_at_ms DESC, id DESC LIMIT ?");
    // One extra row tells whether another page exists.
    args.push(Sql::Integer(limit as i64 + 1));

    let mut stmt = conn.prepare_cached(&sql).map_err(storage)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(storage)?;
    let mut items = Vec::with_capacity(limit + 1);
    let mut last_key = None;
    let mut more = false;
    for row in rows {
        let (id, definition, version, status, created, updated) = row.map_err(storage)?;
        if items.len() == limit {
            more = true;
            break;
        }
        let workflow_id = id.parse().map_err(storage)?;
        let status = status_from_str(&status)
            .ok_or_else(|| storage(format!("unknown status {status:?} in row {id}")))?;
        last_key = Some((created, id));
        items.push(WorkflowSummary {
            workflow_id,
            definition,
            version,
            status,
            created_at: rfc3339(created),
            updated_at: rfc3339(updated),
        });
    }
    let next_cursor = last_key
        .filter(|_| more)
        .map(|(ms, id)| format!("{ms}:{id}"));
    Ok(Page { items, next_cursor })
}

#[async_trait]
impl ReadStore for SqliteStore {
    async fn apply(&self, events: &[EventEnvelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        let mut latest: HashMap<WorkflowId, Folded> = HashMap::new();
        for e in &events {
            let folded = latest.entry(e.workflow_id).or_default();
            if e.seq >= folded.seq {
                *folded = Folded {
                    seq: e.seq,
                    ended: e.event.is_terminal(),
                };
            }
        }
        let inner = self.inner.clone();
        // What was folded is remembered before `write` wakes the waiters: a waiter woken
        // first would find its run not ended yet and sleep until its timeout.
        self.write(move |conn| {
            let mut views = inner.views.lock().unwrap_or_else(|p| p.into_inner());
            let applied = apply_batch(conn, &events, &mut views);
            drop(views);
            applied?;
            let mut seqs = inner.seqs.lock().unwrap_or_else(|p| p.into_inner());
            if seqs.len() > MAX_REMEMBERED_SEQS {
                seqs.clear();
            }
            for (id, folded) in latest {
                let known = seqs.entry(id).or_default();
                if folded.seq >= known.seq {
                    *known = folded;
                }
            }
            Ok(())
        })
        .await
    }

    async fn apply_definitions(&self, defs: &[DefinitionRegistered]) -> Result<()> {
        if defs.is_empty() {
            return Ok(());
        }
        let defs = defs.to_vec();
        self.write(move |conn| apply_definitions(conn, &defs)).await
    }

    async fn flush(&self) -> Result<()> {
        self.write(|conn| make_durable(conn).map_err(storage)).await
    }

    async fn reset(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.write(move |conn| {
            // Under the writer's lock, like every apply: no view can be folded meanwhile.
            inner
                .views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            let tx = conn.transaction().map_err(storage)?;
            tx.execute_batch(
                "DELETE FROM workflows; DELETE FROM events; DELETE FROM dead_letters;
                 DELETE FROM human_tasks; DELETE FROM sla_alerts; DELETE FROM definitions;",
            )
            .map_err(storage)?;
            tx.commit().map_err(storage)
        })
        .await?;
        // Remembered sequences would answer waits for runs that are no longer stored.
        self.inner
            .seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowView>> {
        self.read(move |conn| load_view(conn, id)).await
    }

    async fn workflows(
        &self,
        filter: &WorkflowFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<WorkflowSummary>> {
        let after = cursor.map(parse_cursor).transpose()?;
        let filter = filter.clone();
        self.read(move |conn| list(conn, &filter, limit, after))
            .await
    }

    async fn history(&self, id: WorkflowId) -> Result<Vec<EventEnvelope>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT event FROM events WHERE workflow_id = ?1 ORDER BY seq")
                .map_err(storage)?;
            let rows = stmt
                .query_map([id.to_string()], |r| r.get::<_, String>(0))
                .map_err(storage)?;
            rows.map(|row| from_json(&row.map_err(storage)?)).collect()
        })
        .await
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskView>> {
        let Some(workflow_id) = id.workflow_id() else {
            return Ok(None);
        };
        let id = id.clone();
        let view = self.read(move |conn| load_view(conn, workflow_id)).await?;
        Ok(view.and_then(|v| v.tasks.into_iter().find(|t| t.task_id == id)))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT item FROM dead_letters ORDER BY rowid")
                .map_err(storage)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(storage)?;
            rows.map(|row| from_json(&row.map_err(storage)?)).collect()
        })
        .await
    }

    async fn human_tasks(&self, filter: &HumanTaskFilter, limit: usize) -> Result<Vec<HumanTask>> {
        let filter = filter.clone();
        self.read(move |conn| inbox(conn, &filter, limit)).await
    }

    async fn sla_breaches(&self, limit: usize) -> Result<Vec<SlaRecord>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT item FROM sla_alerts
                     ORDER BY at_ms DESC, workflow_id DESC, seq DESC LIMIT ?1",
                )
                .map_err(storage)?;
            let rows = stmt
                .query_map([limit.clamp(1, MAX_LIMIT) as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(storage)?;
            rows.map(|row| from_json(&row.map_err(storage)?)).collect()
        })
        .await
    }

    async fn definitions(&self) -> Result<Vec<DefinitionSummary>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, version, description FROM definitions ORDER BY name, version",
                )
                .map_err(storage)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .map_err(storage)?;
            let mut out: Vec<DefinitionSummary> = Vec::new();
            for row in rows {
                let (name, version, description) = row.map_err(storage)?;
                match out.last_mut() {
                    Some(d) if d.name == name => {
                        d.latest_version = version;
                        d.versions.push(version);
                        d.description = description;
                    }
                    _ => out.push(DefinitionSummary {
                        name,
                        latest_version: version,
                        versions: vec![version],
                        description,
                    }),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn definition(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<DefinitionRegistered>> {
        let name = name.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM definitions
                     WHERE name = ?1 AND (?2 IS NULL OR version = ?2)
                     ORDER BY version DESC LIMIT 1",
                )
                .map_err(storage)?;
            stmt.query_row(params![name, version], |r| r.get::<_, String>(0))
                .optional()
                .map_err(storage)?
                .map(|record| from_json(&record))
                .transpose()
        })
        .await
    }

    async fn wait_for_seq(&self, id: WorkflowId, seq: u64, timeout: Duration) -> Result<bool> {
        if let Some(answer) = self.wait_in_memory(id, timeout, |f| f.seq >= seq).await {
            return Ok(answer);
        }
        let id = id.to_string();
        self.wait_until(timeout, move |conn| {
            let last: Option<i64> = conn
                .prepare_cached("SELECT last_seq FROM workflows WHERE id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(storage)?;
            Ok(last.is_some_and(|last| last as u64 >= seq))
        })
        .await
    }

    async fn wait_for_end(&self, id: WorkflowId, timeout: Duration) -> Result<bool> {
        if let Some(answer) = self.wait_in_memory(id, timeout, |f| f.ended).await {
            return Ok(answer);
        }
        let id = id.to_string();
        self.wait_until(timeout, move |conn| {
            let status: Option<String> = conn
                .prepare_cached("SELECT status FROM workflows WHERE id = ?1")
                .and_then(|mut s| s.query_row([&id], |r| r.get(0)).optional())
                .map_err(storage)?;
            Ok(status
                .and_then(|s| status_from_str(&s))
                .is_some_and(|s| s.is_terminal()))
        })
        .await
    }

    async fn wait_for_definition(
        &self,
        name: &str,
        version: u32,
        timeout: Duration,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.wait_until(timeout, move |conn| {
            conn.prepare_cached("SELECT 1 FROM definitions WHERE name = ?1 AND version = ?2")
                .and_then(|mut s| s.exists(params![name, version]))
                .map_err(storage)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `make_durable` writes its marker with a synced commit and leaves the connection on
    /// the lazy `NORMAL` it had, so later writes stay cheap.
    #[test]
    fn make_durable_writes_its_marker_and_restores_lazy_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = connect(&dir.path().join("read.db")).expect("open");
        conn.execute_batch(DURABILITY_SCHEMA).expect("schema");
        let synchronous = |conn: &Connection| -> i64 {
            conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("pragma")
        };
        assert_eq!(synchronous(&conn), 1, "NORMAL");
        make_durable(&conn).expect("durable");
        make_durable(&conn).expect("again");
        assert_eq!(synchronous(&conn), 1, "back to NORMAL");
        let rows: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM durable_marker WHERE at_ms > 0",
                [],
                |r| r.get(0),
            )
            .expect("marker");
        assert_eq!(rows, 1);
    }
}
