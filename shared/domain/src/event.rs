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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub workflow_id: WorkflowId,
    /// 1, 2, 3... per run, without gaps.
    pub seq: u64,
    /// Engine time of the decision, ms since the Unix epoch.
    pub at_ms: i64,
    /// The command that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    #[serde(default = "v1", deserialize_with = "known_version")]
    pub v: u32,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Step,
    Compensation,
    /// A `human` step's task, completed through the inbox API rather than by a worker.
    Human,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    WorkflowStarted {
        definition: String,
        version: u32,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// A step instance began. `step_key` is the step id, prefixed by `<foreach id>[<i>].` for
    /// every enclosing `foreach` iteration; `parent` is the enclosing container's key.
    StepStarted {
        step_key: String,
        step_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// The step's `when` was false (or its branch was not taken).
    StepSkipped {
        step_key: String,
        step_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// A non-task step (switch, parallel, foreach, wait, child run) finished.
    StepCompleted {
        step_key: String,
        output: Value,
    },
    /// A step failed and its policy is `continue`: the run goes on without its output.
    StepFailed {
        step_key: String,
        error: ErrorInfo,
    },
    /// `branch` is the index of the matching case, `None` for the default branch.
    BranchChosen {
        step_key: String,
        branch: Option<usize>,
    },
    ForeachStarted {
        step_key: String,
        items: Vec<Value>,
    },
    TimerStarted {
        step_key: String,
        fire_at_ms: i64,
    },
    ChildWorkflowRequested {
        step_key: String,
        child_id: WorkflowId,
        definition: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        input: Value,
    },
    /// The run stopped waiting for a child that it no longer needs (cancel, fail, join any).
    ChildCancelRequested {
        step_key: String,
        child_id: WorkflowId,
    },
    /// An attempt of a task is ready for a worker on `queue`.
    TaskScheduled {
        task_id: TaskId,
        step_key: String,
        step_id: String,
        kind: TaskKind,
        task: String,
        queue: String,
        attempt: u32,
        max_attempts: u32,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
        timeout_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule_to_start_timeout_ms: Option<u64>,
        /// For `http` steps: the call the saga processor makes for this attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http: Option<HttpRequest>,
    },
    /// An attempt was not made (circuit breaker open); the next try at `retry_at_ms` does
    /// not use up an attempt.
    TaskDeferred {
        task_id: TaskId,
        attempt: u32,
        retry_at_ms: i64,
        reason: String,
    },
    /// The `http` step's breaker was open: its `fallback` step runs in its place.
    FallbackTaken {
        step_key: String,
        fallback: String,
    },
    TaskStarted {
        task_id: TaskId,
        attempt: u32,
        worker_id: String,
    },
    TaskHeartbeat {
        task_id: TaskId,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
    },
    TaskCompleted {
        task_id: TaskId,
        attempt: u32,
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
        /// Who completed it, for human tasks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// An attempt failed (worker error or timeout). With `retry_at_ms` another attempt follows
    /// at that time; without it the attempts are exhausted and the step's policy applies.
    TaskFailed {
        task_id: TaskId,
        attempt: u32,
        error: ErrorInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    /// The task waits in the dead-letter queue for an operator.
    TaskParked {
        task_id: TaskId,
        error: ErrorInfo,
    },
    TaskCancelled {
        task_id: TaskId,
    },
    /// Operator skip: the task counts as completed with `output`.
    TaskSkipped {
        task_id: TaskId,
        output: Value,
    },
    /// Operator retry: a new attempt follows with a fresh attempt budget.
    TaskRetried {
        task_id: TaskId,
    },
    /// An ad-hoc task step, inserted into the top-level sequence at `position`; it will run
    /// as `task_id` (reserved now so the caller gets the id at once).
    TaskAdded {
        step: Value,
        position: usize,
        task_id: TaskId,
    },
    /// A signal arrived; a `signal` step of that name consumes it (now or later).
    SignalReceived {
        name: String,
        payload: Value,
    },
    /// A human task is waiting in the inbox of `assignee` and/or `group`.
    HumanTaskCreated {
        task_id: TaskId,
        step_key: String,
        step_id: String,
        title: String,
        #[serde(flatten)]
        assign: Assignment,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        form: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalate_after_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalate_to: Option<Assignment>,
    },
    HumanTaskClaimed {
        task_id: TaskId,
        by: String,
    },
    HumanTaskReleased {
        task_id: TaskId,
        by: String,
    },
    /// New owner; `by` is `None` when the escalation timer did it.
    HumanTaskReassigned {
        task_id: TaskId,
        #[serde(flatten)]
        assign: Assignment,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// `warn_at` of an SLA passed (`step_key` `None`: the run's SLA).
    SlaWarned {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_key: Option<String>,
        sla_ms: u64,
    },
    SlaBreached {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_key: Option<String>,
        sla_ms: u64,
    },
    WorkflowPaused,
    WorkflowResumed,
    /// Compensation began: completed steps are undone in reverse completion order. With
    /// `then_cancel` the run ends `cancelled` afterwards, else `compensated`.
    CompensationStarted {
        reason: ErrorInfo,
        #[serde(default)]
        then_cancel: bool,
    },
    // Terminal events repeat the run's parent so that the saga processor can tell the
    // parent without keeping state of its own.
    WorkflowCompleted {
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    WorkflowFailed {
        error: ErrorInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    WorkflowCompensated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    WorkflowCancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
}

impl Event {
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
    pub name: String,
    /// The registering command, so a redelivered registration is not a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    pub version: u32,
    pub at_ms: i64,
    /// The normalised JSON document.
    pub source: Value,
    #[serde(default = "v1", deserialize_with = "known_version")]
    pub v: u32,
}

/// A rendered HTTP call: what the executor sends for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Success statuses; empty means any 2xx.
    #[serde(default)]
    pub success: Vec<u16>,
    pub timeout_ms: u64,
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
