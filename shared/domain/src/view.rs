//! Read models as the API shows them, and the pure fold that builds them from events
//! (`WorkflowView::start` + `WorkflowView::apply`). The projector persists them; the API
//! serves them.
//!
//! Choices the fold makes (the event docs leave them open):
//! - A task keeps the error of its last failed attempt while later attempts are scheduled
//!   and run, so an operator can see why attempt 3 exists; `TaskCompleted` clears it, a
//!   skip keeps it (it explains why the operator skipped).
//! - The run-level `error` of a live run is the reason compensation began; the fold uses
//!   it to know, after a pause or a parked task, that the run must go back to
//!   `compensating` rather than `running`.
//! - Status precedence for a live run: paused > parked > compensating > running. A task
//!   that parks while the run is paused leaves it `paused`; resuming then shows `parked`.
//! - A terminal event clears `current_steps` and takes every task out of the dead-letter
//!   queue: nothing waits for an operator once the run has ended.
//! - `TaskRetried` on a run that already `failed` reopens it (the engine only emits it when
//!   a new attempt follows).
//! - A human task is a task of kind `human` (task type `human`, no queue, input `null`): it
//!   is `scheduled` while it waits in an inbox, `running` while someone has claimed it, and
//!   ends like any task. Its inbox side (title, owner, claim, form...) is the `human`
//!   sub-object. A terminal run event cancels a human task still open in the view, so no
//!   inbox keeps offering work that can no longer be done.
//! - SLA warnings and breaches are listed on the run in the order they happened.

use crate::command::{ErrorInfo, TaskMetrics};
use crate::definition::Assignment;
use crate::event::{Event, EventEnvelope, TaskKind};
use crate::ids::{TaskId, WorkflowId};
use crate::workflow::{Status, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// A run as the read model shows it: where it stands, its tasks with their latest attempts,
/// and its SLA alerts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Workflow))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "WorkflowFields")
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    /// The run's id.
    pub workflow_id: WorkflowId,
    /// Name of the definition the run executes.
    pub definition: String,
    /// Version of that definition the run was started with.
    pub version: u32,
    /// Where the run stands now.
    pub status: Status,
    /// The input the run was started with, any JSON value.
    pub input: Value,
    /// The run's output once it has completed; `null` until then.
    pub output: Option<Value>,
    /// Why the run failed, why compensation began (kept once the run is compensated), or why
    /// it was cancelled when a reason was given; `null` otherwise.
    pub error: Option<ErrorInfo>,
    /// When the run started (RFC 3339).
    pub created_at: String,
    /// When the run last changed: the time of its latest event (RFC 3339).
    pub updated_at: String,
    /// Keys of the steps in progress, in the order they started; empty once the run ended.
    pub current_steps: Vec<String>,
    /// Every task of the run, in the order they were first scheduled.
    pub tasks: Vec<TaskView>,
    /// `seq` of the latest event reflected here (events are numbered 1, 2, 3... per run).
    pub last_seq: u64,
    /// For a child run, the run whose step started it; absent/null for a top-level run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_workflow_id: Option<WorkflowId>,
    /// SLA warnings and breaches of the run and its steps, oldest first.
    #[serde(default)]
    pub sla: Vec<SlaAlert>,
}

/// Which threshold of an SLA a run or step passed: the warning (`warn_at`) or the SLA itself.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    /// The SLA's `warn_at` share of its duration passed while the run or step was going.
    Warning,
    /// The SLA's whole duration passed while the run or step was going.
    Breach,
}

impl SlaKind {
    /// The name used in JSON: `warning` or `breach`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlaKind::Warning => "warning",
            SlaKind::Breach => "breach",
        }
    }
}

/// A run or one of its steps passed its SLA's warning threshold or the SLA itself. An SLA
/// only reports: the run goes on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::SimpleObject))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaAlert {
    /// Key of the step whose SLA it is; `null` for the run's own SLA.
    pub step_key: Option<String>,
    /// The SLA's whole duration (ms), also on a warning; it counts from the run's or the
    /// step's start.
    pub sla_ms: u64,
    /// Warning or breach.
    pub kind: SlaKind,
    /// When the engine recorded it (RFC 3339): when the threshold passed or shortly after.
    pub at: String,
}

/// The inbox side of a human task: who it is for, who holds it, and the form its output must
/// fill.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Human))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "Human")
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanView {
    /// What the inbox shows, rendered from the step's `title` when the task was created.
    pub title: String,
    /// The person it is assigned to; `null` when it is for a group only.
    #[serde(default)]
    pub assignee: Option<String>,
    /// The group it is assigned to; `null` when it is for one person only.
    #[serde(default)]
    pub group: Option<String>,
    /// Who claimed it (and, once it is completed, who had claimed it); `null` while nobody
    /// holds it.
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// JSON Schema the completion's output must satisfy; `null` when any output will do.
    #[serde(default)]
    pub form: Option<Value>,
    /// Whether nobody completed it in time and the step's escalation reassigned it. It stays
    /// `true` after a later manual reassignment.
    #[serde(default)]
    pub escalated: bool,
    /// Who completed it; `null` until it is completed.
    #[serde(default)]
    pub completed_by: Option<String>,
    /// When it fails for want of completion (RFC 3339); `null` when the step has no timeout.
    #[serde(default)]
    pub due_at: Option<String>,
}

/// One task of a run (a step's task, a person's task, or a compensation), with its latest
/// attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Task))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "Task")
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task's id.
    pub task_id: TaskId,
    /// The run it belongs to.
    pub workflow_id: WorkflowId,
    /// Id of the definition step it runs; for a compensation, of the step it undoes.
    pub step_id: String,
    /// The step instance it runs: the step id, prefixed by `<foreach key>[<i>].` per
    /// enclosing `foreach` iteration, or by `<step key>/` for a fallback step that runs in
    /// place of an `http` step.
    pub step_key: String,
    /// A step's task, a compensation, or a person's task.
    pub kind: TaskKind,
    /// The task type, e.g. `reserve-stock`; `http` for an `http` step, `human` for a
    /// person's task.
    pub task: String,
    /// The queue workers take it from; empty for a person's task.
    pub queue: String,
    /// Where its latest attempt stands. A task waiting out a backoff or an open circuit
    /// breaker before its next attempt shows as scheduled.
    pub status: TaskStatus,
    /// Number of the latest attempt, from 1; an operator's retry continues the count. Always
    /// 1 for a person's task.
    pub attempt: u32,
    /// The input its attempts are given, any JSON value; `null` for a person's task.
    pub input: Value,
    /// What it produced, or the output an operator gave when skipping it; `null` until then.
    pub output: Option<Value>,
    /// Why the latest failed attempt failed. It stays while later attempts are scheduled and
    /// run, and when an operator skips the task; a completion clears it. `null` when no
    /// attempt failed.
    pub error: Option<ErrorInfo>,
    /// Whether it waits in the dead-letter queue for an operator to retry or skip it.
    pub parked: bool,
    /// The worker that started the latest attempt; absent/null until one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Resource use reported with the outcome of the latest attempt; absent/null when none
    /// was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<TaskMetrics>,
    /// When the latest attempt was scheduled (RFC 3339); for a person's task, when it
    /// entered the inbox.
    pub scheduled_at: String,
    /// When a worker started the latest attempt, or someone claimed the person's task
    /// (RFC 3339); absent/null before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended (RFC 3339); absent/null while it may still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The inbox side of a person's task; absent/null for other tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<HumanView>,
}

/// A task parked in the dead-letter queue: it failed for good under `on_failure: park`, or
/// it is a compensation that failed, and it waits for an operator to retry or skip it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DeadLetterItem))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "DeadLetterItem")
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The parked task.
    pub task_id: TaskId,
    /// The run it belongs to.
    pub workflow_id: WorkflowId,
    /// Id of the definition step it runs; for a compensation, of the step it undoes.
    pub step_id: String,
    /// The task type, e.g. `reserve-stock`.
    pub task: String,
    /// Number of its latest attempt (the count goes on across operator retries).
    pub attempts: u32,
    /// Why it was parked, usually the failure of its last attempt.
    pub error: Option<ErrorInfo>,
    /// The input its attempts were given.
    pub input: Value,
}

impl From<&TaskView> for DeadLetter {
    fn from(t: &TaskView) -> Self {
        Self {
            task_id: t.task_id.clone(),
            workflow_id: t.workflow_id,
            step_id: t.step_id.clone(),
            task: t.task.clone(),
            attempts: t.attempt,
            error: t.error.clone(),
            input: t.input.clone(),
        }
    }
}

/// Last millisecond of the year 9999, the latest time RFC 3339 can write.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// `at_ms` (ms since the Unix epoch) as RFC 3339 UTC with milliseconds, the form every
/// view timestamp takes. Times outside years 1970..=9999 clamp to them: engine clocks never
/// produce them (deadlines after huge timeouts can), and a panic in a fold would stall a
/// projector.
pub fn rfc3339(at_ms: i64) -> String {
    let ms = at_ms.clamp(0, MAX_RFC3339_MS).unsigned_abs();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

impl WorkflowView {
    /// The view of a run as of its first event; `None` unless it is a `WorkflowStarted`.
    pub fn start(envelope: &EventEnvelope) -> Option<WorkflowView> {
        let Event::WorkflowStarted {
            definition,
            version,
            input,
            parent,
            ..
        } = &envelope.event
        else {
            return None;
        };
        let at = rfc3339(envelope.at_ms);
        Some(WorkflowView {
            workflow_id: envelope.workflow_id,
            definition: definition.clone(),
            version: *version,
            status: Status::Running,
            input: input.clone(),
            output: None,
            error: None,
            created_at: at.clone(),
            updated_at: at,
            current_steps: Vec::new(),
            tasks: Vec::new(),
            last_seq: envelope.seq,
            parent_workflow_id: parent.as_ref().map(|p| p.workflow_id),
            sla: Vec::new(),
        })
    }

    /// Tasks currently in the dead-letter queue.
    pub fn dead_letters(&self) -> impl Iterator<Item = DeadLetter> + '_ {
        self.tasks.iter().filter(|t| t.parked).map(DeadLetter::from)
    }

    /// The task `id` of this run, if it has one.
    pub fn task(&self, id: &TaskId) -> Option<&TaskView> {
        self.tasks.iter().find(|t| &t.task_id == id)
    }

    /// Folds one event in. Idempotent: an event with `seq <= last_seq`, or one about another
    /// run, changes nothing. Events about a task the view has never seen scheduled are
    /// ignored (apart from `last_seq`/`updated_at`) rather than invented.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        if envelope.seq <= self.last_seq || envelope.workflow_id != self.workflow_id {
            return;
        }
        self.last_seq = envelope.seq;
        let at = rfc3339(envelope.at_ms);
        self.updated_at = at.clone();

        match &envelope.event {
            Event::HumanTaskCreated {
                task_id,
                step_key,
                step_id,
                title,
                assign,
                form,
                timeout_ms,
                ..
            } => {
                let due_at = timeout_ms.map(|ms| {
                    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                    rfc3339(envelope.at_ms.saturating_add(ms))
                });
                let inbox = HumanView {
                    title: title.clone(),
                    assignee: assign.assignee.clone(),
                    group: assign.group.clone(),
                    claimed_by: None,
                    form: form.clone(),
                    escalated: false,
                    completed_by: None,
                    due_at,
                };
                // An operator's retry of a parked human task creates it again: it is back in
                // the inbox, unclaimed, its timeout counting from now. The error that parked it
                // stays, as for any retried task, to say why it came back.
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Scheduled;
                    t.output = None;
                    t.scheduled_at = at;
                    t.started_at = None;
                    t.finished_at = None;
                    t.human = Some(inbox);
                    return;
                }
                self.tasks.push(TaskView {
                    task_id: task_id.clone(),
                    workflow_id: self.workflow_id,
                    step_id: step_id.clone(),
                    step_key: step_key.clone(),
                    kind: TaskKind::Human,
                    task: "human".into(),
                    queue: String::new(),
                    status: TaskStatus::Scheduled,
                    attempt: 1,
                    input: Value::Null,
                    output: None,
                    error: None,
                    parked: false,
                    worker_id: None,
                    metrics: None,
                    scheduled_at: at,
                    started_at: None,
                    finished_at: None,
                    human: Some(inbox),
                });
            }
            Event::HumanTaskClaimed { task_id, by } => {
                if let Some(TaskView {
                    status,
                    started_at,
                    human: Some(h),
                    ..
                }) = self.task_mut(task_id)
                {
                    *status = TaskStatus::Running;
                    *started_at = Some(at);
                    h.claimed_by = Some(by.clone());
                }
            }
            Event::HumanTaskReleased { task_id, .. } => {
                if let Some(TaskView {
                    status,
                    started_at,
                    human: Some(h),
                    ..
                }) = self.task_mut(task_id)
                {
                    *status = TaskStatus::Scheduled;
                    *started_at = None;
                    h.claimed_by = None;
                }
            }
            Event::HumanTaskReassigned {
                task_id,
                assign: Assignment { assignee, group },
                by,
            } => {
                if let Some(TaskView {
                    status,
                    started_at,
                    human: Some(h),
                    ..
                }) = self.task_mut(task_id)
                {
                    *status = TaskStatus::Scheduled;
                    *started_at = None;
                    h.claimed_by = None;
                    h.assignee = assignee.clone();
                    h.group = group.clone();
                    // Only the escalation timer reassigns without a `by`.
                    h.escalated |= by.is_none();
                }
            }
            Event::SlaWarned { step_key, sla_ms } => self.sla.push(SlaAlert {
                step_key: step_key.clone(),
                sla_ms: *sla_ms,
                kind: SlaKind::Warning,
                at,
            }),
            Event::SlaBreached { step_key, sla_ms } => self.sla.push(SlaAlert {
                step_key: step_key.clone(),
                sla_ms: *sla_ms,
                kind: SlaKind::Breach,
                at,
            }),
            // The attempt was not made (breaker open) and will be tried again without using
            // one up: the task waits, like during a backoff.
            Event::TaskDeferred { task_id, .. } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Scheduled;
                }
            }
            // The fallback step's own events show what ran instead.
            Event::FallbackTaken { .. } => {}
            // The signal shows as the output of the `signal` step that takes it, and in the
            // history; a signal nobody waits for (yet) changes nothing a view shows.
            Event::SignalReceived { .. } => {}
            // A second start for the same id is a duplicate decision; the first one stands.
            Event::WorkflowStarted { .. } => {}
            Event::StepStarted { step_key, .. } => self.step_started(step_key),
            Event::StepCompleted { step_key, .. } | Event::StepFailed { step_key, .. } => {
                self.step_finished(step_key)
            }
            Event::StepSkipped { .. }
            | Event::BranchChosen { .. }
            | Event::ForeachStarted { .. }
            | Event::TimerStarted { .. }
            | Event::ChildWorkflowRequested { .. }
            | Event::ChildCancelRequested { .. }
            | Event::TaskHeartbeat { .. }
            | Event::TaskAdded { .. } => {}
            Event::TaskScheduled {
                task_id,
                step_key,
                step_id,
                kind,
                task,
                queue,
                attempt,
                input,
                ..
            } => {
                let fresh = TaskView {
                    task_id: task_id.clone(),
                    workflow_id: self.workflow_id,
                    step_id: step_id.clone(),
                    step_key: step_key.clone(),
                    kind: *kind,
                    task: task.clone(),
                    queue: queue.clone(),
                    status: TaskStatus::Scheduled,
                    attempt: *attempt,
                    input: input.clone(),
                    output: None,
                    error: None,
                    parked: false,
                    worker_id: None,
                    metrics: None,
                    scheduled_at: at,
                    started_at: None,
                    finished_at: None,
                    human: None,
                };
                match self.tasks.iter_mut().find(|t| &t.task_id == task_id) {
                    // Only the previous attempt's error survives; see the module doc. A
                    // human task retried by an operator goes back to its inbox unclaimed.
                    Some(t) => {
                        let human = t.human.take().map(|h| HumanView {
                            claimed_by: None,
                            completed_by: None,
                            ..h
                        });
                        *t = TaskView {
                            error: t.error.take(),
                            human,
                            ..fresh
                        }
                    }
                    None => self.tasks.push(fresh),
                }
            }
            Event::TaskStarted {
                task_id, worker_id, ..
            } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Running;
                    t.worker_id = Some(worker_id.clone());
                    t.started_at = Some(at);
                }
            }
            Event::TaskCompleted {
                task_id,
                output,
                metrics,
                by,
                ..
            } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Completed;
                    t.output = Some(output.clone());
                    t.error = None;
                    t.metrics = metrics.clone();
                    t.finished_at = Some(at);
                    if let Some(h) = &mut t.human {
                        h.completed_by = by.clone();
                    }
                    if t.kind != TaskKind::Compensation {
                        let key = t.step_key.clone();
                        self.step_finished(&key);
                    }
                }
            }
            Event::TaskFailed {
                task_id,
                error,
                retry_at_ms,
                metrics,
                ..
            } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.error = Some(error.clone());
                    t.metrics = metrics.clone();
                    if retry_at_ms.is_some() {
                        // Waiting out the backoff: the next attempt is as good as scheduled.
                        t.status = TaskStatus::Scheduled;
                    } else {
                        t.status = TaskStatus::Failed;
                        t.finished_at = Some(at);
                        let key = t.step_key.clone();
                        self.step_finished(&key);
                    }
                }
            }
            Event::TaskParked { task_id, error } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Failed;
                    t.error = Some(error.clone());
                    t.parked = true;
                    // The step is not over: it waits for an operator.
                    let (kind, key) = (t.kind, t.step_key.clone());
                    if kind != TaskKind::Compensation {
                        self.step_started(&key);
                    }
                    if self.status != Status::Paused && !self.status.is_terminal() {
                        self.status = Status::Parked;
                    }
                }
            }
            Event::TaskRetried { task_id } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.parked = false;
                    let (kind, key) = (t.kind, t.step_key.clone());
                    if kind != TaskKind::Compensation {
                        self.step_started(&key);
                    }
                    if self.status == Status::Failed {
                        self.error = None;
                        self.output = None;
                        self.status = Status::Running;
                    }
                    self.refresh_live_status();
                }
            }
            Event::TaskSkipped { task_id, output } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Skipped;
                    t.output = Some(output.clone());
                    t.parked = false;
                    t.finished_at = Some(at);
                    let key = t.step_key.clone();
                    self.step_finished(&key);
                    self.refresh_live_status();
                }
            }
            Event::TaskCancelled { task_id } => {
                if let Some(t) = self.task_mut(task_id) {
                    t.status = TaskStatus::Cancelled;
                    t.parked = false;
                    t.finished_at = Some(at);
                    let key = t.step_key.clone();
                    self.step_finished(&key);
                    self.refresh_live_status();
                }
            }
            Event::WorkflowPaused => {
                if !self.status.is_terminal() {
                    self.status = Status::Paused;
                }
            }
            Event::WorkflowResumed => {
                if self.status == Status::Paused {
                    self.status = self.live_status();
                }
            }
            Event::CompensationStarted { reason, .. } => {
                self.error = Some(reason.clone());
                if !self.status.is_terminal() && self.status != Status::Paused {
                    self.status = self.live_status();
                }
            }
            Event::WorkflowCompleted { output, .. } => {
                self.output = Some(output.clone());
                self.finish(Status::Completed, &at);
            }
            Event::WorkflowFailed { error, .. } => {
                self.error = Some(error.clone());
                self.finish(Status::Failed, &at);
            }
            Event::WorkflowCompensated { .. } => self.finish(Status::Compensated, &at),
            Event::WorkflowCancelled { reason, .. } => {
                if let Some(reason) = reason {
                    self.error = Some(ErrorInfo {
                        kind: "cancelled".into(),
                        message: reason.clone(),
                        retryable: false,
                    });
                }
                self.finish(Status::Cancelled, &at);
            }
        }
    }

    fn task_mut(&mut self, id: &TaskId) -> Option<&mut TaskView> {
        self.tasks.iter_mut().find(|t| &t.task_id == id)
    }

    fn step_started(&mut self, key: &str) {
        if !self.current_steps.iter().any(|k| k == key) {
            self.current_steps.push(key.to_owned());
        }
    }

    fn step_finished(&mut self, key: &str) {
        self.current_steps.retain(|k| k != key);
    }

    fn finish(&mut self, status: Status, at: &str) {
        self.status = status;
        self.current_steps.clear();
        for t in &mut self.tasks {
            t.parked = false;
            let open = matches!(t.status, TaskStatus::Scheduled | TaskStatus::Running);
            if t.human.is_some() && open {
                t.status = TaskStatus::Cancelled;
                t.finished_at = Some(at.to_owned());
            }
        }
    }

    /// What a live, unpaused run shows, from the facts the view holds.
    fn live_status(&self) -> Status {
        if self.tasks.iter().any(|t| t.parked) {
            Status::Parked
        } else if self.error.is_some() {
            Status::Compensating
        } else {
            Status::Running
        }
    }

    /// Re-derives the status after a task left the dead-letter queue, unless a pause or the
    /// end of the run takes precedence.
    fn refresh_live_status(&mut self) {
        if !self.status.is_terminal() && self.status != Status::Paused {
            self.status = self.live_status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    const WF: WorkflowId = WorkflowId(Uuid::from_u128(7));
    const T0: i64 = 1_700_000_000_000;

    fn task_id(n: u32) -> TaskId {
        TaskId::new(WF, n)
    }

    fn env(seq: u64, event: Event) -> EventEnvelope {
        EventEnvelope {
            workflow_id: WF,
            seq,
            at_ms: T0 + seq as i64 * 1000,
            command_id: None,
            v: 1,
            event,
        }
    }

    fn started() -> Event {
        Event::WorkflowStarted {
            definition: "orders".into(),
            version: 2,
            input: json!({"order": 1}),
            idempotency_key: None,
            parent: None,
        }
    }

    fn step_started(key: &str) -> Event {
        Event::StepStarted {
            step_key: key.into(),
            step_id: key.into(),
            parent: None,
        }
    }

    fn scheduled(n: u32, key: &str, kind: TaskKind, attempt: u32) -> Event {
        Event::TaskScheduled {
            task_id: task_id(n),
            step_key: key.into(),
            step_id: key.into(),
            kind,
            task: format!("{key}-task"),
            queue: "default".into(),
            attempt,
            max_attempts: 3,
            input: json!({"attempt": attempt}),
            checkpoint: None,
            timeout_ms: 1000,
            heartbeat_timeout_ms: None,
            schedule_to_start_timeout_ms: None,
            http: None,
        }
    }

    fn failed(n: u32, attempt: u32, retry: bool) -> Event {
        Event::TaskFailed {
            task_id: task_id(n),
            attempt,
            error: ErrorInfo::new("boom", format!("attempt {attempt}")),
            retry_at_ms: retry.then_some(T0 + 60_000),
            metrics: None,
        }
    }

    /// Given the events, when folded in order, then the resulting view.
    fn given(events: Vec<Event>) -> WorkflowView {
        let mut envs = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| env(i as u64 + 1, e));
        let mut view = WorkflowView::start(&envs.next().expect("a start")).expect("a start");
        for e in envs {
            view.apply(&e);
        }
        view
    }

    #[test]
    fn formats_rfc3339_utc_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(T0 + 42), "2023-11-14T22:13:20.042Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn only_a_start_creates_a_view() {
        assert!(WorkflowView::start(&env(1, Event::WorkflowPaused)).is_none());
        let view = given(vec![started()]);
        assert_eq!(view.status, Status::Running);
        assert_eq!(view.definition, "orders");
        assert_eq!(view.version, 2);
        assert_eq!(view.created_at, rfc3339(T0 + 1000));
        assert_eq!(view.last_seq, 1);
    }

    #[test]
    fn replayed_or_foreign_events_change_nothing() {
        let mut view = given(vec![
            started(),
            step_started("a"),
            scheduled(1, "a", TaskKind::Step, 1),
        ]);
        let before = view.clone();
        view.apply(&env(2, Event::WorkflowPaused));
        view.apply(&env(3, Event::WorkflowPaused));
        view.apply(&EventEnvelope {
            workflow_id: WorkflowId(Uuid::from_u128(8)),
            ..env(4, Event::WorkflowPaused)
        });
        assert_eq!(view, before);
    }

    #[test]
    fn a_task_runs_to_completion_and_its_step_ends() {
        let view = given(vec![
            started(),
            step_started("a"),
            scheduled(1, "a", TaskKind::Step, 1),
            Event::TaskStarted {
                task_id: task_id(1),
                attempt: 1,
                worker_id: "w1".into(),
                via: None,
            },
            Event::TaskCompleted {
                task_id: task_id(1),
                attempt: 1,
                output: json!({"ok": true}),
                metrics: Some(TaskMetrics {
                    cpu_ms: Some(3.0),
                    peak_memory_bytes: None,
                    ..Default::default()
                }),
                by: None,
            },
        ]);
        let t = view.task(&task_id(1)).unwrap();
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.worker_id.as_deref(), Some("w1"));
        assert_eq!(t.output, Some(json!({"ok": true})));
        assert_eq!(t.started_at, Some(rfc3339(T0 + 4000)));
        assert_eq!(t.finished_at, Some(rfc3339(T0 + 5000)));
        assert!(t.metrics.is_some());
        assert!(view.current_steps.is_empty());
    }

    #[test]
    fn a_failure_with_backoff_waits_scheduled_and_keeps_its_error_until_success() {
        let mut view = given(vec![
            started(),
            step_started("a"),
            scheduled(1, "a", TaskKind::Step, 1),
            Event::TaskStarted {
                task_id: task_id(1),
                attempt: 1,
                worker_id: "w1".into(),
                via: None,
            },
            failed(1, 1, true),
        ]);
        let t = view.task(&task_id(1)).unwrap();
        assert_eq!(t.status, TaskStatus::Scheduled);
        assert_eq!(t.error.as_ref().unwrap().message, "attempt 1");
        assert_eq!(view.current_steps, ["a"]);

        view.apply(&env(6, scheduled(1, "a", TaskKind::Step, 2)));
        let t = view.task(&task_id(1)).unwrap();
        assert_eq!((t.attempt, t.status), (2, TaskStatus::Scheduled));
        assert!(t.error.is_some() && t.worker_id.is_none() && t.started_at.is_none());
        assert_eq!(view.tasks.len(), 1);

        view.apply(&env(
            7,
            Event::TaskCompleted {
                task_id: task_id(1),
                attempt: 2,
                output: json!(1),
                metrics: None,
                by: None,
            },
        ));
        assert!(view.task(&task_id(1)).unwrap().error.is_none());
    }

    #[test]
    fn a_final_failure_ends_the_step() {
        let view = given(vec![
            started(),
            step_started("a"),
            scheduled(1, "a", TaskKind::Step, 1),
            failed(1, 1, false),
        ]);
        let t = view.task(&task_id(1)).unwrap();
        assert_eq!(t.status, TaskStatus::Failed);
        assert!(t.finished_at.is_some());
        assert!(view.current_steps.is_empty());
        assert_eq!(view.status, Status::Running);
    }

    #[test]
    fn a_parked_task_parks_the_run_and_a_skip_unparks_it() {
        let parked = vec![
            started(),
            step_started("a"),
            scheduled(1, "a", TaskKind::Step, 3),
            failed(1, 3, false),
            Event::TaskParked {
                task_id: task_id(1),
                error: ErrorInfo::new("boom", "out of attempts"),
            },
        ];
        let view = given(parked.clone());
        assert_eq!(view.status, Status::Parked);
        let t = view.task(&task_id(1)).unwrap();
        assert!(t.parked && t.status == TaskStatus::Failed);
        assert_eq!(view.current_steps, ["a"]);
        assert_eq!(view.dead_letters().count(), 1);

        let mut skipped = parked;
        skipped.push(Event::TaskSkipped {
            task_id: task_id(1),
            output: json!("manual"),
        });
        let view = given(skipped);
        assert_eq!(view.status, Status::Running);
        let t = view.task(&task_id(1)).unwrap();
        assert!(!t.parked && t.status == TaskStatus::Skipped);
        assert_eq!(t.output, Some(json!("manual")));
        assert!(view.current_steps.is_empty());
        assert_eq!(view.dead_letters().count(), 0);
    }

    #[test]
    fn a_retry_unparks_only_when_no_other_task_is_parked() {
        let view = given(vec![
            started(),
            scheduled(1, "a", TaskKind::Step, 1),
            scheduled(2, "b", TaskKind::Step, 1),
            Event::TaskParked {
                task_id: task_id(1),
                error: ErrorInfo::new("x", ""),
            },
            Event::TaskParked {
                task_id: task_id(2),
                error: ErrorInfo::new("x", ""),
            },
            Event::TaskRetried {
                task_id: task_id(1),
            },
        ]);
        assert_eq!(view.status, Status::Parked);
        assert_eq!(
            view.dead_letters().map(|d| d.task_id).collect::<Vec<_>>(),
            [task_id(2)]
        );

        let mut view = view;
        view.apply(&env(
            7,
            Event::TaskRetried {
                task_id: task_id(2),
            },
        ));
        assert_eq!(view.status, Status::Running);
    }

    #[test]
    fn pause_wins_over_parked_and_resume_restores_it() {
        let mut view = given(vec![
            started(),
            scheduled(1, "a", TaskKind::Step, 1),
            Event::WorkflowPaused,
            Event::TaskParked {
                task_id: task_id(1),
                error: ErrorInfo::new("x", ""),
            },
        ]);
        assert_eq!(view.status, Status::Paused);
        view.apply(&env(5, Event::WorkflowResumed));
        assert_eq!(view.status, Status::Parked);
    }

    #[test]
    fn resume_during_compensation_returns_to_compensating() {
        let mut view = given(vec![
            started(),
            Event::CompensationStarted {
                reason: ErrorInfo::new("card_declined", ""),
                then_cancel: false,
            },
        ]);
        assert_eq!(view.status, Status::Compensating);
        view.apply(&env(3, Event::WorkflowPaused));
        assert_eq!(view.status, Status::Paused);
        view.apply(&env(4, Event::WorkflowResumed));
        assert_eq!(view.status, Status::Compensating);
        view.apply(&env(5, scheduled(1, "a", TaskKind::Compensation, 1)));
        view.apply(&env(
            6,
            Event::TaskParked {
                task_id: task_id(1),
                error: ErrorInfo::new("x", ""),
            },
        ));
        assert_eq!(view.status, Status::Parked);
        view.apply(&env(
            7,
            Event::TaskSkipped {
                task_id: task_id(1),
                output: Value::Null,
            },
        ));
        assert_eq!(view.status, Status::Compensating);
        view.apply(&env(8, Event::WorkflowCompensated { parent: None }));
        assert_eq!(view.status, Status::Compensated);
        assert_eq!(view.error.as_ref().unwrap().kind, "card_declined");
    }

    #[test]
    fn terminal_events_set_outcome_and_clear_work_in_progress() {
        let base = || {
            vec![
                started(),
                step_started("a"),
                scheduled(1, "a", TaskKind::Step, 1),
            ]
        };

        let mut events = base();
        events.push(Event::WorkflowCompleted {
            output: json!({"total": 3}),
            parent: None,
        });
        let view = given(events);
        assert_eq!(
            (view.status, view.output),
            (Status::Completed, Some(json!({"total": 3})))
        );
        assert!(view.current_steps.is_empty());

        let mut events = base();
        events.push(Event::WorkflowFailed {
            error: ErrorInfo::new("boom", ""),
            parent: None,
        });
        let view = given(events);
        assert_eq!(view.status, Status::Failed);
        assert_eq!(view.error.unwrap().kind, "boom");

        let mut events = base();
        events.push(Event::TaskParked {
            task_id: task_id(1),
            error: ErrorInfo::new("x", ""),
        });
        events.push(Event::WorkflowCancelled {
            reason: Some("operator".into()),
            parent: None,
        });
        let view = given(events);
        assert_eq!(view.status, Status::Cancelled);
        assert_eq!(view.error.unwrap().message, "operator");
        assert!(view.tasks.iter().all(|t| !t.parked));
    }

    #[test]
    fn cancelled_tasks_and_non_task_steps_leave_current_steps() {
        let view = given(vec![
            started(),
            step_started("p"),
            step_started("p.a"),
            step_started("p.b"),
            scheduled(1, "p.a", TaskKind::Step, 1),
            Event::TaskCancelled {
                task_id: task_id(1),
            },
            Event::StepFailed {
                step_key: "p.b".into(),
                error: ErrorInfo::new("x", ""),
            },
        ]);
        assert_eq!(view.current_steps, ["p"]);
        assert_eq!(
            view.task(&task_id(1)).unwrap().status,
            TaskStatus::Cancelled
        );
        let mut view = view;
        view.apply(&env(
            8,
            Event::StepCompleted {
                step_key: "p".into(),
                output: Value::Null,
            },
        ));
        assert!(view.current_steps.is_empty());
    }

    #[test]
    fn a_retry_after_failure_reopens_the_run() {
        let view = given(vec![
            started(),
            scheduled(1, "a", TaskKind::Step, 1),
            failed(1, 1, false),
            Event::WorkflowFailed {
                error: ErrorInfo::new("boom", ""),
                parent: None,
            },
            Event::TaskRetried {
                task_id: task_id(1),
            },
        ]);
        assert_eq!(view.status, Status::Running);
        assert!(view.error.is_none());
    }

    fn human_created(n: u32, key: &str, timeout_ms: Option<u64>) -> Event {
        Event::HumanTaskCreated {
            task_id: task_id(n),
            step_key: key.into(),
            step_id: key.into(),
            title: "Approve refund of 42".into(),
            assign: Assignment {
                assignee: None,
                group: Some("finance".into()),
            },
            form: Some(json!({"type": "object", "required": ["approved"]})),
            timeout_ms,
            escalate_after_ms: Some(300),
            escalate_to: Some(Assignment {
                assignee: None,
                group: Some("leads".into()),
            }),
        }
    }

    fn human_of(view: &WorkflowView, n: u32) -> (&TaskView, &HumanView) {
        let t = view.task(&task_id(n)).expect("the task");
        (t, t.human.as_ref().expect("a human task"))
    }

    #[test]
    fn a_human_task_waits_in_its_inbox_scheduled() {
        let view = given(vec![
            started(),
            step_started("approve"),
            human_created(1, "approve", Some(86_400_000)),
        ]);
        let (t, h) = human_of(&view, 1);
        assert_eq!((t.kind, t.task.as_str()), (TaskKind::Human, "human"));
        assert_eq!((t.status, t.attempt), (TaskStatus::Scheduled, 1));
        assert_eq!(t.scheduled_at, rfc3339(T0 + 3000));
        assert_eq!(h.title, "Approve refund of 42");
        assert_eq!(
            (h.assignee.as_deref(), h.group.as_deref()),
            (None, Some("finance"))
        );
        assert_eq!(h.form.as_ref().unwrap()["required"], json!(["approved"]));
        assert_eq!(h.due_at, Some(rfc3339(T0 + 3000 + 86_400_000)));
        assert!(!h.escalated && h.claimed_by.is_none() && h.completed_by.is_none());
        assert_eq!(view.current_steps, ["approve"]);
    }

    #[test]
    fn a_claim_runs_it_a_release_returns_it_and_a_completion_names_who() {
        let mut view = given(vec![
            started(),
            step_started("approve"),
            human_created(1, "approve", None),
            Event::HumanTaskClaimed {
                task_id: task_id(1),
                by: "ann".into(),
            },
        ]);
        let (t, h) = human_of(&view, 1);
        assert_eq!(t.status, TaskStatus::Running);
        assert_eq!(t.started_at, Some(rfc3339(T0 + 4000)));
        assert_eq!(h.claimed_by.as_deref(), Some("ann"));
        assert_eq!(h.due_at, None);

        view.apply(&env(
            5,
            Event::HumanTaskReleased {
                task_id: task_id(1),
                by: "ann".into(),
            },
        ));
        let (t, h) = human_of(&view, 1);
        assert_eq!(
            (t.status, t.started_at.as_ref()),
            (TaskStatus::Scheduled, None)
        );
        assert_eq!(h.claimed_by, None);

        view.apply(&env(
            6,
            Event::HumanTaskClaimed {
                task_id: task_id(1),
                by: "bob".into(),
            },
        ));
        view.apply(&env(
            7,
            Event::TaskCompleted {
                task_id: task_id(1),
                attempt: 1,
                output: json!({"approved": true}),
                metrics: None,
                by: Some("bob".into()),
            },
        ));
        let (t, h) = human_of(&view, 1);
        assert_eq!(t.status, TaskStatus::Completed);
        assert_eq!(t.output, Some(json!({"approved": true})));
        assert_eq!(t.finished_at, Some(rfc3339(T0 + 7000)));
        assert_eq!(h.completed_by.as_deref(), Some("bob"));
        assert_eq!(h.claimed_by.as_deref(), Some("bob"));
        assert!(view.current_steps.is_empty());
    }

    #[test]
    fn an_escalation_reassigns_unclaimed_and_marks_it_escalated() {
        let view = given(vec![
            started(),
            human_created(1, "approve", None),
            Event::HumanTaskClaimed {
                task_id: task_id(1),
                by: "ann".into(),
            },
            Event::HumanTaskReassigned {
                task_id: task_id(1),
                assign: Assignment {
                    assignee: None,
                    group: Some("leads".into()),
                },
                by: None,
            },
        ]);
        let (t, h) = human_of(&view, 1);
        assert_eq!(t.status, TaskStatus::Scheduled);
        assert_eq!(
            (h.group.as_deref(), h.claimed_by.as_ref()),
            (Some("leads"), None)
        );
        assert!(h.escalated);

        let mut view = view;
        view.apply(&env(
            5,
            Event::HumanTaskReassigned {
                task_id: task_id(1),
                assign: Assignment {
                    assignee: Some("carol".into()),
                    group: None,
                },
                by: Some("lead".into()),
            },
        ));
        let (_, h) = human_of(&view, 1);
        assert_eq!(
            (h.assignee.as_deref(), h.group.as_ref()),
            (Some("carol"), None)
        );
        assert!(
            h.escalated,
            "a manual reassignment keeps the escalation mark"
        );
    }

    #[test]
    fn a_manual_reassignment_is_not_an_escalation() {
        let view = given(vec![
            started(),
            human_created(1, "approve", None),
            Event::HumanTaskReassigned {
                task_id: task_id(1),
                assign: Assignment {
                    assignee: Some("carol".into()),
                    group: None,
                },
                by: Some("lead".into()),
            },
        ]);
        let (_, h) = human_of(&view, 1);
        assert!(!h.escalated);
        assert_eq!(h.assignee.as_deref(), Some("carol"));
    }

    #[test]
    fn a_human_timeout_fails_the_task_and_ends_its_step() {
        let view = given(vec![
            started(),
            step_started("approve"),
            human_created(1, "approve", Some(1000)),
            Event::TaskFailed {
                task_id: task_id(1),
                attempt: 1,
                error: ErrorInfo::new("timeout.human", "nobody completed the task"),
                retry_at_ms: None,
                metrics: None,
            },
        ]);
        let (t, _) = human_of(&view, 1);
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(t.error.as_ref().unwrap().kind, "timeout.human");
        assert!(view.current_steps.is_empty());
    }

    #[test]
    fn a_parked_human_task_retried_goes_back_to_its_inbox_unclaimed() {
        let view = given(vec![
            started(),
            step_started("approve"),
            human_created(1, "approve", Some(1000)),
            Event::HumanTaskClaimed {
                task_id: task_id(1),
                by: "ann".into(),
            },
            Event::TaskFailed {
                task_id: task_id(1),
                attempt: 1,
                error: ErrorInfo::new("timeout.human", ""),
                retry_at_ms: None,
                metrics: None,
            },
            Event::TaskParked {
                task_id: task_id(1),
                error: ErrorInfo::new("timeout.human", ""),
            },
        ]);
        assert_eq!(view.status, Status::Parked);
        assert_eq!(view.current_steps, ["approve"]);
        let mut view = view;
        view.apply(&env(
            7,
            Event::TaskRetried {
                task_id: task_id(1),
            },
        ));
        let first_due = human_of(&view, 1).1.due_at.clone();
        // The engine creates the task again (what `RetryTask` of a human task emits).
        view.apply(&env(8, human_created(1, "approve", Some(1000))));
        let (t, h) = human_of(&view, 1);
        assert_eq!(t.status, TaskStatus::Scheduled);
        assert_eq!(
            (t.started_at.as_deref(), t.finished_at.as_deref()),
            (None, None)
        );
        assert_eq!(
            t.error.as_ref().unwrap().kind,
            "timeout.human",
            "why it came back"
        );
        assert_eq!(h.claimed_by, None);
        assert_eq!(h.title, "Approve refund of 42");
        assert_ne!(h.due_at, first_due, "its timeout counts from the retry");
        assert_eq!(view.tasks.len(), 1, "the same task, not a second one");
        assert_eq!(view.status, Status::Running);
    }

    #[test]
    fn the_end_of_a_run_cancels_its_open_human_tasks_only() {
        let view = given(vec![
            started(),
            human_created(1, "a", None),
            human_created(2, "b", None),
            Event::TaskCompleted {
                task_id: task_id(2),
                attempt: 1,
                output: json!(true),
                metrics: None,
                by: Some("ann".into()),
            },
            scheduled(3, "c", TaskKind::Step, 1),
            Event::WorkflowFailed {
                error: ErrorInfo::new("boom", ""),
                parent: None,
            },
        ]);
        let status = |n| view.task(&task_id(n)).unwrap().status;
        assert_eq!(status(1), TaskStatus::Cancelled);
        assert_eq!(
            view.task(&task_id(1)).unwrap().finished_at,
            Some(rfc3339(T0 + 6000))
        );
        assert_eq!(status(2), TaskStatus::Completed);
        assert_eq!(
            status(3),
            TaskStatus::Scheduled,
            "worker tasks are left as they were"
        );
    }

    #[test]
    fn sla_warnings_and_breaches_are_listed_in_order() {
        let view = given(vec![
            started(),
            step_started("a"),
            Event::SlaWarned {
                step_key: Some("a".into()),
                sla_ms: 300,
            },
            Event::SlaWarned {
                step_key: None,
                sla_ms: 500,
            },
            Event::SlaBreached {
                step_key: Some("a".into()),
                sla_ms: 300,
            },
            Event::SlaBreached {
                step_key: None,
                sla_ms: 500,
            },
        ]);
        let got: Vec<_> = view
            .sla
            .iter()
            .map(|a| (a.step_key.as_deref(), a.sla_ms, a.kind, a.at.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("a"), 300, SlaKind::Warning, rfc3339(T0 + 3000)),
                (None, 500, SlaKind::Warning, rfc3339(T0 + 4000)),
                (Some("a"), 300, SlaKind::Breach, rfc3339(T0 + 5000)),
                (None, 500, SlaKind::Breach, rfc3339(T0 + 6000)),
            ]
        );
        assert_eq!(view.status, Status::Running, "an SLA only reports");
        let json = serde_json::to_value(&view.sla[2]).unwrap();
        assert_eq!(
            json,
            json!({"step_key": "a", "sla_ms": 300, "kind": "breach", "at": rfc3339(T0 + 5000)})
        );
    }

    #[test]
    fn a_signal_changes_no_view_field() {
        let before = given(vec![started(), step_started("wait-approval")]);
        let mut after = before.clone();
        after.apply(&env(
            3,
            Event::SignalReceived {
                name: "approval".into(),
                payload: json!({"ok": true}),
            },
        ));
        assert_eq!(after.last_seq, 3);
        assert_eq!(
            WorkflowView {
                last_seq: 2,
                updated_at: before.updated_at.clone(),
                ..after
            },
            before
        );
    }

    #[test]
    fn views_stored_before_human_tasks_and_slas_still_read() {
        let mut old =
            serde_json::to_value(given(vec![started(), scheduled(1, "a", TaskKind::Step, 1)]))
                .unwrap();
        old.as_object_mut().unwrap().remove("sla");
        let view: WorkflowView = serde_json::from_value(old).unwrap();
        assert!(view.sla.is_empty());
        assert!(view.tasks[0].human.is_none());
    }

    #[test]
    fn a_child_run_knows_its_parent() {
        let parent = WorkflowId(Uuid::from_u128(1));
        let view = given(vec![Event::WorkflowStarted {
            definition: "child".into(),
            version: 1,
            input: Value::Null,
            idempotency_key: None,
            parent: Some(crate::command::ParentRef {
                workflow_id: parent,
                step_key: "s".into(),
            }),
        }]);
        assert_eq!(view.parent_workflow_id, Some(parent));
    }
}
