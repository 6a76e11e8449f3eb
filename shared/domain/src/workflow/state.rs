//! The state of one run, folded from its events by [`evolve`].

use super::{Status, TaskStatus, Timer};
use crate::command::{ErrorInfo, ParentRef};
use crate::definition::{Assignment, Definition, Step, StepKind};
use crate::event::{Event, EventEnvelope, TaskKind};
use crate::ids::{CommandId, TaskId, WorkflowId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where a step instance stands in the engine's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// Started and not done: its task, timer, signal, child run or inner steps are pending.
    /// A step whose failure fails, parks or compensates the run stays `Running`.
    Running,
    /// Done, with its output recorded (also when an operator skipped its task).
    Completed,
    /// Failed under `on_failure: continue`: done, without output.
    Failed,
    /// Its `when` was false; it never ran.
    Skipped,
    /// Abandoned: the run or its `parallel` (join any) no longer needs it.
    Cancelled,
}

impl StepStatus {
    /// Whether the enclosing sequence may move past this step.
    pub fn is_done(self) -> bool {
        !matches!(self, StepStatus::Running)
    }
}

/// One step instance of a run, keyed in [`Workflow::steps`] by its step key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Id of the step in the definition (or of the ad-hoc or fallback step).
    pub step_id: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Its output once `Completed`; `Null` before and otherwise.
    pub output: Value,
    /// Key of the enclosing container step.
    pub parent: Option<String>,
    /// `switch`: the case taken (`Some(None)` = default).
    #[serde(default, with = "chosen_branch")]
    pub branch: Option<Option<usize>>,
    /// `foreach`: the items, evaluated once when the step started.
    pub items: Option<Vec<Value>>,
    /// `wait`: when it is over.
    pub fire_at_ms: Option<i64>,
    /// `workflow`: the child run.
    pub child: Option<WorkflowId>,
    /// When it started or was skipped (ms since the Unix epoch); a step SLA counts from it.
    pub started_ms: i64,
    /// `http` step whose breaker was open: the fallback step running in its place.
    pub fallback: Option<String>,
}

/// `StepState::branch` in JSON. A plain `Option<Option<_>>` would come back from `null` as
/// `None`, losing "the default branch was taken" (`Some(None)`).
mod chosen_branch {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Chosen {
        Case(usize),
        Default,
    }

    pub fn serialize<S: Serializer>(v: &Option<Option<usize>>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|b| b.map_or(Chosen::Default, Chosen::Case))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
        Ok(Option::<Chosen>::deserialize(d)?.map(|c| match c {
            Chosen::Case(i) => Some(i),
            Chosen::Default => None,
        }))
    }
}

/// The inbox side of a human task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanState {
    /// The rendered title.
    pub title: String,
    /// Who it is for now (after any reassignment).
    pub assign: Assignment,
    /// Who holds it; `None` while it is unclaimed.
    pub claimed_by: Option<String>,
    /// JSON Schema source of the form the output must satisfy.
    pub form: Option<Value>,
    /// When it entered the inbox (ms since the Unix epoch); its timeout and escalation count
    /// from it, so an operator retry restarts them.
    pub created_ms: i64,
    /// The task fails when nobody completed it this long (ms) after `created_ms`.
    pub timeout_ms: Option<u64>,
    /// It is reassigned to `escalate_to` when still open this long (ms) after `created_ms`.
    pub escalate_after_ms: Option<u64>,
    /// Who it is reassigned to on escalation.
    pub escalate_to: Option<Assignment>,
    /// The escalation happened (it happens once).
    pub escalated: bool,
}

/// One task of a run with its current attempt, keyed in [`Workflow::tasks`] by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// The task's id.
    pub id: TaskId,
    /// Key of the step instance it runs (for a compensation, the step it undoes).
    pub step_key: String,
    /// Id of that step.
    pub step_id: String,
    /// Step task, compensation, or human task.
    pub kind: TaskKind,
    /// Task type (`human` for a human task, `http` for an `http` step).
    pub task: String,
    /// Queue its attempts are offered on (empty for a human task).
    pub queue: String,
    /// Number of the current attempt, from 1. An operator retry continues the count, except
    /// for a human task, which starts again at 1.
    pub attempt: u32,
    /// The attempt number after which no retry follows. An operator retry sets it to the
    /// current attempt plus the policy's `max_attempts` (a fresh budget); a deferred attempt
    /// (breaker open) raises it by one, as it was never made.
    pub max_attempts: u32,
    /// Where the current attempt stands; `Scheduled` while waiting for `retry_at_ms`.
    pub status: TaskStatus,
    /// Input of every attempt (`Null` for a human task).
    pub input: Value,
    /// What it produced (or the operator's output on a skip); `Null` until then.
    pub output: Value,
    /// The latest failure (or deferral, as `breaker_open`); a later success does not clear
    /// it.
    pub error: Option<ErrorInfo>,
    /// Latest checkpoint a heartbeat carried; handed to the next attempt.
    pub checkpoint: Option<Value>,
    /// In the dead-letter queue, waiting for an operator.
    pub parked: bool,
    /// Set while waiting before the next attempt: the backoff after a failure, or the delay
    /// of an attempt deferred while a circuit breaker was open.
    pub retry_at_ms: Option<i64>,
    /// When the current attempt was scheduled (ms since the Unix epoch).
    pub scheduled_ms: i64,
    /// When the current attempt started (or a person claimed the task); `None` before.
    pub started_ms: Option<i64>,
    /// When the current attempt last sent a heartbeat (its start counts as one).
    pub last_heartbeat_ms: Option<i64>,
    /// The process the running attempt was taken through (`TaskStarted`'s `via`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_via: Option<String>,
    /// Start-to-close timeout of an attempt (ms); `u64::MAX` for a human task.
    pub timeout_ms: u64,
    /// Longest gap allowed between heartbeats (ms); `None`: no heartbeat needed.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Longest an attempt may wait for a worker to start it (ms); `None`: no limit.
    pub schedule_to_start_timeout_ms: Option<u64>,
    /// Set for `human` steps.
    pub human: Option<HumanState>,
    /// Set for `http` steps: the call the saga processor makes.
    pub http: Option<crate::event::HttpRequest>,
}

impl TaskState {
    /// Scheduled, running, or waiting for a retry: a worker may still report on it.
    pub fn is_active(&self) -> bool {
        matches!(self.status, TaskStatus::Scheduled | TaskStatus::Running)
    }

    /// Whether the current attempt waits on `tasks.<queue>` for a worker to start it: it is
    /// scheduled and due (not waiting for a backoff), not parked, and neither a human task
    /// (people claim those through the API) nor an `http` call (made by the saga processor).
    pub fn awaits_worker(&self) -> bool {
        self.status == TaskStatus::Scheduled
            && self.retry_at_ms.is_none()
            && !self.parked
            && self.kind != TaskKind::Human
            && self.http.is_none()
    }

    /// The record that offers the current attempt to workers, if it [awaits one](Self::awaits_worker).
    pub fn dispatch(&self, workflow_id: WorkflowId) -> Option<crate::topics::TaskDispatch> {
        self.awaits_worker().then(|| crate::topics::TaskDispatch {
            task_id: self.id.clone(),
            workflow_id,
            step_id: self.step_id.clone(),
            task: self.task.clone(),
            queue: self.queue.clone(),
            attempt: self.attempt,
            input: self.input.clone(),
            checkpoint: self.checkpoint.clone(),
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
        })
    }
}

/// The run is compensating (`CompensationStarted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compensation {
    /// Why compensation began.
    pub reason: ErrorInfo,
    /// End `cancelled` (an operator's cancel with compensation) rather than `compensated`.
    pub then_cancel: bool,
}

/// An ad-hoc task step added to a running run (`TaskAdded`).
#[derive(Debug, Clone)]
pub struct ExtraStep {
    /// Index in the top-level sequence as it stood when the step was added.
    pub position: usize,
    /// The compiled step.
    pub step: Step,
    /// The task id reserved for it.
    pub task_id: TaskId,
    /// The step as the command gave it; snapshots keep this, not the compiled step.
    pub source: Value,
}

/// One run. Built by [`Workflow::new`] from its `WorkflowStarted` event, then by [`evolve`].
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The run's id.
    pub id: WorkflowId,
    /// The definition version the run started with; it keeps it to the end.
    pub definition: Arc<Definition>,
    /// The start input.
    pub input: Value,
    /// For a child run, the parent run and step waiting for it.
    pub parent: Option<ParentRef>,
    /// The key the run was started with, if any.
    pub idempotency_key: Option<String>,
    /// When it started (ms since the Unix epoch); the run's SLA counts from it.
    pub created_ms: i64,
    /// Time of its latest event (ms since the Unix epoch).
    pub updated_ms: i64,
    /// `seq` of its latest event; events at or below it are ignored by [`evolve`].
    pub last_seq: u64,
    /// How it ended; `None` while it is live.
    pub terminal: Option<Status>,
    /// Paused by an operator.
    pub paused: bool,
    /// Set once compensation began.
    pub compensation: Option<Compensation>,
    /// The run's output once completed.
    pub output: Option<Value>,
    /// Why it failed, once failed.
    pub error: Option<ErrorInfo>,
    /// Step instances that started or were skipped, by step key.
    pub steps: HashMap<String, StepState>,
    /// Every task of the run, by id.
    pub tasks: HashMap<TaskId, TaskState>,
    /// Task number the next new task gets.
    pub next_task: u32,
    /// Keys of completed task steps, in completion order (compensation runs it backwards).
    pub completed_order: Vec<String>,
    /// Ad-hoc task steps, in order of addition.
    pub extra_steps: Vec<ExtraStep>,
    /// Ids of the commands that produced events of this run: a command whose id is here is
    /// a duplicate and changes nothing.
    pub applied: HashSet<CommandId>,
    /// Signals received, by name, in arrival order.
    pub signals: HashMap<String, Vec<Value>>,
    /// How many signals of each name `signal` steps have taken.
    pub signals_consumed: HashMap<String, usize>,
    /// SLA warnings and breaches already emitted: (step key or `None` for the run, breach).
    pub sla_fired: HashSet<(Option<String>, bool)>,
}

impl Workflow {
    /// The run as of its first event; `None` unless that event is `WorkflowStarted`.
    pub fn new(env: &EventEnvelope, definition: Arc<Definition>) -> Option<Workflow> {
        let Event::WorkflowStarted {
            input,
            idempotency_key,
            parent,
            ..
        } = &env.event
        else {
            return None;
        };
        let mut applied = HashSet::new();
        if let Some(c) = &env.command_id {
            applied.insert(c.clone());
        }
        Some(Workflow {
            id: env.workflow_id,
            definition,
            input: input.clone(),
            parent: parent.clone(),
            idempotency_key: idempotency_key.clone(),
            created_ms: env.at_ms,
            updated_ms: env.at_ms,
            last_seq: env.seq,
            terminal: None,
            paused: false,
            compensation: None,
            output: None,
            error: None,
            steps: HashMap::new(),
            tasks: HashMap::new(),
            next_task: 1,
            completed_order: Vec::new(),
            extra_steps: Vec::new(),
            applied,
            signals: HashMap::new(),
            signals_consumed: HashMap::new(),
            sla_fired: HashSet::new(),
        })
    }

    /// The run's status, derived like the read model's: terminal, else paused > parked >
    /// compensating > running.
    pub fn status(&self) -> Status {
        if let Some(t) = self.terminal {
            t
        } else if self.paused {
            Status::Paused
        } else if self.tasks.values().any(|t| t.parked) {
            Status::Parked
        } else if self.compensation.is_some() {
            Status::Compensating
        } else {
            Status::Running
        }
    }

    /// The top-level sequence: the definition's steps with ad-hoc tasks inserted.
    pub fn root_steps(&self) -> std::borrow::Cow<'_, [Step]> {
        if self.extra_steps.is_empty() {
            return std::borrow::Cow::Borrowed(&self.definition.steps);
        }
        let mut steps = self.definition.steps.clone();
        // Each position was an index into the sequence as it stood when the task was added,
        // so inserting in order of addition rebuilds it exactly.
        for extra in &self.extra_steps {
            steps.insert(extra.position.min(steps.len()), extra.step.clone());
        }
        std::borrow::Cow::Owned(steps)
    }

    /// Ids of the ad-hoc steps, which a new ad-hoc step must not reuse.
    pub fn extra_step_ids(&self) -> Vec<String> {
        self.extra_steps.iter().map(|e| e.step.id.clone()).collect()
    }

    /// A step of the definition or an ad-hoc one, by id.
    pub fn find_step(&self, id: &str) -> Option<&Step> {
        self.definition.step(id).or_else(|| {
            self.extra_steps
                .iter()
                .map(|e| &e.step)
                .find(|s| s.id == id)
        })
    }

    /// The task id reserved for an ad-hoc step, if `step_key` is one.
    pub fn reserved_task(&self, step_key: &str) -> Option<&TaskId> {
        self.extra_steps
            .iter()
            .find(|e| e.step.id == step_key)
            .map(|e| &e.task_id)
    }

    /// Whether `key` is `ancestor` or nested (at any depth) inside it.
    pub fn is_under(&self, key: &str, ancestor: &str) -> bool {
        let mut cur = Some(key);
        while let Some(k) = cur {
            if k == ancestor {
                return true;
            }
            cur = self.steps.get(k).and_then(|s| s.parent.as_deref());
        }
        false
    }

    /// Whether every container around `key` is still running. A step left behind by a
    /// container that finished without it (the losers of a `parallel` with `join: any`) is
    /// abandoned: its `wait` timer must neither be held nor fire.
    pub fn is_live(&self, key: &str) -> bool {
        let mut cur = self.steps.get(key).and_then(|s| s.parent.as_deref());
        while let Some(k) = cur {
            match self.steps.get(k) {
                Some(s) if s.status == StepStatus::Running => cur = s.parent.as_deref(),
                _ => return false,
            }
        }
        true
    }

    /// The offers to workers this run's state implies: one per attempt that
    /// [awaits a worker](TaskState::awaits_worker), in task order. An engine that takes over
    /// the run appends them again, because on a log without atomic multi-topic appends a
    /// crash can record an attempt's `TaskScheduled` and lose its offer.
    pub fn pending_dispatches(&self) -> Vec<crate::topics::TaskDispatch> {
        if self.terminal.is_some() {
            return Vec::new();
        }
        let mut out: Vec<_> = self
            .tasks
            .values()
            .filter_map(|t| t.dispatch(self.id))
            .collect();
        out.sort_by_key(|d| task_number(&d.task_id));
        out
    }

    /// Every timer the engine should hold for this run right now.
    pub fn timers(&self) -> Vec<(i64, Timer)> {
        let mut out = Vec::new();
        if self.terminal.is_some() {
            return out;
        }
        self.sla_timers(&mut out);
        for t in self.tasks.values() {
            let (id, attempt) = (t.id.clone(), t.attempt);
            if let Some(h) = &t.human {
                if t.is_active() {
                    if let (Some(after), false) = (h.escalate_after_ms, h.escalated) {
                        let at = deadline(h.created_ms, after);
                        out.push((
                            at,
                            Timer::Escalate {
                                task_id: id.clone(),
                            },
                        ));
                    }
                    if let Some(timeout) = h.timeout_ms {
                        let at = deadline(h.created_ms, timeout);
                        out.push((at, Timer::HumanTimeout { task_id: id }));
                    }
                }
                continue;
            }
            if let Some(at) = t.retry_at_ms {
                out.push((
                    at,
                    Timer::Retry {
                        task_id: id,
                        attempt,
                    },
                ));
                continue;
            }
            match t.status {
                TaskStatus::Scheduled => {
                    if let Some(s2s) = t.schedule_to_start_timeout_ms {
                        let at = deadline(t.scheduled_ms, s2s);
                        out.push((
                            at,
                            Timer::ScheduleToStart {
                                task_id: id,
                                attempt,
                            },
                        ));
                    }
                }
                TaskStatus::Running => {
                    let started = t.started_ms.unwrap_or(t.scheduled_ms);
                    let at = deadline(started, t.timeout_ms);
                    out.push((
                        at,
                        Timer::StartToClose {
                            task_id: id.clone(),
                            attempt,
                        },
                    ));
                    if let Some(hb) = t.heartbeat_timeout_ms {
                        let last = t.last_heartbeat_ms.unwrap_or(started);
                        out.push((
                            deadline(last, hb),
                            Timer::Heartbeat {
                                task_id: id,
                                attempt,
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        for (key, s) in &self.steps {
            if let (StepStatus::Running, Some(at), true) =
                (s.status, s.fire_at_ms, self.is_live(key))
            {
                out.push((
                    at,
                    Timer::Wait {
                        step_key: key.clone(),
                    },
                ));
            }
        }
        out
    }
}

impl Workflow {
    /// The SLA of the run and of every running step that has one, minus those already fired.
    fn sla_timers(&self, out: &mut Vec<(i64, Timer)>) {
        let mut push = |key: Option<&String>, start: i64, sla: &crate::definition::Sla| {
            let key = key.cloned();
            let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if let Some(warn) = sla.warn_after()
                && !self.sla_fired.contains(&(key.clone(), false))
            {
                let timer = Timer::Sla {
                    step_key: key.clone(),
                    breach: false,
                };
                out.push((deadline(start, millis(warn)), timer));
            }
            if !self.sla_fired.contains(&(key.clone(), true)) {
                let timer = Timer::Sla {
                    step_key: key,
                    breach: true,
                };
                out.push((deadline(start, millis(sla.duration)), timer));
            }
        };
        if let Some(sla) = &self.definition.sla {
            push(None, self.created_ms, sla);
        }
        for (key, s) in &self.steps {
            if s.status != StepStatus::Running {
                continue;
            }
            if let Some(sla) = self.find_step(&s.step_id).and_then(|d| d.sla.as_ref()) {
                push(Some(key), s.started_ms, sla);
            }
        }
    }
}

/// `from + ms`, saturating: a timeout too long for the clock means "never", not a
/// wrapped-around deadline in the past.
pub(crate) fn deadline(from: i64, ms: u64) -> i64 {
    from.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn task_number(id: &TaskId) -> Option<u32> {
    id.0.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
}

/// Applies one event of this run. Total: an event that does not fit the state (which a
/// correct log never holds) is ignored rather than corrupting it.
pub fn evolve(wf: &mut Workflow, env: &EventEnvelope) {
    if env.seq <= wf.last_seq {
        return;
    }
    wf.last_seq = env.seq;
    wf.updated_ms = env.at_ms;
    if let Some(c) = &env.command_id {
        wf.applied.insert(c.clone());
    }
    let at = env.at_ms;
    match &env.event {
        Event::WorkflowStarted { .. } => {}
        Event::StepStarted {
            step_key,
            step_id,
            parent,
        } => {
            wf.steps.insert(
                step_key.clone(),
                new_step(step_id, StepStatus::Running, parent, at),
            );
        }
        Event::StepSkipped {
            step_key,
            step_id,
            parent,
        } => {
            wf.steps.insert(
                step_key.clone(),
                new_step(step_id, StepStatus::Skipped, parent, at),
            );
        }
        Event::StepCompleted { step_key, output } => {
            let mut signal = None;
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.status = StepStatus::Completed;
                s.output = output.clone();
                signal = Some(s.step_id.clone());
            }
            // A `signal` step that completes has taken the oldest signal of its name.
            if let Some(StepKind::Signal { name, .. }) =
                signal.and_then(|id| wf.find_step(&id)).map(|s| &s.kind)
            {
                *wf.signals_consumed.entry(name.clone()).or_default() += 1;
            }
        }
        Event::TaskDeferred {
            task_id,
            retry_at_ms,
            reason,
            ..
        } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Scheduled;
                t.retry_at_ms = Some(*retry_at_ms);
                // A deferred attempt was never made: it does not use up the budget.
                t.max_attempts = t.max_attempts.saturating_add(1);
                t.error = Some(ErrorInfo {
                    kind: "breaker_open".into(),
                    message: reason.clone(),
                    retryable: true,
                });
            }
        }
        Event::FallbackTaken { step_key, fallback } => {
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.status = StepStatus::Running;
                s.fallback = Some(fallback.clone());
            }
        }
        Event::SignalReceived { name, payload } => {
            wf.signals
                .entry(name.clone())
                .or_default()
                .push(payload.clone());
        }
        Event::HumanTaskCreated {
            task_id,
            step_key,
            step_id,
            title,
            assign,
            form,
            timeout_ms,
            escalate_after_ms,
            escalate_to,
        } => {
            if let Some(n) = task_number(task_id) {
                wf.next_task = wf.next_task.max(n + 1);
            }
            wf.tasks.insert(
                task_id.clone(),
                TaskState {
                    id: task_id.clone(),
                    step_key: step_key.clone(),
                    step_id: step_id.clone(),
                    kind: TaskKind::Human,
                    task: "human".into(),
                    queue: String::new(),
                    attempt: 1,
                    max_attempts: 1,
                    status: TaskStatus::Scheduled,
                    input: Value::Null,
                    output: Value::Null,
                    error: None,
                    checkpoint: None,
                    parked: false,
                    retry_at_ms: None,
                    scheduled_ms: at,
                    started_ms: None,
                    last_heartbeat_ms: None,
                    started_via: None,
                    // People are not held to a worker's start-to-close timeout.
                    timeout_ms: u64::MAX,
                    heartbeat_timeout_ms: None,
                    schedule_to_start_timeout_ms: None,
                    http: None,
                    human: Some(HumanState {
                        title: title.clone(),
                        assign: assign.clone(),
                        claimed_by: None,
                        form: form.clone(),
                        created_ms: at,
                        timeout_ms: *timeout_ms,
                        escalate_after_ms: *escalate_after_ms,
                        escalate_to: escalate_to.clone(),
                        escalated: false,
                    }),
                },
            );
        }
        Event::HumanTaskClaimed { task_id, by } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Running;
                t.started_ms = Some(at);
                if let Some(h) = &mut t.human {
                    h.claimed_by = Some(by.clone());
                }
            }
        }
        Event::HumanTaskReleased { task_id, .. } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Scheduled;
                if let Some(h) = &mut t.human {
                    h.claimed_by = None;
                }
            }
        }
        Event::HumanTaskReassigned {
            task_id,
            assign,
            by,
        } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Scheduled;
                if let Some(h) = &mut t.human {
                    h.assign = assign.clone();
                    h.claimed_by = None;
                    if by.is_none() {
                        h.escalated = true;
                    }
                }
            }
        }
        Event::SlaWarned { step_key, .. } => {
            wf.sla_fired.insert((step_key.clone(), false));
        }
        Event::SlaBreached { step_key, .. } => {
            wf.sla_fired.insert((step_key.clone(), true));
        }
        Event::StepFailed { step_key, .. } => set_step_status(wf, step_key, StepStatus::Failed),
        Event::BranchChosen { step_key, branch } => {
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.branch = Some(*branch);
            }
        }
        Event::ForeachStarted { step_key, items } => {
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.items = Some(items.clone());
            }
        }
        Event::TimerStarted {
            step_key,
            fire_at_ms,
        } => {
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.fire_at_ms = Some(*fire_at_ms);
            }
        }
        Event::ChildWorkflowRequested {
            step_key, child_id, ..
        } => {
            if let Some(s) = wf.steps.get_mut(step_key) {
                s.child = Some(*child_id);
            }
        }
        Event::ChildCancelRequested { step_key, .. } => {
            set_step_status(wf, step_key, StepStatus::Cancelled)
        }
        Event::TaskScheduled {
            task_id,
            step_key,
            step_id,
            kind,
            task,
            queue,
            attempt,
            max_attempts,
            input,
            checkpoint,
            timeout_ms,
            heartbeat_timeout_ms,
            schedule_to_start_timeout_ms,
            http,
        } => {
            if let Some(n) = task_number(task_id) {
                wf.next_task = wf.next_task.max(n + 1);
            }
            let t = wf
                .tasks
                .entry(task_id.clone())
                .or_insert_with(|| TaskState {
                    id: task_id.clone(),
                    step_key: step_key.clone(),
                    step_id: step_id.clone(),
                    kind: *kind,
                    task: task.clone(),
                    queue: queue.clone(),
                    attempt: 0,
                    max_attempts: 0,
                    status: TaskStatus::Scheduled,
                    input: Value::Null,
                    output: Value::Null,
                    error: None,
                    checkpoint: None,
                    parked: false,
                    retry_at_ms: None,
                    scheduled_ms: at,
                    started_ms: None,
                    last_heartbeat_ms: None,
                    started_via: None,
                    timeout_ms: 0,
                    heartbeat_timeout_ms: None,
                    schedule_to_start_timeout_ms: None,
                    human: None,
                    http: None,
                });
            t.attempt = *attempt;
            t.max_attempts = *max_attempts;
            t.status = TaskStatus::Scheduled;
            t.input = input.clone();
            t.checkpoint = checkpoint.clone();
            t.parked = false;
            t.retry_at_ms = None;
            t.scheduled_ms = at;
            t.started_ms = None;
            t.last_heartbeat_ms = None;
            t.timeout_ms = *timeout_ms;
            t.heartbeat_timeout_ms = *heartbeat_timeout_ms;
            t.schedule_to_start_timeout_ms = *schedule_to_start_timeout_ms;
            t.http = http.clone();
        }
        Event::TaskStarted { task_id, via, .. } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Running;
                t.started_ms = Some(at);
                t.last_heartbeat_ms = Some(at);
                t.started_via = via.clone();
            }
        }
        Event::TaskHeartbeat {
            task_id,
            checkpoint,
            ..
        } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.last_heartbeat_ms = Some(at);
                if checkpoint.is_some() {
                    t.checkpoint = checkpoint.clone();
                }
            }
        }
        Event::TaskCompleted {
            task_id, output, ..
        } => finish_task(wf, task_id, TaskStatus::Completed, output.clone(), true),
        Event::TaskSkipped { task_id, output } => {
            finish_task(wf, task_id, TaskStatus::Skipped, output.clone(), false)
        }
        Event::TaskFailed {
            task_id,
            error,
            retry_at_ms,
            ..
        } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.error = Some(error.clone());
                t.retry_at_ms = *retry_at_ms;
                t.status = if retry_at_ms.is_some() {
                    TaskStatus::Scheduled
                } else {
                    TaskStatus::Failed
                };
            }
        }
        Event::TaskParked { task_id, error } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.parked = true;
                t.status = TaskStatus::Failed;
                t.error = Some(error.clone());
            }
        }
        Event::TaskCancelled { task_id } => {
            let mut step = None;
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.status = TaskStatus::Cancelled;
                t.retry_at_ms = None;
                t.parked = false;
                if t.kind != TaskKind::Compensation {
                    step = Some(t.step_key.clone());
                }
            }
            if let Some(key) = step {
                set_step_status(wf, &key, StepStatus::Cancelled);
            }
        }
        Event::TaskRetried { task_id } => {
            if let Some(t) = wf.tasks.get_mut(task_id) {
                t.parked = false;
            }
        }
        Event::TaskAdded {
            step,
            position,
            task_id,
        } => {
            if let Ok(parsed) = wf.definition.parse_step(step, &wf.extra_step_ids()) {
                if let Some(n) = task_number(task_id) {
                    wf.next_task = wf.next_task.max(n + 1);
                }
                wf.extra_steps.push(ExtraStep {
                    position: *position,
                    step: parsed,
                    task_id: task_id.clone(),
                    source: step.clone(),
                });
            }
        }
        Event::WorkflowPaused => wf.paused = true,
        Event::WorkflowResumed => wf.paused = false,
        Event::CompensationStarted {
            reason,
            then_cancel,
        } => {
            wf.compensation = Some(Compensation {
                reason: reason.clone(),
                then_cancel: *then_cancel,
            });
        }
        Event::WorkflowCompleted { output, .. } => {
            wf.terminal = Some(Status::Completed);
            wf.output = Some(output.clone());
        }
        Event::WorkflowFailed { error, .. } => {
            wf.terminal = Some(Status::Failed);
            wf.error = Some(error.clone());
        }
        Event::WorkflowCompensated { .. } => wf.terminal = Some(Status::Compensated),
        Event::WorkflowCancelled { .. } => wf.terminal = Some(Status::Cancelled),
    }
}

fn new_step(step_id: &str, status: StepStatus, parent: &Option<String>, at: i64) -> StepState {
    StepState {
        started_ms: at,
        fallback: None,
        step_id: step_id.to_string(),
        status,
        output: Value::Null,
        parent: parent.clone(),
        branch: None,
        items: None,
        fire_at_ms: None,
        child: None,
    }
}

fn set_step_status(wf: &mut Workflow, key: &str, status: StepStatus) {
    if let Some(s) = wf.steps.get_mut(key) {
        s.status = status;
    }
}

fn finish_task(wf: &mut Workflow, id: &TaskId, status: TaskStatus, output: Value, record: bool) {
    let Some(t) = wf.tasks.get_mut(id) else {
        return;
    };
    t.status = status;
    t.output = output.clone();
    t.parked = false;
    t.retry_at_ms = None;
    if t.kind == TaskKind::Compensation {
        return;
    }
    let key = t.step_key.clone();
    if let Some(s) = wf.steps.get_mut(&key) {
        s.status = StepStatus::Completed;
        s.output = output;
    }
    if record {
        wf.completed_order.push(key);
    }
}

/// Whether a step (by kind) is a task step that names a compensation.
pub(crate) fn compensation_of(step: &Step) -> Option<&str> {
    match &step.kind {
        StepKind::Task(spec) => spec.compensate.as_deref(),
        _ => None,
    }
}
