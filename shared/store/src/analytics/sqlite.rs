//! The embedded analytics backend (`distorch standalone`): facts in their own SQLite file.
//!
//! Own file rather than tables in the read store's: the read store's single writer is on
//! every command's read-your-writes path, and analytics writes must not queue behind it (nor
//! it behind them). The file can also be deleted and rebuilt from the log on its own.
//!
//! Idempotency: facts are upserted by their keys (workflow id; workflow id + task id +
//! attempt), and the fold skips events at or below a run's stored `last_seq`, all in one
//! transaction per `record`. Reports load the facts that ended in the window (indexed by
//! end time) and aggregate them with [`report`], the reference definition of the figures.
//! Durability is the read store's: WAL with `synchronous=NORMAL` (a `kill -9` loses nothing),
//! and `flush` syncs the WAL before the projector commits offsets past what was recorded.

use super::facts::{self, AttemptFact, AttemptStatus, RunFact, RunState};
use super::{Analytics, Bottlenecks, Cost, CostRates, Performance, Window, price, report};
use crate::{Result, StoreError};
use async_trait::async_trait;
use distorch_domain::event::EventEnvelope;
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    workflow_id    TEXT PRIMARY KEY,
    definition     TEXT NOT NULL,
    version        INTEGER NOT NULL,
    tenant         TEXT NOT NULL,
    status         TEXT NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    attempts       INTEGER NOT NULL,
    retries        INTEGER NOT NULL,
    last_seq       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_end ON runs (finished_at_ms);

CREATE TABLE IF NOT EXISTS attempts (
    workflow_id         TEXT NOT NULL,
    task_id             TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    definition          TEXT NOT NULL,
    version             INTEGER NOT NULL,
    tenant              TEXT NOT NULL,
    step_id             TEXT NOT NULL,
    step_key            TEXT NOT NULL,
    kind                TEXT NOT NULL,
    task                TEXT NOT NULL,
    queue               TEXT NOT NULL,
    status              TEXT NOT NULL,
    error_type          TEXT,
    task_scheduled_at_ms INTEGER NOT NULL,
    scheduled_at_ms     INTEGER NOT NULL,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    retried             INTEGER NOT NULL,
    backoff_ms          INTEGER NOT NULL,
    breaker_wait_ms     INTEGER NOT NULL,
    worker_id           TEXT,
    cpu_ms              REAL,
    peak_memory_bytes   INTEGER,
    seq                 INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, task_id, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_by_end ON attempts (finished_at_ms);
";

const RUN_COLUMNS: &str = "workflow_id, definition, version, tenant, status, started_at_ms,
    finished_at_ms, attempts, retries, last_seq";
const ATTEMPT_COLUMNS: &str = "workflow_id, task_id, attempt, definition, version, tenant,
    step_id, step_key, kind, task, queue, status, error_type, task_scheduled_at_ms,
    scheduled_at_ms, started_at_ms, finished_at_ms, retried, backoff_ms, breaker_wait_ms,
    worker_id, cpu_ms, peak_memory_bytes, seq";

/// The SQLite [`Analytics`]. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteAnalytics {
    conn: Arc<Mutex<Connection>>,
    /// With write-behind (see [`SqliteAnalytics::open_exclusive`]): what `record` was given
    /// and the file does not hold yet, in the order given.
    pending: Option<Arc<Mutex<Vec<EventEnvelope>>>>,
    /// Held while any clone lives: exclusive with write-behind, else shared (see
    /// [`crate::sqlite::lock_file`]).
    _lock: Arc<std::fs::File>,
}

/// Events waiting with write-behind beyond which `record` writes them at once.
const MAX_PENDING_EVENTS: usize = 50_000;

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

impl SqliteAnalytics {
    /// Opens (creating if needed) the analytics file at `path`, writing every `record`
    /// before it returns. Blocks briefly: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = crate::sqlite::lock_file(path, "analytics file", false)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Self::connect(path)?)),
            pending: None,
            _lock: Arc::new(lock),
        })
    }

    /// Opens the analytics file at `path` for this process alone, with write-behind:
    /// `record` keeps the events in memory, and they are folded into the file (each run's
    /// facts read and written once for all of them) at the next `flush`, before a report,
    /// or once tens of thousands wait. Like the read store's write-behind, a crash loses
    /// only what no offset commit covered. Fails if another process holds the file.
    pub fn open_exclusive(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let lock = crate::sqlite::lock_file(path, "analytics file", true)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(Self::connect(path)?)),
            pending: Some(Arc::default()),
            _lock: Arc::new(lock),
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        let conn = Connection::open(path).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(storage)?;
        conn.execute_batch(crate::sqlite::LAZY_WAL)
            .map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        conn.execute_batch(crate::sqlite::DURABILITY_SCHEMA)
            .map_err(storage)?;
        Ok(conn)
    }

    /// Runs `f` on the connection on tokio's blocking pool (SQLite calls block), after
    /// writing what waits in memory, so `f` sees every recorded event.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let pending = self.pending.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pending) = pending {
                write_out(&mut conn, &pending)?;
            }
            f(&mut conn)
        })
        .await
        .map_err(storage)?
    }
}

/// Folds what waits in `pending` into the file, in one transaction; on failure it waits
/// again, in front of whatever was recorded meanwhile.
fn write_out(conn: &mut Connection, pending: &Mutex<Vec<EventEnvelope>>) -> Result<()> {
    let lock = || pending.lock().unwrap_or_else(|p| p.into_inner());
    let events = std::mem::take(&mut *lock());
    if events.is_empty() {
        return Ok(());
    }
    record(conn, &events).inspect_err(|_| {
        let mut waiting = lock();
        let later = std::mem::replace(&mut *waiting, events);
        waiting.extend(later);
    })
}

fn bad_row(what: &str, value: &str) -> StoreError {
    StoreError::Storage(format!("unknown {what} {value:?} in the analytics file"))
}

fn status_of(s: &str) -> Result<Status> {
    use Status::*;
    [Running, Completed, Failed, Compensated, Cancelled]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| bad_row("run status", s))
}

fn run_from(r: &Row) -> Result<RunFact> {
    let id: String = r.get(0).map_err(storage)?;
    let status: String = r.get(4).map_err(storage)?;
    Ok(RunFact {
        workflow_id: id.parse().map_err(storage)?,
        definition: r.get(1).map_err(storage)?,
        version: r.get(2).map_err(storage)?,
        tenant: r.get(3).map_err(storage)?,
        status: status_of(&status)?,
        started_at_ms: r.get(5).map_err(storage)?,
        finished_at_ms: r.get(6).map_err(storage)?,
        attempts: r.get(7).map_err(storage)?,
        retries: r.get(8).map_err(storage)?,
        last_seq: r.get::<_, i64>(9).map_err(storage)? as u64,
    })
}

fn attempt_from(r: &Row) -> Result<AttemptFact> {
    let get_s = |i: usize| r.get::<_, String>(i).map_err(storage);
    let id = get_s(0)?;
    let kind = get_s(8)?;
    let status = get_s(11)?;
    Ok(AttemptFact {
        workflow_id: id.parse().map_err(storage)?,
        task_id: TaskId(get_s(1)?),
        attempt: r.get(2).map_err(storage)?,
        definition: get_s(3)?,
        version: r.get(4).map_err(storage)?,
        tenant: get_s(5)?,
        step_id: get_s(6)?,
        step_key: get_s(7)?,
        kind: facts::parse_kind(&kind).ok_or_else(|| bad_row("task kind", &kind))?,
        task: get_s(9)?,
        queue: get_s(10)?,
        status: AttemptStatus::parse(&status).ok_or_else(|| bad_row("status", &status))?,
        error_type: r.get(12).map_err(storage)?,
        task_scheduled_at_ms: r.get(13).map_err(storage)?,
        scheduled_at_ms: r.get(14).map_err(storage)?,
        started_at_ms: r.get(15).map_err(storage)?,
        finished_at_ms: r.get(16).map_err(storage)?,
        retried: r.get(17).map_err(storage)?,
        backoff_ms: r.get(18).map_err(storage)?,
        breaker_wait_ms: r.get(19).map_err(storage)?,
        worker_id: r.get(20).map_err(storage)?,
        cpu_ms: r.get(21).map_err(storage)?,
        peak_memory_bytes: r
            .get::<_, Option<i64>>(22)
            .map_err(storage)?
            .map(|b| b as u64),
        seq: r.get::<_, i64>(23).map_err(storage)? as u64,
    })
}

fn load_states(
    tx: &rusqlite::Transaction,
    ids: impl Iterator<Item = WorkflowId>,
) -> Result<HashMap<WorkflowId, RunState>> {
    let mut run = tx
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = ?1"
        ))
        .map_err(storage)?;
    let mut attempts = tx
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE workflow_id = ?1"
        ))
        .map_err(storage)?;
    let mut states = HashMap::new();
    for id in ids {
        let key = id.to_string();
        let Some(fact) = run
            .query_row([&key], |r| Ok(run_from(r)))
            .optional()
            .map_err(storage)?
            .transpose()?
        else {
            continue;
        };
        let mut rows = attempts.query([&key]).map_err(storage)?;
        let mut loaded = Vec::new();
        while let Some(r) = rows.next().map_err(storage)? {
            loaded.push(attempt_from(r)?);
        }
        states.insert(id, RunState::loaded(fact, loaded));
    }
    Ok(states)
}

fn record(conn: &mut Connection, events: &[EventEnvelope]) -> Result<()> {
    let tx = conn.transaction().map_err(storage)?;
    let mut ids: Vec<WorkflowId> = events.iter().map(|e| e.workflow_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut states = load_states(&tx, ids.into_iter())?;
    let changes = facts::fold(&mut states, events);
    {
        let mut run = tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO runs ({RUN_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))
            .map_err(storage)?;
        for r in &changes.runs {
            run.execute(params![
                r.workflow_id.to_string(),
                r.definition,
                r.version,
                r.tenant,
                r.status.as_str(),
                r.started_at_ms,
                r.finished_at_ms,
                r.attempts,
                r.retries,
                r.last_seq as i64,
            ])
            .map_err(storage)?;
        }
        let mut attempt = tx
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO attempts ({ATTEMPT_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                         ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
            ))
            .map_err(storage)?;
        for a in &changes.attempts {
            attempt
                .execute(params![
                    a.workflow_id.to_string(),
                    a.task_id.0,
                    a.attempt,
                    a.definition,
                    a.version,
                    a.tenant,
                    a.step_id,
                    a.step_key,
                    facts::kind_str(a.kind),
                    a.task,
                    a.queue,
                    a.status.as_str(),
                    a.error_type,
                    a.task_scheduled_at_ms,
                    a.scheduled_at_ms,
                    a.started_at_ms,
                    a.finished_at_ms,
                    a.retried,
                    a.backoff_ms,
                    a.breaker_wait_ms,
                    a.worker_id,
                    a.cpu_ms,
                    a.peak_memory_bytes.map(|b| b as i64),
                    a.seq as i64,
                ])
                .map_err(storage)?;
        }
    }
    tx.commit().map_err(storage)
}

fn runs_ended(conn: &Connection, w: Window) -> Result<Vec<RunFact>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE finished_at_ms >= ?1 AND finished_at_ms < ?2"
        ))
        .map_err(storage)?;
    let mut rows = stmt.query([w.from_ms, w.to_ms]).map_err(storage)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(storage)? {
        out.push(run_from(r)?);
    }
    Ok(out)
}

fn attempts_ended(conn: &Connection, w: Window) -> Result<Vec<AttemptFact>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts
             WHERE finished_at_ms >= ?1 AND finished_at_ms < ?2"
        ))
        .map_err(storage)?;
    let mut rows = stmt.query([w.from_ms, w.to_ms]).map_err(storage)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(storage)? {
        out.push(attempt_from(r)?);
    }
    Ok(out)
}

#[async_trait]
impl Analytics for SqliteAnalytics {
    async fn record(&self, events: &[EventEnvelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(pending) = &self.pending {
            let lock = || pending.lock().unwrap_or_else(|p| p.into_inner());
            let waiting = lock().len();
            if waiting + events.len() > MAX_PENDING_EVENTS {
                // `with` writes them out first. If that fails, this batch is not queued:
                // the caller's retry must not queue it twice.
                self.with(|_| Ok(())).await?;
            }
            lock().extend_from_slice(events);
            return Ok(());
        }
        let events = events.to_vec();
        self.with(move |conn| record(conn, &events)).await
    }

    async fn flush(&self) -> Result<()> {
        self.with(|conn| crate::sqlite::make_durable(conn).map_err(storage))
            .await
    }

    async fn reset(&self) -> Result<()> {
        if let Some(pending) = &self.pending {
            pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.with(|conn| {
            let tx = conn.transaction().map_err(storage)?;
            tx.execute_batch("DELETE FROM runs; DELETE FROM attempts;")
                .map_err(storage)?;
            tx.commit().map_err(storage)
        })
        .await
    }

    async fn performance(&self, window: Window) -> Result<Performance> {
        self.with(move |conn| {
            let runs = runs_ended(conn, window)?;
            let attempts = attempts_ended(conn, window)?;
            Ok(report::performance(window, &runs, &attempts))
        })
        .await
    }

    async fn bottlenecks(&self, window: Window) -> Result<Bottlenecks> {
        self.with(move |conn| Ok(report::bottlenecks(window, &attempts_ended(conn, window)?)))
            .await
    }

    async fn cost(&self, window: Window, rates: &CostRates) -> Result<Cost> {
        let usage = self
            .with(move |conn| Ok(report::usage(window, &attempts_ended(conn, window)?)))
            .await?;
        Ok(price(window, rates, usage))
    }
}
