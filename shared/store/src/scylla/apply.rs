//! The write path: `apply` (read-modify-write of each run, see the module docs of
//! `scylla.rs`) and definition registration.

use super::keys::{self, ANY};
use super::{BucketKey, MAX_KNOWN_BUCKETS, ScyllaStore, cql_error, storage};
use crate::{HumanTask, Result, SlaRecord, group_by_run};
use distorch_domain::WorkflowId;
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope};
use distorch_domain::view::{DeadLetter, WorkflowView};
use futures::future::{BoxFuture, FutureExt, try_join_all};
use futures::{StreamExt, TryStreamExt};
use scylla::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;

/// Runs of one batch written at once; each is a handful of single-partition writes.
const RUNS_IN_FLIGHT: usize = 32;
/// Events per history batch: all in one partition, kept well under the batch size limit.
const EVENTS_PER_BATCH: usize = 100;

/// What `workflows` holds about a run.
#[derive(Default)]
pub(super) struct StoredRun {
    pub view: Option<WorkflowView>,
    pub created_at_ms: i64,
    /// Task id -> when it was parked (its `dead_letters` key).
    pub parked_at: HashMap<String, i64>,
    /// Human task id -> when it was created (its `human_tasks` key).
    pub inbox_created: HashMap<String, i64>,
}

#[derive(DeserializeRow)]
struct RunRow {
    view: String,
    created_at_ms: i64,
    parked_at: Option<HashMap<String, i64>>,
    inbox_created: Option<HashMap<String, i64>>,
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(storage)
}

/// What folding a run's new events produced, besides the view.
#[derive(Default)]
struct Folded<'a> {
    /// Events past the stored `last_seq`, for the history.
    new_events: Vec<&'a EventEnvelope>,
    humans_created: HashMap<String, i64>,
    parked: HashMap<String, i64>,
    /// `(seq, at_ms)` of each SLA event, in order.
    alerts: Vec<(u64, i64)>,
    updated_at_ms: i64,
}

type Write<'a> = BoxFuture<'a, Result<()>>;

impl ScyllaStore {
    pub(super) async fn load_run(&self, id: WorkflowId) -> Result<StoredRun> {
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.st.load_run, (id.0,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(storage)?;
        let Some(row) = rows.maybe_first_row::<RunRow>().map_err(storage)? else {
            return Ok(StoredRun::default());
        };
        Ok(StoredRun {
            view: Some(serde_json::from_str(&row.view).map_err(storage)?),
            created_at_ms: row.created_at_ms,
            parked_at: row.parked_at.unwrap_or_default(),
            inbox_created: row.inbox_created.unwrap_or_default(),
        })
    }

    pub(super) async fn last_seq(&self, id: WorkflowId) -> Result<Option<u64>> {
        let rows = self
            .inner
            .session
            .execute_unpaged(&self.inner.st.run_seq, (id.0,))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(storage)?;
        let row = rows.maybe_first_row::<(i64,)>().map_err(storage)?;
        Ok(row.map(|(seq,)| u64::try_from(seq).unwrap_or(0)))
    }

    pub(super) async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<()> {
        let runs: Vec<_> = group_by_run(events)
            .into_iter()
            .map(|(id, run_events)| self.apply_run(id, run_events))
            .collect();
        futures::stream::iter(runs)
            .buffer_unordered(RUNS_IN_FLIGHT)
            .try_collect()
            .await
    }

    fn write<'a>(
        &'a self,
        st: &'a PreparedStatement,
        values: impl SerializeRow + Send + 'a,
    ) -> Write<'a> {
        async move {
            self.inner
                .session
                .execute_unpaged(st, values)
                .await
                .map(drop)
                .map_err(cql_error)
        }
        .boxed()
    }

    /// Writes a `buckets` row unless this process already did.
    fn note_bucket(&self, key: BucketKey) -> Option<Write<'_>> {
        {
            let known = self
                .inner
                .known_buckets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if known.contains(&key) {
                return None;
            }
        }
        Some(
            async move {
                let (kind, k1, k2, bucket) = &key;
                self.write(&self.inner.st.add_bucket, (*kind, k1, k2, *bucket))
                    .await?;
                let mut known = self
                    .inner
                    .known_buckets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if known.len() >= MAX_KNOWN_BUCKETS {
                    known.clear();
                }
                known.insert(key);
                Ok(())
            }
            .boxed(),
        )
    }

    async fn apply_run(&self, id: WorkflowId, events: Vec<&EventEnvelope>) -> Result<()> {
        let stored = self.load_run(id).await?;
        let before = stored.view.clone();
        let stored_seq = before.as_ref().map_or(0, |v| v.last_seq);
        let mut view = stored.view.clone();
        let mut created_at_ms = stored.created_at_ms;
        let mut folded = Folded::default();

        for e in events {
            if e.seq <= stored_seq {
                continue;
            }
            folded.new_events.push(e);
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
                    folded.humans_created.insert(task_id.0.clone(), e.at_ms);
                }
                Event::TaskParked { task_id, .. } => {
                    folded.parked.insert(task_id.0.clone(), e.at_ms);
                }
                Event::SlaWarned { .. } | Event::SlaBreached { .. } => {
                    folded.alerts.push((e.seq, e.at_ms));
                }
                _ => {}
            }
            folded.updated_at_ms = e.at_ms;
        }

        self.write_history(id, &folded.new_events).await?;
        let Some(view) = view else { return Ok(()) };
        if view.last_seq == stored_seq {
            return Ok(());
        }
        // Every derived row first, the run's row last: it is the commit point.
        let ts = i64::try_from(view.last_seq).unwrap_or(i64::MAX);
        let mut writes = self.listing_writes(&view, before.as_ref(), created_at_ms, &folded, ts);
        let parked_at = self.dead_letter_writes(&view, &stored, &folded, ts, &mut writes)?;
        let inbox_created = self.inbox_writes(&view, &stored, &folded, ts, &mut writes)?;
        self.alert_writes(&view, before.as_ref(), &folded, ts, &mut writes)?;
        try_join_all(writes).await?;

        let st = &self.inner.st;
        let values = (
            id.0,
            &view.definition,
            view.version as i32,
            view.status.as_str(),
            created_at_ms,
            folded.updated_at_ms,
            ts,
            to_json(&view)?,
            parked_at,
            inbox_created,
            ts,
        );
        self.write(&st.save_run, values).await
    }

    async fn write_history(&self, id: WorkflowId, events: &[&EventEnvelope]) -> Result<()> {
        // One partition: an unlogged batch is one request, applied atomically there.
        for chunk in events.chunks(EVENTS_PER_BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            let mut values = Vec::with_capacity(chunk.len());
            for e in chunk {
                batch.append_statement(self.inner.st.insert_event.clone());
                values.push((id.0, e.seq as i64, to_json(e)?));
            }
            self.inner
                .session
                .batch(&batch, values)
                .await
                .map_err(cql_error)?;
        }
        Ok(())
    }

    /// The run's four listing rows (rewritten: `updated_at` moved), the rows of a status
    /// it left, and the `buckets` rows of its scopes.
    fn listing_writes(
        &self,
        view: &WorkflowView,
        before: Option<&WorkflowView>,
        created_at_ms: i64,
        folded: &Folded,
        ts: i64,
    ) -> Vec<Write<'_>> {
        let st = &self.inner.st;
        let (day, shard) = (keys::day(created_at_ms), keys::shard(view.workflow_id));
        let id = view.workflow_id.to_string();
        let status = view.status.as_str();
        let def = &view.definition;
        let mut writes = Vec::new();
        if let Some(old) = before.map(|b| b.status.as_str()).filter(|s| *s != status) {
            for definition_key in [ANY, def] {
                let key = (
                    ts,
                    old,
                    definition_key.to_owned(),
                    day,
                    shard,
                    created_at_ms,
                    id.clone(),
                );
                writes.push(self.write(&st.delete_list_row, key));
            }
        }
        for (status_key, definition_key) in [(ANY, ANY), (status, ANY), (ANY, def), (status, def)] {
            let row = (
                status_key,
                definition_key.to_owned(),
                day,
                shard,
                created_at_ms,
                id.clone(),
                def.clone(),
                view.version as i32,
                status,
                folded.updated_at_ms,
                ts,
            );
            writes.push(self.write(&st.list_row, row));
            let bucket = (
                "runs",
                status_key.to_owned(),
                definition_key.to_owned(),
                day,
            );
            writes.extend(self.note_bucket(bucket));
        }
        writes
    }

    /// Parks and unparks; returns the run's new task id -> parked-at map.
    fn dead_letter_writes<'a>(
        &'a self,
        view: &WorkflowView,
        stored: &StoredRun,
        folded: &Folded,
        ts: i64,
        writes: &mut Vec<Write<'a>>,
    ) -> Result<HashMap<String, i64>> {
        let st = &self.inner.st;
        let shard = keys::shard(view.workflow_id);
        let before: HashMap<String, DeadLetter> = stored
            .view
            .iter()
            .flat_map(|v| v.dead_letters())
            .map(|d| (d.task_id.0.clone(), d))
            .collect();
        let mut parked_at = HashMap::new();
        for letter in view.dead_letters() {
            let task = letter.task_id.0.clone();
            // Parked in this batch: a new place in the queue; else it keeps its place.
            let at = folded
                .parked
                .get(&task)
                .or_else(|| stored.parked_at.get(&task))
                .copied()
                .unwrap_or(folded.updated_at_ms);
            let same_place = stored.parked_at.get(&task) == Some(&at);
            if !same_place || before.get(&task) != Some(&letter) {
                let row = (shard, at, task.clone(), to_json(&letter)?, ts);
                writes.push(self.write(&st.park, row));
            }
            parked_at.insert(task, at);
        }
        for (task, at) in &stored.parked_at {
            if parked_at.get(task) != Some(at) {
                writes.push(self.write(&st.unpark, (ts, shard, *at, task.clone())));
            }
        }
        Ok(parked_at)
    }

    /// Inbox rows of every human task that changed; returns the new task id -> created map.
    fn inbox_writes<'a>(
        &'a self,
        view: &WorkflowView,
        stored: &StoredRun,
        folded: &Folded,
        ts: i64,
        writes: &mut Vec<Write<'a>>,
    ) -> Result<HashMap<String, i64>> {
        let st = &self.inner.st;
        let before: HashMap<String, HumanTask> = stored
            .view
            .iter()
            .flat_map(HumanTask::all_of)
            .map(|h| (h.task_id.0.clone(), h))
            .collect();
        let mut created = HashMap::new();
        for h in HumanTask::all_of(view) {
            let task = h.task_id.0.clone();
            // A task keeps the key it was first written under.
            let at = stored
                .inbox_created
                .get(&task)
                .or_else(|| folded.humans_created.get(&task))
                .copied()
                .unwrap_or(folded.updated_at_ms);
            created.insert(task.clone(), at);
            let old = before.get(&task);
            if old == Some(&h) {
                continue;
            }
            let new_keys = keys::inbox_keys(&h, at);
            for (scope, class, bucket) in old.map(|o| keys::inbox_keys(o, at)).unwrap_or_default() {
                if !new_keys.contains(&(scope.clone(), class, bucket)) {
                    let key = (ts, scope, class, bucket, at, task.clone());
                    writes.push(self.write(&st.delete_inbox_row, key));
                }
            }
            let item = to_json(&h)?;
            for (scope, class, bucket) in new_keys {
                writes.extend(self.note_bucket(("inbox", scope.clone(), class.to_owned(), bucket)));
                let row = (scope, class, bucket, at, task.clone(), item.clone(), ts);
                writes.push(self.write(&st.inbox_row, row));
            }
        }
        Ok(created)
    }

    /// One row per SLA event folded in (the fold adds exactly one alert per event, in order).
    fn alert_writes<'a>(
        &'a self,
        view: &WorkflowView,
        before: Option<&WorkflowView>,
        folded: &Folded,
        ts: i64,
        writes: &mut Vec<Write<'a>>,
    ) -> Result<()> {
        let from = before.map_or(0, |v| v.sla.len());
        let new_alerts = view.sla.get(from..).unwrap_or_default();
        for (&(seq, at_ms), alert) in folded.alerts.iter().zip(new_alerts) {
            let day = keys::day(at_ms);
            writes.extend(self.note_bucket(("sla", String::new(), String::new(), day)));
            let item = to_json(&SlaRecord::new(view, alert))?;
            let row = (
                day,
                at_ms,
                view.workflow_id.to_string(),
                seq as i64,
                item,
                ts,
            );
            writes.push(self.write(&self.inner.st.sla_alert, row));
        }
        Ok(())
    }

    /// Registers one definition: the first registration of a version stands (a
    /// lightweight transaction: rare, and "first wins" needs one), then its catalog row is
    /// written from what is stored, so a retry after a failure in between repairs it.
    pub(super) async fn register(&self, d: &DefinitionRegistered) -> Result<()> {
        let st = &self.inner.st;
        let version = d.version as i32;
        self.write(&st.register_definition, (&d.name, version, to_json(d)?))
            .await?;
        let Some(stored) = self.find_definition(&d.name, Some(d.version)).await? else {
            return Err(storage(format!(
                "definition {} v{} not readable after registering it",
                d.name, d.version
            )));
        };
        let description = stored.source.get("description").and_then(|v| v.as_str());
        self.write(&st.catalog_row, (&d.name, version, description))
            .await
    }
}
