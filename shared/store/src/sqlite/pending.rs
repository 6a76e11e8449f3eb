//! The read store's fold and its write, kept apart so the file can be written later than
//! the fold ran ("write-behind", see [`super::SqliteStore::open_exclusive`]).
//!
//! [`Memory::fold_batch`] folds a batch into the decoded views in [`Memory`] and records, per run,
//! what the file must be told ([`RunChanges`]): the new history rows, and what the view
//! looked like in the file before, so that dead letters, inbox rows and SLA alerts are
//! written as differences. [`write_changes`] writes a set of runs' changes in one
//! transaction. Between the two, the views in memory are the truth; the file catches up
//! at the next write-out.

use super::{StoredView, load_view, storage, to_json};
use crate::{HumanTask, Result, SlaRecord, group_by_run};
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::view::{DeadLetter, WorkflowView};
use distorch_domain::{TaskId, WorkflowId};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Views in memory beyond which the clean ones (what the file holds already) are dropped;
/// they are read back from the file when their runs move again.
const MAX_CACHED_VIEWS: usize = 4_096;

/// What the store holds in memory: decoded views, and the changes the file lacks.
#[derive(Default)]
pub(super) struct Memory {
    /// The current view of every run with changes not written yet, and of the running runs
    /// folded lately (those equal to the file's copy), so a batch folds its events into them
    /// instead of reading, decompressing and parsing each touched view again. An ended run
    /// leaves once its last changes are written. Shared, so that a write-out takes them
    /// without copying; a fold copies a view a write-out still holds.
    pub views: HashMap<WorkflowId, Arc<WorkflowView>>,
    /// Runs folded since their last write-out.
    pub dirty: HashMap<WorkflowId, RunChanges>,
    /// Runs whose changes a write-out took and has not committed yet: until it has, the
    /// file holds an older view than memory, so their views must stay.
    writing: HashSet<WorkflowId>,
    /// History rows in `dirty`, to bound what waits in memory.
    pub dirty_events: usize,
    /// Events given to [`Memory::fold_batch`] so far: a position in the log's order across
    /// batches (a batch is folded run by run), so dead letters go in parking order.
    events_seen: u64,
}

/// What the file must learn of one run at the next write-out.
pub(super) struct RunChanges {
    /// The run's view as the file holds it (or will, once the write-out in flight commits),
    /// reduced to what the rows beside the view are diffed against.
    parked_before: Vec<TaskId>,
    humans_before: HashMap<TaskId, HumanTask>,
    alerts_before: usize,
    /// Set when the run started since the last write-out: its row is new.
    created_at_ms: i64,
    /// The time of the newest event folded.
    updated_at_ms: i64,
    /// When each human task created since the last write-out was created.
    humans_created: HashMap<TaskId, i64>,
    /// Sequence number and time of each SLA event folded since, in order.
    alert_events: Vec<(u64, i64)>,
    /// Where in the log's order (see `Memory::events_seen`) each task parked since was
    /// parked.
    parked_order: HashMap<TaskId, u64>,
    /// Every event folded since, in order: the history rows to insert.
    history: Vec<EventEnvelope>,
}

impl RunChanges {
    fn since(view: Option<&WorkflowView>) -> Self {
        Self {
            parked_before: parked(view),
            humans_before: view
                .map(|v| {
                    HumanTask::all_of(v)
                        .map(|h| (h.task_id.clone(), h))
                        .collect()
                })
                .unwrap_or_default(),
            alerts_before: view.map_or(0, |v| v.sla.len()),
            created_at_ms: 0,
            updated_at_ms: 0,
            humans_created: HashMap::new(),
            alert_events: Vec::new(),
            parked_order: HashMap::new(),
            history: Vec::new(),
        }
    }

    /// Puts `later` (folded after `self`) behind `self`, as if both were one span of folds:
    /// a write-out that failed hands its changes back this way.
    fn absorb(&mut self, later: RunChanges) {
        if self.created_at_ms == 0 {
            self.created_at_ms = later.created_at_ms;
        }
        self.updated_at_ms = later.updated_at_ms.max(self.updated_at_ms);
        for (task, at) in later.humans_created {
            self.humans_created.entry(task).or_insert(at);
        }
        self.alert_events.extend(later.alert_events);
        self.parked_order.extend(later.parked_order);
        self.history.extend(later.history);
    }
}

/// The changes of one run taken for a write-out, with its view at that moment (`None` for
/// a run whose start was never seen: its events go to the history only).
pub(super) struct Taken {
    id: WorkflowId,
    changes: RunChanges,
    view: Option<Arc<WorkflowView>>,
}

impl Memory {
    /// Folds `events` (any runs, log order per run) into the views, recording what the file
    /// must be told (the events themselves become its history rows). `conn` reads the views of runs not in memory. With `verify`, a view in
    /// memory that has nothing pending is used only if the file still holds that version:
    /// another process writing the same file (a second projector) may have moved the run on.
    pub fn fold_batch(
        &mut self,
        conn: &Connection,
        events: Vec<EventEnvelope>,
        verify: bool,
    ) -> Result<()> {
        // Where each `TaskParked` of the batch stands in log order.
        let parked_at: HashMap<(WorkflowId, u64), u64> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.event, Event::TaskParked { .. }))
            .map(|(i, e)| ((e.workflow_id, e.seq), self.events_seen + i as u64))
            .collect();
        self.events_seen += events.len() as u64;
        for (id, run_events) in group_by_run(events) {
            // Ahead of the file: changes pending or being written.
            let ahead = self.dirty.contains_key(&id) || self.writing.contains(&id);
            let view = match self.views.remove(&id) {
                Some(view) if ahead || !verify || stored_seq(conn, id)? == Some(view.last_seq) => {
                    Some(view)
                }
                // A run with pending changes but no view has only history: nothing to read.
                None if ahead => None,
                _ => load_view(conn, id)?.map(Arc::new),
            };
            let folded_seq = view.as_ref().map_or(0, |v| v.last_seq);
            let mut view = view;
            for e in run_events {
                // Already folded in, so already in the history.
                if e.seq <= folded_seq {
                    continue;
                }
                let changes = self
                    .dirty
                    .entry(id)
                    .or_insert_with(|| RunChanges::since(view.as_deref()));
                self.dirty_events += 1;
                match view.as_mut() {
                    Some(v) => Arc::make_mut(v).apply(&e),
                    None => {
                        view = WorkflowView::start(&e).map(Arc::new);
                        if view.is_none() {
                            tracing::warn!(
                                workflow_id = %id, seq = e.seq, event = e.event.name(),
                                "event for a run whose start was never seen; history only"
                            );
                            changes.history.push(e);
                            continue;
                        }
                        changes.created_at_ms = e.at_ms;
                    }
                }
                match &e.event {
                    Event::HumanTaskCreated { task_id, .. } => {
                        changes.humans_created.insert(task_id.clone(), e.at_ms);
                    }
                    Event::SlaWarned { .. } | Event::SlaBreached { .. } => {
                        changes.alert_events.push((e.seq, e.at_ms));
                    }
                    Event::TaskParked { task_id, .. } => {
                        let at = parked_at.get(&(id, e.seq)).copied().unwrap_or(u64::MAX);
                        changes.parked_order.insert(task_id.clone(), at);
                    }
                    _ => {}
                }
                changes.updated_at_ms = e.at_ms;
                changes.history.push(e);
            }
            if let Some(view) = view {
                self.views.insert(id, view);
            }
        }
        self.forget_clean_views_over(MAX_CACHED_VIEWS);
        Ok(())
    }

    /// Takes every pending change, with the current view of each run, for a write-out.
    pub fn take(&mut self) -> Vec<Taken> {
        self.dirty_events = 0;
        let taken: Vec<Taken> = self
            .dirty
            .drain()
            .map(|(id, changes)| Taken {
                id,
                changes,
                view: self.views.get(&id).cloned(),
            })
            .collect();
        self.writing = taken.iter().map(|t| t.id).collect();
        taken
    }

    /// After `taken` committed: ended runs with nothing newer pending leave memory.
    pub fn written(&mut self, taken: &[Taken]) {
        self.writing.clear();
        for t in taken {
            let ended = t.view.as_ref().is_some_and(|v| v.status.is_terminal());
            if ended && !self.dirty.contains_key(&t.id) {
                self.views.remove(&t.id);
            }
        }
    }

    /// After writing `taken` failed: its changes go back in front of whatever was folded
    /// since, so the next write-out writes both.
    pub fn unwritten(&mut self, taken: Vec<Taken>) {
        self.writing.clear();
        for t in taken {
            let mut changes = t.changes;
            self.dirty_events += changes.history.len();
            if let Some(later) = self.dirty.remove(&t.id) {
                changes.absorb(later);
            }
            self.dirty.insert(t.id, changes);
        }
    }

    /// Whether the file holds everything folded: nothing pending, no write-out in flight.
    pub fn settled(&self) -> bool {
        self.dirty.is_empty() && self.writing.is_empty()
    }

    /// Forgets every view and every pending change (the file is being emptied).
    pub fn clear(&mut self) {
        *self = Memory::default();
    }

    /// Drops the views that equal the file's copy once more than `max` are held; those
    /// with changes pending or being written stay.
    fn forget_clean_views_over(&mut self, max: usize) {
        if self.views.len() > max {
            let (dirty, writing) = (&self.dirty, &self.writing);
            self.views
                .retain(|id, _| dirty.contains_key(id) || writing.contains(id));
        }
    }
}

fn stored_seq(conn: &Connection, id: WorkflowId) -> Result<Option<u64>> {
    conn.prepare_cached("SELECT last_seq FROM workflows WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id.to_string()], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map(|seq| seq.map(|s| s as u64))
        .map_err(storage)
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

/// Writes the runs' changes in `tx` (the caller commits): history rows, each view once,
/// and the dead-letter, inbox and SLA rows that changed with it. New dead letters go in the
/// order their tasks were parked, across runs, as the queue is served in row order.
pub(super) fn write_changes(tx: &rusqlite::Transaction<'_>, taken: &[Taken]) -> Result<()> {
    // (order parked, task id, run id, item) of every task parked since the last write-out.
    let mut parks: Vec<(u64, &str, String, String)> = Vec::new();
    {
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

        for Taken { id, changes, view } in taken {
            let id_text = id.to_string();
            for e in &changes.history {
                history
                    .execute(params![id_text, e.seq as i64, to_json(e)?])
                    .map_err(storage)?;
            }
            let Some(view) = view else { continue };
            upsert
                .execute(params![
                    id_text,
                    view.definition,
                    view.version,
                    view.status.as_str(),
                    changes.created_at_ms,
                    changes.updated_at_ms,
                    view.last_seq as i64,
                    StoredView::encode(view)?,
                ])
                .map_err(storage)?;

            let parked_after = parked(Some(view));
            for t in changes
                .parked_before
                .iter()
                .filter(|t| !parked_after.contains(t))
            {
                unpark.execute([&t.0]).map_err(storage)?;
            }
            for t in view
                .tasks
                .iter()
                .filter(|t| t.parked && !changes.parked_before.contains(&t.task_id))
            {
                let order = changes
                    .parked_order
                    .get(&t.task_id)
                    .copied()
                    .unwrap_or(u64::MAX);
                parks.push((
                    order,
                    &t.task_id.0,
                    id_text.clone(),
                    to_json(&DeadLetter::from(t))?,
                ));
            }

            for h in HumanTask::all_of(view) {
                if changes.humans_before.get(&h.task_id) == Some(&h) {
                    continue;
                }
                // An existing row keeps its creation time (the upsert leaves it alone).
                let created = changes
                    .humans_created
                    .get(&h.task_id)
                    .copied()
                    .unwrap_or(changes.updated_at_ms);
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
            let new_alerts = view.sla.get(changes.alerts_before..).unwrap_or_default();
            for ((seq, at_ms), a) in changes.alert_events.iter().zip(new_alerts) {
                alert
                    .execute(params![
                        id_text,
                        *seq as i64,
                        at_ms,
                        to_json(&SlaRecord::new(view, a))?
                    ])
                    .map_err(storage)?;
            }
        }
        parks.sort_by_key(|(order, ..)| *order);
        for (_, task_id, id_text, item) in &parks {
            park.execute(params![task_id, id_text, item])
                .map_err(storage)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::Run;

    fn file() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(super::super::SCHEMA).expect("schema");
        conn
    }

    /// While a write-out is in flight the file holds older views than memory: dropping
    /// clean views then must keep those, or the next batch of such a run would be folded
    /// onto the file's older view and lose the events in between.
    #[test]
    fn views_being_written_are_never_dropped() {
        let conn = file();
        let mut memory = Memory::default();
        let mut run = Run::start("pinned", 1_000);
        run.step("a");
        let (first, rest) = run.events.split_at(3);
        memory
            .fold_batch(&conn, first.to_vec(), false)
            .expect("fold");
        let taken = memory.take();
        memory.forget_clean_views_over(0);
        assert!(
            memory.views.contains_key(&run.id),
            "kept while being written"
        );

        // A batch folded meanwhile continues from memory, not from the (empty) file.
        memory
            .fold_batch(&conn, rest.to_vec(), false)
            .expect("fold");
        assert_eq!(*memory.views[&run.id], run.fold());

        memory.written(&taken);
        memory.take();
        memory.written(&[]);
        memory.forget_clean_views_over(0);
        assert!(memory.views.is_empty(), "clean views go once written");
    }
}
