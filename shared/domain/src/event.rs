//! Events: facts about a run, in past tense. The `distorch.events` topic holds them (keyed by
//! workflow id) and is the only source of truth: engine state, read models and analytics
//! are all folds over it.

use crate::command::{ErrorInfo, ParentRef, TaskMetrics};
use crate::definition::Assignment;
use crate::ids::{CommandId, TaskId, WorkflowId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Schema version written into every new event envelope. Readers accept every version up
/// to this one.
pub const SCHEMA_VERSION: u32 = 1;

fn v1() -> u32 {
    1
}

/// Reads `v`, refusing a version newer than [`SCHEMA_VERSION`]: a record written by a newer
/// DisTorch could mean something this one would misread, so it is an error (the engine
/// stops, other readers skip it and log why) rather than a guess. Upgrade readers first.
fn known_version<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(deserializer)?;
    if v > SCHEMA_VERSION {
        return Err(serde::de::Error::custom(format!(
            "schema version {v} is newer than this DisTorch reads ({SCHEMA_VERSION}); \
             upgrade it before it reads records of the newer version"
        )));
    }
    Ok(v)
}

/// One event of a run as the log stores it; the event's own fields sit next to the
/// envelope's in the same JSON object, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The run; also the record's key.
    pub workflow_id: WorkflowId,
    /// 1, 2, 3... per run, without gaps.
    pub seq: u64,
    /// Engine time of the decision, ms since the Unix epoch.
    pub at_ms: i64,
    /// The command that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    /// Schema version the record was written with (1 when absent); see [`SCHEMA_VERSION`].
    #[serde(default = "v1", deserialize_with = "known_version")]
    pub v: u32,
    /// The fact itself.
    #[serde(flatten)]
    pub event: Event,
}

/// What a task is for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// The work of a `task` or `http` step.
    Step,
    /// Undoes a completed step while the run compensates.
    Compensation,
    /// A `human` step's task, completed through the inbox API rather than by a worker.
    Human,
}

/// A fact about a run, in JSON tagged by `type`: the snake_case name of the variant
/// ([`Event::name`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The run began; always its first event.
    WorkflowStarted {
        /// Name of the definition it runs.
        definition: String,
        /// The definition version it runs (resolved: never "latest").
        version: u32,
        /// The start input.
        input: Value,
        /// The key the run's id was derived from, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// For a child run: the parent run and its waiting step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// A step instance began. `step_key` is the step id, prefixed by `<foreach key>[<i>].`
    /// for every enclosing `foreach` iteration, or by `<step key>/` for a fallback step
    /// running in place of an `http` step; `parent` is the enclosing container's key.
    StepStarted {
        /// Key of the step instance.
        step_key: String,
        /// Id of the step in the definition.
        step_id: String,
        /// Key of the enclosing container step; `None` at the top level.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// The step's `when` was false: it did not run. (Steps of an untaken `switch` branch get
    /// no event at all.)
    StepSkipped {
        /// Key of the step instance.
        step_key: String,
        /// Id of the step in the definition.
        step_id: String,
        /// Key of the enclosing container step; `None` at the top level.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// A step that does not end with a task of its own finished: a container (switch,
    /// parallel, foreach), a `wait` or `signal` step, a child run, or an `http` step whose
    /// fallback ran in its place. Task and human steps end with their task's events.
    StepCompleted {
        /// Key of the step instance.
        step_key: String,
        /// The step's output: that of the last step of the branch a `switch` took, the array of
        /// branch outputs of a `parallel` (the winner's alone with `join: any`), the array
        /// of iteration outputs of a `foreach`, a signal's payload, a child run's output, the
        /// fallback's output, `null` for a `wait`.
        output: Value,
    },
    /// A step failed and its policy is `continue`: the run goes on without its output.
    StepFailed {
        /// Key of the step instance.
        step_key: String,
        /// Why it failed.
        error: ErrorInfo,
    },
    /// A `switch` evaluated its cases.
    BranchChosen {
        /// Key of the `switch` step.
        step_key: String,
        /// Index of the first case whose condition held; `None` for the default branch.
        branch: Option<usize>,
    },
    /// A `foreach` evaluated its `items`: one iteration per item.
    ForeachStarted {
        /// Key of the `foreach` step.
        step_key: String,
        /// The items, evaluated once; iteration `i` sees `items[i]` as `.item`.
        items: Vec<Value>,
    },
    /// A `wait` step, or a `signal` step with a timeout, set its timer.
    TimerStarted {
        /// Key of the step.
        step_key: String,
        /// When the timer fires, ms since the Unix epoch.
        fire_at_ms: i64,
    },
    /// A `workflow` step asks for a child run; the saga processor starts it.
    ChildWorkflowRequested {
        /// Key of the waiting step.
        step_key: String,
        /// The child's id, derived from this run's id and `step_key`.
        child_id: WorkflowId,
        /// Name of the definition the child runs.
        definition: String,
        /// Its version; latest when `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// The child's input.
        input: Value,
    },
    /// The run stopped waiting for a child that it no longer needs (cancel, fail, join any).
    ChildCancelRequested {
        /// Key of the step that waited for it.
        step_key: String,
        /// The child; the saga processor cancels it.
        child_id: WorkflowId,
    },
    /// An attempt of a task is ready: for a worker on `queue`, or for the saga processor to
    /// make when `http` is set (human tasks begin with `HumanTaskCreated` instead).
    TaskScheduled {
        /// The task.
        task_id: TaskId,
        /// Key of the step instance it runs; for a compensation, of the step it undoes.
        step_key: String,
        /// Id of that step.
        step_id: String,
        /// Step task or compensation.
        kind: TaskKind,
        /// Task type.
        task: String,
        /// Queue the attempt is offered on.
        queue: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// The attempt number after which no retry follows.
        max_attempts: u32,
        /// The attempt's input.
        input: Value,
        /// Latest checkpoint of an earlier attempt, handed to this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
        /// Start-to-close timeout of the attempt, ms.
        timeout_ms: u64,
        /// Longest gap allowed between heartbeats, ms; `None`: no heartbeat needed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_timeout_ms: Option<u64>,
        /// Longest the attempt may wait for a worker to start it, ms; `None`: no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule_to_start_timeout_ms: Option<u64>,
        /// For `http` steps: the call the saga processor makes for this attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http: Option<HttpRequest>,
    },
    /// An attempt was not made (circuit breaker open); the next try at `retry_at_ms` does
    /// not use up an attempt.
    TaskDeferred {
        /// The task.
        task_id: TaskId,
        /// The attempt not made.
        attempt: u32,
        /// When the next attempt is scheduled, ms since the Unix epoch.
        retry_at_ms: i64,
        /// Why, for people (the breaker's state).
        reason: String,
    },
    /// The `http` step's breaker was open: its `fallback` step runs in its place.
    FallbackTaken {
        /// Key of the `http` step.
        step_key: String,
        /// Id of the fallback step (one of the definition's `fallbacks`); it runs under the
        /// key `<step_key>/<fallback>`.
        fallback: String,
    },
    /// A worker started an attempt.
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// The attempt started.
        attempt: u32,
        /// The worker that took it.
        worker_id: String,
        /// The process it was taken through (see `Command::StartTask`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// A running attempt reported that it is alive.
    TaskHeartbeat {
        /// The task.
        task_id: TaskId,
        /// The attempt.
        attempt: u32,
        /// Progress to resume from; `None` keeps the last one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
    },
    /// An attempt succeeded, or someone completed a human task.
    TaskCompleted {
        /// The task.
        task_id: TaskId,
        /// The attempt that succeeded.
        attempt: u32,
        /// What it produced.
        output: Value,
        /// Resource use reported for the attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
        /// Who completed it, for human tasks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An attempt failed (worker error or timeout). With `retry_at_ms` another attempt follows
    /// at that time; without it the attempts are exhausted and the step's policy applies.
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: ErrorInfo,
        /// When the next attempt is scheduled, ms since the Unix epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<i64>,
        /// Resource use reported for the attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    /// The task waits in the dead-letter queue for an operator.
    TaskParked {
        /// The task.
        task_id: TaskId,
        /// Why it was parked, usually its last attempt's failure.
        error: ErrorInfo,
    },
    /// The task was abandoned: its run or its step no longer needs it (the run ended or
    /// began compensating, a `parallel` race was decided, a fallback replaced it).
    TaskCancelled {
        /// The task.
        task_id: TaskId,
    },
    /// Operator skip: the task counts as completed with `output`.
    TaskSkipped {
        /// The task.
        task_id: TaskId,
        /// The output given by the operator.
        output: Value,
    },
    /// Operator retry: a new attempt follows with a fresh attempt budget.
    TaskRetried {
        /// The parked task. A `TaskScheduled` follows, or for a human task a new
        /// `HumanTaskCreated`.
        task_id: TaskId,
    },
    /// An ad-hoc task step, inserted into the top-level sequence at `position`; it will run
    /// as `task_id` (reserved now so the caller gets the id at once).
    TaskAdded {
        /// The step as the command gave it.
        step: Value,
        /// Index in the top-level sequence as it stood when the step was added.
        position: usize,
        /// The id its task will have.
        task_id: TaskId,
    },
    /// A signal arrived; a `signal` step of that name consumes it (now or later).
    SignalReceived {
        /// Signal name.
        name: String,
        /// Its data: the output of the step that takes it.
        payload: Value,
    },
    /// A human task is waiting in the inbox of `assignee` and/or `group`.
    HumanTaskCreated {
        /// The task.
        task_id: TaskId,
        /// Key of the `human` step instance.
        step_key: String,
        /// Id of that step.
        step_id: String,
        /// The rendered title.
        title: String,
        /// Who it is for (`assignee`, `group`, flattened).
        #[serde(flatten)]
        assign: Assignment,
        /// JSON Schema source the completion's output must satisfy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        form: Option<Value>,
        /// The task fails when nobody completed it this long after this event, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// It is reassigned to `escalate_to` when still open this long after this event, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalate_after_ms: Option<u64>,
        /// Who it is reassigned to on escalation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalate_to: Option<Assignment>,
    },
    /// Someone claimed a human task.
    HumanTaskClaimed {
        /// The task.
        task_id: TaskId,
        /// Who.
        by: String,
    },
    /// The holder put a claimed human task back in its inbox.
    HumanTaskReleased {
        /// The task.
        task_id: TaskId,
        /// Who.
        by: String,
    },
    /// New owner; `by` is `None` when the escalation timer did it.
    HumanTaskReassigned {
        /// The task.
        task_id: TaskId,
        /// The new assignee and/or group (flattened).
        #[serde(flatten)]
        assign: Assignment,
        /// Who reassigned it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// `warn_at` of an SLA passed (`step_key` `None`: the run's SLA).
    SlaWarned {
        /// Key of the step whose SLA it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_key: Option<String>,
        /// The SLA's whole duration, ms.
        sla_ms: u64,
    },
    /// An SLA's duration passed while its run or step was still going (`step_key` `None`:
    /// the run's SLA). It only reports.
    SlaBreached {
        /// Key of the step whose SLA it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_key: Option<String>,
        /// The SLA's duration, ms.
        sla_ms: u64,
    },
    /// An operator paused the run.
    WorkflowPaused,
    /// An operator resumed the run (also emitted right before cancelling a paused run).
    WorkflowResumed,
    /// Compensation began: completed steps are undone in reverse completion order. With
    /// `then_cancel` the run ends `cancelled` afterwards, else `compensated`.
    CompensationStarted {
        /// Why: the step's failure, or the operator's cancel.
        reason: ErrorInfo,
        /// End `cancelled` rather than `compensated`.
        #[serde(default)]
        then_cancel: bool,
    },
    // Terminal events repeat the run's parent so that the saga processor can tell the
    // parent without keeping state of its own.
    /// The run ended successfully.
    WorkflowCompleted {
        /// The run's output: the definition's `output` expression, or else every completed
        /// top-level step's output by step id.
        output: Value,
        /// The run's parent, for a child run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// The run ended in failure.
    WorkflowFailed {
        /// Why.
        error: ErrorInfo,
        /// The run's parent, for a child run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// The run ended after compensating a failure.
    WorkflowCompensated {
        /// The run's parent, for a child run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// The run was cancelled (after compensating, when the cancel asked for it).
    WorkflowCancelled {
        /// Why, for people.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The run's parent, for a child run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
}

impl Event {
    /// snake_case name, as in the `type` field.
    pub fn name(&self) -> &'static str {
        use Event::*;
        match self {
            WorkflowStarted { .. } => "workflow_started",
            StepStarted { .. } => "step_started",
            StepSkipped { .. } => "step_skipped",
            StepCompleted { .. } => "step_completed",
            StepFailed { .. } => "step_failed",
            BranchChosen { .. } => "branch_chosen",
            ForeachStarted { .. } => "foreach_started",
            TimerStarted { .. } => "timer_started",
            ChildWorkflowRequested { .. } => "child_workflow_requested",
            ChildCancelRequested { .. } => "child_cancel_requested",
            TaskScheduled { .. } => "task_scheduled",
            TaskStarted { .. } => "task_started",
            TaskHeartbeat { .. } => "task_heartbeat",
            TaskCompleted { .. } => "task_completed",
            TaskFailed { .. } => "task_failed",
            TaskParked { .. } => "task_parked",
            TaskCancelled { .. } => "task_cancelled",
            TaskSkipped { .. } => "task_skipped",
            TaskRetried { .. } => "task_retried",
            TaskDeferred { .. } => "task_deferred",
            FallbackTaken { .. } => "fallback_taken",
            TaskAdded { .. } => "task_added",
            SignalReceived { .. } => "signal_received",
            HumanTaskCreated { .. } => "human_task_created",
            HumanTaskClaimed { .. } => "human_task_claimed",
            HumanTaskReleased { .. } => "human_task_released",
            HumanTaskReassigned { .. } => "human_task_reassigned",
            SlaWarned { .. } => "sla_warned",
            SlaBreached { .. } => "sla_breached",
            WorkflowPaused => "workflow_paused",
            WorkflowResumed => "workflow_resumed",
            CompensationStarted { .. } => "compensation_started",
            WorkflowCompleted { .. } => "workflow_completed",
            WorkflowFailed { .. } => "workflow_failed",
            WorkflowCompensated { .. } => "workflow_compensated",
            WorkflowCancelled { .. } => "workflow_cancelled",
        }
    }

    /// Whether the run ends with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Event::WorkflowCompleted { .. }
                | Event::WorkflowFailed { .. }
                | Event::WorkflowCompensated { .. }
                | Event::WorkflowCancelled { .. }
        )
    }
}

/// What travels on `distorch.definitions` (one partition): every registered version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRegistered {
    /// The definition's name.
    pub name: String,
    /// The registering command, so a redelivered registration is not a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    /// The version it got.
    pub version: u32,
    /// When it was registered, ms since the Unix epoch.
    pub at_ms: i64,
    /// The normalised JSON document.
    pub source: Value,
    /// Schema version the record was written with (1 when absent); see [`SCHEMA_VERSION`].
    #[serde(default = "v1", deserialize_with = "known_version")]
    pub v: u32,
}

/// A rendered HTTP call: what the executor sends for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// HTTP method, upper case (`GET` when the step names none).
    pub method: String,
    /// The rendered URL.
    pub url: String,
    /// The rendered headers, by name.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The JSON body; `None` sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Success statuses; empty means any 2xx.
    #[serde(default)]
    pub success: Vec<u16>,
    /// Timeout of the call, ms: the step's `http.timeout`, else its start-to-close timeout.
    pub timeout_ms: u64,
    /// The step's breaker thresholds; `None` (or an unset field) uses the executor's
    /// configured defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<crate::definition::BreakerSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(v: Option<u32>) -> Value {
        let mut event = serde_json::json!({
            "workflow_id": "01960000-0000-7000-8000-000000000001",
            "seq": 9,
            "at_ms": 1,
            "type": "workflow_completed",
            "output": {},
        });
        if let Some(v) = v {
            event["v"] = v.into();
        }
        event
    }

    #[test]
    fn an_event_without_a_version_reads_as_version_1() {
        let env: EventEnvelope = serde_json::from_value(completed(None)).unwrap();
        assert_eq!(env.v, 1);
        let env: EventEnvelope = serde_json::from_value(completed(Some(SCHEMA_VERSION))).unwrap();
        assert_eq!(env.v, SCHEMA_VERSION);
    }

    #[test]
    fn an_event_of_a_newer_version_is_refused_not_misread() {
        let err = serde_json::from_value::<EventEnvelope>(completed(Some(SCHEMA_VERSION + 1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer than this DisTorch reads"), "{err}");
    }
}
