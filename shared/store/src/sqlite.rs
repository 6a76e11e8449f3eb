//! The embedded read store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous=NORMAL`. In WAL mode that keeps the file consistent across
//! crashes (`kill -9` loses no committed transaction) but a power loss may take the last
//! ones, so an `apply` is durable only after the next [`ReadStore::flush`], which writes what
//! is held back (with write-behind, below) and syncs the WAL. The projector flushes before
//! it commits its log offsets past what it applied: whatever a crash or power loss takes is
//! then always something whose records the log delivers again.
//!
//! Write-behind ([`SqliteStore::open_exclusive`], what `standalone` uses): `apply` only
//! folds the batch into decoded views in memory ([`pending`]); the file is written at the
//! next `flush`, before a query that memory cannot answer (listings, histories, the inbox,
//! dead letters, SLA alerts), or when thousands of runs wait. A run's view, rewritten in
//! full by every write, is then written a few times a second instead of at every batch
//! that touches it, and the projector's batches cost a fold each. The same flush rule
//! covers a crash: what was folded but not written is what the log delivers again. With
//! [`SqliteStore::open`] each `apply` writes before it returns, and several processes may
//! share the file.
//!
//! Threads: SQLite calls block, so they run on tokio's blocking pool. One writer connection
//! (SQLite allows one writer anyway) and a small pool of reader connections, which WAL lets
//! read while the writer writes.
//!
//! Waiting: `apply` bumps a watch channel once what it folded is readable, so `wait_for_*`
//! re-check as soon as something changed, plus a slow poll in case another process writes
//! the same file.

use crate::{
    DefinitionSummary, HumanTask, HumanTaskFilter, InboxStatus, MAX_LIMIT, Page, ReadStore, Result,
    SlaRecord, StoreError, WorkflowFilter, WorkflowSummary,
};
use async_trait::async_trait;
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::view::{DeadLetter, TaskView, WorkflowView, rfc3339};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

mod pending;
use pending::Memory;

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
    writer: Mutex<Connection>,
    readers: distorch_embedded::ReadPool,
    /// Bumped whenever what reads see changed: after every fold and every write.
    changed: watch::Sender<u64>,
    /// What this process last folded of each run it applied, so read-your-writes waits and
    /// long-polls are answered from memory instead of a query per write per waiter.
    seqs: Mutex<HashMap<WorkflowId, Folded>>,
    /// Decoded views and the changes the file lacks (see [`pending`]).
    memory: Mutex<Memory>,
    /// Write-behind (see [`SqliteStore::open_exclusive`]): `apply` folds into memory only,
    /// and the file is written at `flush`, before a query memory cannot answer, or when too
    /// much waits. Otherwise every `apply` writes its batch before it returns.
    write_behind: bool,
    /// Held while the store is open: exclusive with write-behind, else shared.
    _lock: std::fs::File,
}

/// Pending changes beyond which `apply` writes them out even with write-behind, bounding
/// memory and the work a `flush` finds waiting.
const MAX_DIRTY_RUNS: usize = 4_096;
const MAX_DIRTY_EVENTS: usize = 50_000;

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
/// SQLite's default 1,000. Every write-out rewrites the same hot pages (the views and history
/// leaves of the runs in flight), and a checkpoint copies each page once however often the
/// WAL holds it, so the bigger WAL writes less in all and syncs the file less often: measured
/// at 3,000 runs × 10 steps, faster in 5 of 6 interleaved pairs (+6% steps/s on average).
pub(crate) const LAZY_WAL: &str =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=10000;";

/// Takes an advisory lock on `<path>.lock` for as long as the returned file is open:
/// `exclusive` for a file written behind (see [`SqliteStore::open_exclusive`]), which needs
/// one writer, else shared, so that such a writer and the stores that share a file
/// (several projectors, a rebuild) refuse each other. `what` names the file in the error.
pub(crate) fn lock_file(path: &Path, what: &str, exclusive: bool) -> Result<std::fs::File> {
    distorch_embedded::lock_file(path, exclusive).map_err(|e| match e {
        distorch_embedded::LockError::InUse => StoreError::Setup(format!(
            "the {what} {} is in use by another process",
            path.display()
        )),
        distorch_embedded::LockError::Io { lock_path, error } => {
            StoreError::Setup(format!("cannot lock {lock_path:?}: {error}"))
        }
    })
}

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

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(LAZY_WAL)?;
    // mmap: reads of hot pages skip a read() syscall and a copy each.
    conn.execute_batch("PRAGMA mmap_size=268435456;")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, writing every `apply` before it
    /// returns, so several processes may share the file. Blocks briefly: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = lock_file(path, "read store", false)?;
        Self::open_with(path, lock, false)
    }

    /// Opens the store at `path` for this process alone, with write-behind: `apply` folds
    /// the batch into the views in memory, which answer reads of single runs and waits at
    /// once, and the file is written at the next `flush` (the projector's, before each
    /// offset commit), before any query memory cannot answer, and when more than a few
    /// thousand runs wait. Each run's view is then written once per write-out instead of
    /// once per batch. A crash loses only what no offset commit covered, which the log
    /// delivers again. Fails if another store holds the file (a lock on `<path>.lock`).
    pub fn open_exclusive(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = lock_file(path, "read store", true)?;
        Self::open_with(path, lock, true)
    }

    fn open_with(path: &Path, lock: std::fs::File, write_behind: bool) -> Result<Self> {
        let path = path.to_path_buf();
        let mut writer = connect(&path).map_err(storage)?;
        migrate(&mut writer)?;
        writer.execute_batch(SCHEMA).map_err(storage)?;
        writer.execute_batch(DURABILITY_SCHEMA).map_err(storage)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers: distorch_embedded::ReadPool::new(path, IDLE_READERS, connect),
                changed: watch::channel(0).0,
                seqs: Mutex::new(HashMap::new()),
                memory: Mutex::new(Memory::default()),
                write_behind,
                _lock: lock,
            }),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(storage)?
    }

    /// Like [`Self::read`], after writing out what is pending: for queries that memory
    /// cannot answer (listings, histories, the inbox, dead letters, alerts).
    async fn read_settled<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A write-out in flight counts too: waiting for the writer's lock waits for it.
            let settled = inner.memory().settled();
            if !settled {
                inner.write_out()?;
            }
            inner.with_reader(f)
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

    /// Waits until the condition holds or `timeout` passes. `remembered` answers it from
    /// memory when it can (no query per wake-up; with write-behind the file lags behind
    /// memory); when it returns `None`, `stored` asks the file. Re-checks after every fold
    /// and write here, and every [`WAIT_POLL`] while asking the file (another process may
    /// write it).
    async fn wait_until<S>(
        &self,
        timeout: Duration,
        remembered: impl Fn() -> Option<bool>,
        stored: S,
    ) -> Result<bool>
    where
        S: Fn(&Connection) -> Result<bool> + Send + Sync + 'static,
    {
        let deadline = Instant::now() + timeout;
        let stored = Arc::new(stored);
        let mut changed = self.inner.changed.subscribe();
        loop {
            // Mark the current version seen before checking, so a change that lands between
            // the check and the wait still wakes us.
            changed.borrow_and_update();
            let in_memory = remembered();
            let holds = match in_memory {
                Some(holds) => holds,
                None => {
                    let stored = stored.clone();
                    self.read(move |conn| stored(conn)).await?
                }
            };
            if holds {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let nap = match in_memory {
                Some(_) => deadline - now,
                None => (deadline - now).min(WAIT_POLL),
            };
            // An error means the sender is gone, which cannot happen while `self` lives.
            let _ = tokio::time::timeout(nap, changed.changed()).await;
        }
    }
}

impl Inner {
    /// Runs `f` on a pooled reader connection. Blocks: call it on the blocking pool.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.readers.with(storage, f)
    }

    /// Writes every pending change to the file. Blocks: call it on the blocking pool.
    fn write_out(&self) -> Result<()> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.write_out_locked(&mut conn)
    }

    /// [`Self::write_out`] with the writer's connection already held, so that nothing
    /// pending is taken by two write-outs and a caller can sync right after.
    fn write_out_locked(&self, conn: &mut Connection) -> Result<()> {
        let taken = self.memory().take();
        if taken.is_empty() {
            return Ok(());
        }
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                self.memory().unwritten(taken);
                return Err(storage(e));
            }
        };
        self.commit_taken(tx, taken)
    }

    /// Without write-behind: folds `events` and writes them in one transaction that holds
    /// the file's write lock from its first read (`BEGIN IMMEDIATE`), so a view read for
    /// the fold cannot be moved on by another process before it is written back.
    fn fold_and_write(&self, events: Vec<EventEnvelope>) -> Result<()> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(storage)?;
        let taken = {
            let mut memory = self.memory();
            memory.fold_batch(&tx, events, true)?;
            memory.take()
        };
        self.commit_taken(tx, taken)
    }

    /// Writes `taken` in `tx` and commits; on failure the changes wait for the next
    /// write-out.
    fn commit_taken(
        &self,
        tx: rusqlite::Transaction<'_>,
        taken: Vec<pending::Taken>,
    ) -> Result<()> {
        match pending::write_changes(&tx, &taken).and_then(|()| tx.commit().map_err(storage)) {
            Ok(()) => {
                self.memory().written(&taken);
                self.changed.send_modify(|n| *n = n.wrapping_add(1));
                Ok(())
            }
            Err(e) => {
                self.memory().unwritten(taken);
                Err(e)
            }
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_behind(&self) -> bool {
        self.write_behind
    }
}

impl SqliteStore {
    /// Waits for `done` to hold of run `id`: of what this process folded of it, if it
    /// folded any, else of the file (`stored`: runs folded before a restart or by another
    /// process).
    async fn wait_for_run<S>(
        &self,
        id: WorkflowId,
        timeout: Duration,
        done: impl Fn(Folded) -> bool,
        stored: S,
    ) -> Result<bool>
    where
        S: Fn(&Connection) -> Result<bool> + Send + Sync + 'static,
    {
        let remembered = || {
            let seqs = self.inner.seqs.lock().unwrap_or_else(|p| p.into_inner());
            seqs.get(&id).copied().map(&done)
        };
        self.wait_until(timeout, remembered, stored).await
    }
}

/// Bound of the in-memory sequence map (about 40 bytes a run): past it the ended runs are
/// forgotten, and if that is not enough the map starts over. Waits for a forgotten run fall
/// back to a query of the file.
const MAX_REMEMBERED_SEQS: usize = 100_000;

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(storage)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(storage)
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
/// JSON and ~1 KB compressed; it is rewritten at every write-out that touches the run, so its
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
        tokio::task::spawn_blocking(move || {
            let remember = || {
                // What was folded is remembered before the waiters wake: a waiter woken
                // first would find its run not ended yet and sleep until its timeout.
                let mut seqs = inner.seqs.lock().unwrap_or_else(|p| p.into_inner());
                if seqs.len() > MAX_REMEMBERED_SEQS {
                    seqs.retain(|_, folded| !folded.ended);
                    if seqs.len() > MAX_REMEMBERED_SEQS / 2 {
                        seqs.clear();
                    }
                }
                for (id, folded) in &latest {
                    let known = seqs.entry(*id).or_default();
                    if folded.seq >= known.seq {
                        *known = *folded;
                    }
                }
                drop(seqs);
                inner.changed.send_modify(|n| *n = n.wrapping_add(1));
            };
            if !inner.write_behind() {
                inner.fold_and_write(events)?;
                remember();
                return Ok(());
            }
            let too_much = {
                let mut memory = inner.memory();
                // Nothing else writes the file, so a view in memory is the file's or newer.
                inner.with_reader(|conn| memory.fold_batch(conn, events, false))?;
                memory.dirty.len() > MAX_DIRTY_RUNS || memory.dirty_events > MAX_DIRTY_EVENTS
            };
            // Readable now, whatever the write-out below does.
            remember();
            if too_much {
                inner.write_out()?;
            }
            Ok(())
        })
        .await
        .map_err(storage)?
    }

    async fn apply_definitions(&self, defs: &[DefinitionRegistered]) -> Result<()> {
        if defs.is_empty() {
            return Ok(());
        }
        let defs = defs.to_vec();
        self.write(move |conn| apply_definitions(conn, &defs)).await
    }

    async fn flush(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.write(move |conn| {
            inner.write_out_locked(conn)?;
            make_durable(conn).map_err(storage)
        })
        .await
    }

    async fn reset(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.write(move |conn| {
            // Under the writer's lock, so no write-out is half done; folds that pend are
            // dropped with the rows (the caller stopped the projector first).
            inner.memory().clear();
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
        if self.inner.write_behind() {
            let view = self.inner.memory().views.get(&id).cloned();
            if let Some(view) = view {
                return Ok(Some(Arc::unwrap_or_clone(view)));
            }
        }
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
        self.read_settled(move |conn| list(conn, &filter, limit, after))
            .await
    }

    async fn history(&self, id: WorkflowId) -> Result<Vec<EventEnvelope>> {
        self.read_settled(move |conn| {
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
        let view = self.workflow(workflow_id).await?;
        Ok(view.and_then(|v| v.tasks.into_iter().find(|t| t.task_id == id)))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.read_settled(|conn| {
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
        self.read_settled(move |conn| inbox(conn, &filter, limit))
            .await
    }

    async fn sla_breaches(&self, limit: usize) -> Result<Vec<SlaRecord>> {
        self.read_settled(move |conn| {
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
        let key = id.to_string();
        self.wait_for_run(
            id,
            timeout,
            |f| f.seq >= seq,
            move |conn| {
                let last: Option<i64> = conn
                    .prepare_cached("SELECT last_seq FROM workflows WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
                    .map_err(storage)?;
                Ok(last.is_some_and(|last| last as u64 >= seq))
            },
        )
        .await
    }

    async fn wait_for_end(&self, id: WorkflowId, timeout: Duration) -> Result<bool> {
        let key = id.to_string();
        self.wait_for_run(
            id,
            timeout,
            |f| f.ended,
            move |conn| {
                let status: Option<String> = conn
                    .prepare_cached("SELECT status FROM workflows WHERE id = ?1")
                    .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
                    .map_err(storage)?;
                Ok(status
                    .and_then(|s| status_from_str(&s))
                    .is_some_and(|s| s.is_terminal()))
            },
        )
        .await
    }

    async fn wait_for_definition(
        &self,
        name: &str,
        version: u32,
        timeout: Duration,
    ) -> Result<bool> {
        let name = name.to_owned();
        self.wait_until(
            timeout,
            || None,
            move |conn| {
                conn.prepare_cached("SELECT 1 FROM definitions WHERE name = ?1 AND version = ?2")
                    .and_then(|mut s| s.exists(params![name, version]))
                    .map_err(storage)
            },
        )
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

    use crate::conformance::Run;

    /// Rows a raw connection finds for run `id`: (history rows, view rows).
    fn rows_in_file(path: &Path, id: WorkflowId) -> (i64, i64) {
        let conn = Connection::open(path).expect("raw open");
        let count = |sql: &str| -> i64 {
            conn.query_row(sql, [id.to_string()], |r| r.get(0))
                .expect("count")
        };
        (
            count("SELECT COUNT(*) FROM events WHERE workflow_id = ?1"),
            count("SELECT COUNT(*) FROM workflows WHERE id = ?1"),
        )
    }

    fn finished_run() -> Run {
        let mut run = Run::start("write-behind", 1_000_000);
        run.step("a");
        run.step("b");
        run.complete();
        run
    }

    /// With write-behind an applied batch is read from memory at once and reaches the file
    /// at the next flush, or before a query memory cannot answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_behind_writes_the_file_at_flush_or_before_a_query() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read.db");
        let store = SqliteStore::open_exclusive(&path).expect("open");
        let run = finished_run();
        store.apply(&run.events).await.expect("apply");
        assert_eq!(rows_in_file(&path, run.id), (0, 0), "nothing written yet");
        assert_eq!(
            store.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );
        let short = Duration::from_millis(10);
        assert!(store.wait_for_end(run.id, short).await.expect("wait"));
        store.flush().await.expect("flush");
        let all = run.events.len() as i64;
        assert_eq!(rows_in_file(&path, run.id), (all, 1));
        // The ended run left memory once written; the file answers now.
        assert_eq!(
            store.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );

        let other = finished_run();
        store.apply(&other.events).await.expect("apply");
        assert_eq!(rows_in_file(&path, other.id), (0, 0));
        let listed = store
            .workflows(&WorkflowFilter::default(), 10, None)
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 2, "a listing sees every applied run");
        assert_eq!(
            rows_in_file(&path, other.id),
            (other.events.len() as i64, 1)
        );
    }

    /// A write-out that fails keeps its changes in memory, in front of what is folded
    /// after it: reads still see everything, and the next write-out writes it all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_out_keeps_its_changes_for_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read.db");
        let store = SqliteStore::open_exclusive(&path).expect("open");
        let raw = Connection::open(&path).expect("raw open");
        raw.execute_batch(
            "CREATE TABLE refuse (on_ INTEGER NOT NULL);
             INSERT INTO refuse VALUES (1);
             CREATE TRIGGER refuse_history BEFORE INSERT ON events
             WHEN (SELECT on_ FROM refuse) BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .expect("trigger");
        let run = finished_run();
        let (first, rest) = run.events.split_at(5);
        store.apply(first).await.expect("apply");
        let refused = store.flush().await.expect_err("the write-out is refused");
        assert!(
            refused.to_string().contains("refused by the test"),
            "{refused}"
        );
        store.apply(rest).await.expect("apply after the failure");
        assert_eq!(
            store.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );
        assert_eq!(rows_in_file(&path, run.id), (0, 0));

        raw.execute("UPDATE refuse SET on_ = 0", []).expect("allow");
        store.flush().await.expect("flush");
        drop(store);
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(reopened.history(run.id).await.expect("history"), run.events);
        assert_eq!(
            reopened.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );
    }

    /// Write-behind needs the file to itself: any other store is refused while it lives
    /// (stores that write at once may share a file among themselves).
    #[test]
    fn a_second_exclusive_store_on_one_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("read.db");
        let first = SqliteStore::open_exclusive(&path).expect("open");
        let Err(refused) = SqliteStore::open_exclusive(&path) else {
            panic!("a second exclusive store opened");
        };
        assert!(
            refused.to_string().contains("in use by another process"),
            "{refused}"
        );
        // Nor may a store that writes at once (a rebuild, a second projector) share it.
        assert!(SqliteStore::open(&path).is_err(), "a shared open beside it");
        drop(first);
        let shared = SqliteStore::open(&path).expect("open shared");
        let also = SqliteStore::open(&path).expect("stores that write at once share");
        assert!(
            SqliteStore::open_exclusive(&path).is_err(),
            "exclusive beside shared"
        );
        drop((shared, also));
        SqliteStore::open_exclusive(&path).expect("open after the others closed");
    }
}
