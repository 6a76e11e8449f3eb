//! The pure fold from workflow events to analytics facts, shared by every backend.
//!
//! A backend loads the [`RunState`] of each run in a batch (its [`RunFact`] and the latest
//! attempt of each of its tasks), calls [`fold`], and stores what it returns. Facts carry
//! the sequence number of the last event folded into them (`last_seq`, `seq`), which makes
//! the fold idempotent and gives ClickHouse's `ReplacingMergeTree` its version column.
//!
//! Choices the events leave open:
//! - Attempt numbers come from the events. A human task has none: each `HumanTaskCreated`
//!   for it (the first, and one after every operator retry) opens the next attempt, and the
//!   events about it apply to its latest attempt.
//! - A deferred attempt (breaker open) ends `deferred`; the engine schedules the next attempt
//!   at `retry_at_ms`, and the time until then is breaker wait, not backoff.
//! - An attempt is `retried` when another attempt follows it: a failure with `retry_at_ms`
//!   (its backoff runs to that time) or an operator retry (no backoff: the time parked is the
//!   operator's, not the step's).
//! - A run's end cancels the attempts still open, as the read model does for human tasks:
//!   nothing is left waiting that can no longer end.
//! - Tenant: the run input's `tenant` string, else [`DEFAULT_TENANT`]. Child runs do not
//!   inherit it (their start does not carry the parent's input); pass it in their input.

use distorch_domain::event::{Event, EventEnvelope, TaskKind};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The tenant of a run whose input names none.
pub const DEFAULT_TENANT: &str = "default";

/// One run. Keyed by workflow id.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFact {
    /// The run.
    pub workflow_id: WorkflowId,
    /// Name of the run's definition.
    pub definition: String,
    /// Version of the definition the run was started with.
    pub version: u32,
    /// The run input's `tenant`, else [`DEFAULT_TENANT`].
    pub tenant: String,
    /// `running` until it ends, then `completed`, `failed`, `compensated` or `cancelled`.
    pub status: Status,
    /// When the run started (ms since the Unix epoch).
    pub started_at_ms: i64,
    /// When the run ended (ms since the Unix epoch); `None` while it runs.
    pub finished_at_ms: Option<i64>,
    /// Attempts scheduled, and those followed by another attempt.
    pub attempts: u32,
    /// Of `attempts`, those followed by another attempt.
    pub retries: u32,
    /// Last event folded in.
    pub last_seq: u64,
}

/// How an attempt stands or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttemptStatus {
    /// Waiting for a worker (or, for a human task, for someone to claim it).
    Scheduled,
    /// Taken by a worker (or claimed by a person).
    Running,
    /// Ended with an output.
    Completed,
    /// Ended with an error (a timeout included).
    Failed,
    /// Not made: the target's circuit breaker was open.
    Deferred,
    /// Ended by a cancellation, or left open when its run ended.
    Cancelled,
    /// Its task was skipped by an operator.
    Skipped,
}

impl AttemptStatus {
    const ALL: [AttemptStatus; 7] = [
        Self::Scheduled,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Deferred,
        Self::Cancelled,
        Self::Skipped,
    ];

    /// The stored name (`scheduled`, `running`, ...), as backends write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Deferred => "deferred",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }

    /// The status stored as `s`; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the attempt ended: anything but `scheduled` and `running`.
    pub fn is_ended(self) -> bool {
        !matches!(self, Self::Scheduled | Self::Running)
    }
}

/// The stored (and reported) name of a task kind: `step`, `compensation` or `human`.
pub fn kind_str(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Step => "step",
        TaskKind::Compensation => "compensation",
        TaskKind::Human => "human",
    }
}

/// The task kind stored as `s`; `None` for an unknown name.
pub fn parse_kind(s: &str) -> Option<TaskKind> {
    [TaskKind::Step, TaskKind::Compensation, TaskKind::Human]
        .into_iter()
        .find(|k| kind_str(*k) == s)
}

/// One attempt of a task. Keyed by workflow id + task id + attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFact {
    /// The run.
    pub workflow_id: WorkflowId,
    /// The task, unique in its run.
    pub task_id: TaskId,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Name of the run's definition.
    pub definition: String,
    /// Version of the run's definition.
    pub version: u32,
    /// The run's tenant (see [`RunFact::tenant`]).
    pub tenant: String,
    /// The step of the definition.
    pub step_id: String,
    /// The step instance: the step id, prefixed by `<foreach id>[<i>].` inside a loop.
    pub step_key: String,
    /// Step task, compensation or human task.
    pub kind: TaskKind,
    /// Task type (`human` for human tasks).
    pub task: String,
    /// Empty for human tasks.
    pub queue: String,
    /// How the attempt stands or ended.
    pub status: AttemptStatus,
    /// The failure's `type` (`breaker_open` for a deferral).
    pub error_type: Option<String>,
    /// When the task's first attempt was scheduled.
    pub task_scheduled_at_ms: i64,
    /// When this attempt was scheduled (a human task: created), ms since the Unix epoch.
    pub scheduled_at_ms: i64,
    /// When a worker took it (a human task: when claimed); `None` until then.
    pub started_at_ms: Option<i64>,
    /// When it ended; `None` while open.
    pub finished_at_ms: Option<i64>,
    /// Another attempt follows this one.
    pub retried: bool,
    /// Failure to the next attempt's retry time.
    pub backoff_ms: i64,
    /// Deferral to the retry time.
    pub breaker_wait_ms: i64,
    /// The worker (or, for a human task, the person) that took it.
    pub worker_id: Option<String>,
    /// Worker CPU time the attempt reported on completion or failure, in ms.
    pub cpu_ms: Option<f64>,
    /// Peak worker memory the attempt reported, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Last event folded in.
    pub seq: u64,
}

impl AttemptFact {
    /// Scheduled to started; `None` until it started.
    pub fn queue_wait_ms(&self) -> Option<i64> {
        Some(self.started_at_ms? - self.scheduled_at_ms)
    }

    /// Started to ended; `None` unless it both started and ended.
    pub fn run_ms(&self) -> Option<i64> {
        Some(self.finished_at_ms? - self.started_at_ms?)
    }

    /// A human task's time in the inbox, claimed or not.
    pub fn human_wait_ms(&self) -> Option<i64> {
        (self.kind == TaskKind::Human).then_some(self.finished_at_ms? - self.scheduled_at_ms)
    }

    /// For the last attempt of an ended task: its first schedule to this attempt's end.
    pub fn end_to_end_ms(&self) -> Option<i64> {
        let last = self.status.is_ended() && self.status != AttemptStatus::Deferred;
        (last && !self.retried).then_some(self.finished_at_ms? - self.task_scheduled_at_ms)
    }
}

/// What the fold knows of one run: its fact and the latest attempt of each task (plus
/// every attempt changed since the state was loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// The run's fact.
    pub run: RunFact,
    attempts: BTreeMap<(TaskId, u32), AttemptFact>,
    dirty_run: bool,
    dirty: BTreeSet<(TaskId, u32)>,
}

/// The facts a batch changed, to be stored (upserted) by the backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Run facts that changed.
    pub runs: Vec<RunFact>,
    /// Attempt facts that changed (new ones included).
    pub attempts: Vec<AttemptFact>,
}

impl Changes {
    /// Whether the batch changed no fact (nothing to store).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.attempts.is_empty()
    }
}

/// The tenant named by a run's input.
pub fn tenant_of(input: &Value) -> String {
    match input.get("tenant").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => DEFAULT_TENANT.to_owned(),
    }
}

/// Folds `events` into `states` (the stored state of their runs, as loaded by the backend)
/// and returns every fact that changed. Runs not in `states` start at their
/// `WorkflowStarted`; events of a run never started are ignored.
pub fn fold(states: &mut HashMap<WorkflowId, RunState>, events: &[EventEnvelope]) -> Changes {
    let mut touched = Vec::new();
    for e in events {
        match states.get_mut(&e.workflow_id) {
            Some(state) => state.apply(e),
            None => match RunState::start(e) {
                Some(state) => {
                    states.insert(e.workflow_id, state);
                }
                None => {
                    tracing::debug!(
                        workflow_id = %e.workflow_id, seq = e.seq, event = e.event.name(),
                        "analytics: event of a run whose start was never recorded; ignored"
                    );
                    continue;
                }
            },
        }
        if !touched.contains(&e.workflow_id) {
            touched.push(e.workflow_id);
        }
    }
    let mut changes = Changes::default();
    for id in touched {
        if let Some(state) = states.get_mut(&id) {
            state.drain_changes(&mut changes);
        }
    }
    changes
}

impl RunState {
    /// A run's state as a backend stored it: its fact and the latest attempt of each task.
    pub fn loaded(run: RunFact, latest: impl IntoIterator<Item = AttemptFact>) -> Self {
        Self {
            run,
            attempts: latest
                .into_iter()
                .map(|a| ((a.task_id.clone(), a.attempt), a))
                .collect(),
            dirty_run: false,
            dirty: BTreeSet::new(),
        }
    }

    /// The state as of a run's first event; `None` unless it is a `WorkflowStarted`.
    pub fn start(e: &EventEnvelope) -> Option<Self> {
        let Event::WorkflowStarted {
            definition,
            version,
            input,
            ..
        } = &e.event
        else {
            return None;
        };
        let run = RunFact {
            workflow_id: e.workflow_id,
            definition: definition.clone(),
            version: *version,
            tenant: tenant_of(input),
            status: Status::Running,
            started_at_ms: e.at_ms,
            finished_at_ms: None,
            attempts: 0,
            retries: 0,
            last_seq: e.seq,
        };
        Some(Self {
            run,
            attempts: BTreeMap::new(),
            dirty_run: true,
            dirty: BTreeSet::new(),
        })
    }

    /// The latest attempt of each task, as a backend reloads them.
    pub fn latest_attempts(&self) -> impl Iterator<Item = &AttemptFact> {
        let mut latest: BTreeMap<&TaskId, &AttemptFact> = BTreeMap::new();
        for ((task, _), a) in &self.attempts {
            latest.insert(task, a); // keys ascend by attempt, so the last one wins
        }
        latest.into_values()
    }

    fn drain_changes(&mut self, out: &mut Changes) {
        if std::mem::take(&mut self.dirty_run) {
            out.runs.push(self.run.clone());
        }
        for key in std::mem::take(&mut self.dirty) {
            if let Some(a) = self.attempts.get(&key) {
                out.attempts.push(a.clone());
            }
        }
    }

    /// Folds one event in; an event at or below the run's last sequence changes nothing.
    pub fn apply(&mut self, e: &EventEnvelope) {
        if e.seq <= self.run.last_seq || e.workflow_id != self.run.workflow_id {
            return;
        }
        self.run.last_seq = e.seq;
        self.dirty_run = true;
        let at = e.at_ms;
        match &e.event {
            Event::TaskScheduled {
                task_id,
                step_key,
                step_id,
                kind,
                task,
                queue,
                attempt,
                ..
            } => self.open(
                e.seq, at, task_id, *attempt, step_id, step_key, *kind, task, queue,
            ),
            Event::HumanTaskCreated {
                task_id,
                step_key,
                step_id,
                ..
            } => {
                let attempt = self.current(task_id).map_or(1, |a| a.attempt + 1);
                self.open(
                    e.seq,
                    at,
                    task_id,
                    attempt,
                    step_id,
                    step_key,
                    TaskKind::Human,
                    "human",
                    "",
                );
            }
            Event::TaskStarted {
                task_id,
                attempt,
                worker_id,
                ..
            } => {
                self.update(e.seq, task_id, Some(*attempt), |a| {
                    a.status = AttemptStatus::Running;
                    a.started_at_ms = Some(at);
                    a.worker_id = Some(worker_id.clone());
                });
            }
            Event::HumanTaskClaimed { task_id, by } => {
                self.update(e.seq, task_id, None, |a| {
                    a.status = AttemptStatus::Running;
                    a.started_at_ms = Some(at);
                    a.worker_id = Some(by.clone());
                });
            }
            Event::HumanTaskReleased { task_id, .. }
            | Event::HumanTaskReassigned { task_id, .. } => {
                self.update(e.seq, task_id, None, |a| {
                    a.status = AttemptStatus::Scheduled;
                    a.started_at_ms = None;
                    a.worker_id = None;
                });
            }
            Event::TaskCompleted {
                task_id,
                attempt,
                metrics,
                by,
                ..
            } => {
                self.update(e.seq, task_id, Some(*attempt), |a| {
                    a.status = AttemptStatus::Completed;
                    a.error_type = None;
                    a.finished_at_ms = Some(at);
                    a.cpu_ms = metrics.as_ref().and_then(|m| m.cpu_ms);
                    a.peak_memory_bytes = metrics.as_ref().and_then(|m| m.peak_memory_bytes);
                    if let Some(by) = by {
                        a.worker_id = Some(by.clone());
                    }
                });
            }
            Event::TaskFailed {
                task_id,
                attempt,
                error,
                retry_at_ms,
                metrics,
            } => {
                let failed = self.update(e.seq, task_id, Some(*attempt), |a| {
                    a.status = AttemptStatus::Failed;
                    a.error_type = Some(error.kind.clone());
                    a.finished_at_ms = Some(at);
                    a.cpu_ms = metrics.as_ref().and_then(|m| m.cpu_ms);
                    a.peak_memory_bytes = metrics.as_ref().and_then(|m| m.peak_memory_bytes);
                    if let Some(retry_at) = retry_at_ms {
                        a.backoff_ms = (retry_at - at).max(0);
                    }
                });
                if failed && retry_at_ms.is_some() {
                    self.mark_retried(e.seq, task_id);
                }
            }
            Event::TaskDeferred {
                task_id,
                attempt,
                retry_at_ms,
                ..
            } => {
                self.update(e.seq, task_id, Some(*attempt), |a| {
                    a.status = AttemptStatus::Deferred;
                    a.error_type = Some("breaker_open".into());
                    a.finished_at_ms = Some(at);
                    a.breaker_wait_ms = (retry_at_ms - at).max(0);
                });
            }
            Event::TaskParked { task_id, error } => {
                self.end_open(e.seq, at, task_id, AttemptStatus::Failed, Some(&error.kind))
            }
            Event::TaskCancelled { task_id } => {
                self.end_open(e.seq, at, task_id, AttemptStatus::Cancelled, None)
            }
            Event::TaskSkipped { task_id, .. } => {
                self.end_open(e.seq, at, task_id, AttemptStatus::Skipped, None)
            }
            Event::TaskRetried { task_id } => {
                self.mark_retried(e.seq, task_id);
                // An operator retry reopens a failed run (as the read model does).
                if self.run.status == Status::Failed {
                    self.run.status = Status::Running;
                    self.run.finished_at_ms = None;
                }
            }
            Event::WorkflowCompleted { .. } => self.finish(e.seq, at, Status::Completed),
            Event::WorkflowFailed { .. } => self.finish(e.seq, at, Status::Failed),
            Event::WorkflowCompensated { .. } => self.finish(e.seq, at, Status::Compensated),
            Event::WorkflowCancelled { .. } => self.finish(e.seq, at, Status::Cancelled),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        seq: u64,
        at: i64,
        task_id: &TaskId,
        attempt: u32,
        step_id: &str,
        step_key: &str,
        kind: TaskKind,
        task: &str,
        queue: &str,
    ) {
        let key = (task_id.clone(), attempt);
        // A second decision for the same attempt is a duplicate: the first one stands.
        if self.attempts.contains_key(&key) {
            return;
        }
        let task_scheduled_at_ms = self.current(task_id).map_or(at, |a| a.task_scheduled_at_ms);
        let run = &self.run;
        self.attempts.insert(
            key.clone(),
            AttemptFact {
                workflow_id: run.workflow_id,
                task_id: task_id.clone(),
                attempt,
                definition: run.definition.clone(),
                version: run.version,
                tenant: run.tenant.clone(),
                step_id: step_id.to_owned(),
                step_key: step_key.to_owned(),
                kind,
                task: task.to_owned(),
                queue: queue.to_owned(),
                status: AttemptStatus::Scheduled,
                error_type: None,
                task_scheduled_at_ms,
                scheduled_at_ms: at,
                started_at_ms: None,
                finished_at_ms: None,
                retried: false,
                backoff_ms: 0,
                breaker_wait_ms: 0,
                worker_id: None,
                cpu_ms: None,
                peak_memory_bytes: None,
                seq,
            },
        );
        self.run.attempts += 1;
        self.dirty.insert(key);
    }

    /// The latest attempt of a task.
    fn current(&self, task_id: &TaskId) -> Option<&AttemptFact> {
        self.attempts
            .range((task_id.clone(), 0)..=(task_id.clone(), u32::MAX))
            .next_back()
            .map(|(_, a)| a)
    }

    /// Changes the task's latest attempt, if it is `attempt` (any, for human tasks, whose
    /// attempts the fold numbers itself); false when there is no such attempt (a stale or
    /// unknown one).
    fn update(
        &mut self,
        seq: u64,
        task_id: &TaskId,
        attempt: Option<u32>,
        change: impl FnOnce(&mut AttemptFact),
    ) -> bool {
        let Some(key) = self.current(task_id).and_then(|a| {
            let matches = a.kind == TaskKind::Human || attempt.is_none_or(|n| n == a.attempt);
            matches.then(|| (a.task_id.clone(), a.attempt))
        }) else {
            return false;
        };
        let Some(a) = self.attempts.get_mut(&key) else {
            return false;
        };
        change(a);
        a.seq = seq;
        self.dirty.insert(key);
        true
    }

    /// Ends the task's latest attempt with `status` unless it has ended already.
    fn end_open(
        &mut self,
        seq: u64,
        at: i64,
        task_id: &TaskId,
        status: AttemptStatus,
        error: Option<&str>,
    ) {
        if self.current(task_id).is_some_and(|a| a.status.is_ended()) {
            return;
        }
        self.update(seq, task_id, None, |a| {
            a.status = status;
            a.finished_at_ms = Some(at);
            a.error_type = error.map(str::to_owned);
        });
    }

    fn mark_retried(&mut self, seq: u64, task_id: &TaskId) {
        if self.current(task_id).is_none_or(|a| a.retried) {
            return;
        }
        if self.update(seq, task_id, None, |a| a.retried = true) {
            self.run.retries += 1;
        }
    }

    fn finish(&mut self, seq: u64, at: i64, status: Status) {
        self.run.status = status;
        self.run.finished_at_ms = Some(at);
        let open: Vec<(TaskId, u32)> = self
            .attempts
            .iter()
            .filter(|(_, a)| !a.status.is_ended())
            .map(|(k, _)| k.clone())
            .collect();
        for key in open {
            if let Some(a) = self.attempts.get_mut(&key) {
                a.status = AttemptStatus::Cancelled;
                a.finished_at_ms = Some(at);
                a.seq = seq;
                self.dirty.insert(key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
