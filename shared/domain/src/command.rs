//! Commands: requests to change a workflow (or the definition registry). Imperative names.
//! They reach the engine through the `distorch.commands` topic, keyed by [`Command::key`].

use crate::ids::{CommandId, TaskId, WorkflowId};
use crate::workflow::Status;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What travels on `distorch.commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// Dedup key: a command whose id the run has already applied is dropped.
    pub id: CommandId,
    /// When set, the engine appends a [`Reply`] keyed by this value to `distorch.replies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(flatten)]
    pub command: Command,
}

/// A run that started another run as one of its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub workflow_id: WorkflowId,
    pub step_key: String,
}

/// A failure reported by a worker, an HTTP call, a timeout, or a child run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Failure))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "Failure")
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable type that `non_retryable` can name, e.g. `card_declined`, `timeout`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "graphql", graphql(name = "type"))]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

impl ErrorInfo {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// Resource use of one attempt as reported by the worker SDK.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::SimpleObject))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// HTTP tasks: time to the response, and its body size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Registers the next version of the definition named in `source`.
    RegisterDefinition {
        source: Value,
    },
    StartWorkflow {
        workflow_id: WorkflowId,
        definition: String,
        /// Latest when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        #[serde(default)]
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    CancelWorkflow {
        workflow_id: WorkflowId,
        #[serde(default)]
        compensate: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    PauseWorkflow {
        workflow_id: WorkflowId,
    },
    ResumeWorkflow {
        workflow_id: WorkflowId,
    },
    /// Adds an ad-hoc task step (raw step JSON, validated by the engine) that runs after the
    /// steps in flight.
    AddTask {
        workflow_id: WorkflowId,
        step: Value,
    },
    /// A worker took the task (from the poll endpoint or a task topic).
    StartTask {
        task_id: TaskId,
        attempt: u32,
        worker_id: String,
    },
    CompleteTask {
        task_id: TaskId,
        attempt: u32,
        #[serde(default)]
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    FailTask {
        task_id: TaskId,
        attempt: u32,
        error: ErrorInfo,
        /// The service asked to wait this long (`Retry-After`); the next attempt waits at
        /// least that.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    Heartbeat {
        task_id: TaskId,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
    },
    /// Operator: run a failed or parked task again.
    RetryTask {
        task_id: TaskId,
    },
    /// Operator: treat the task as done with this output.
    SkipTask {
        task_id: TaskId,
        #[serde(default)]
        output: Value,
    },
    /// The attempt was not made because the target's circuit breaker is open: try again at
    /// `until_ms` without using up an attempt, or run the step's fallback.
    DeferTask {
        task_id: TaskId,
        attempt: u32,
        until_ms: i64,
        reason: String,
    },
    /// A child run ended (sent by the saga processor).
    ChildFinished {
        workflow_id: WorkflowId,
        step_key: String,
        child_id: WorkflowId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// Delivers a signal to the run (kept until a `signal` step of that name takes it).
    SendSignal {
        workflow_id: WorkflowId,
        name: String,
        #[serde(default)]
        payload: Value,
    },
    ClaimHumanTask {
        task_id: TaskId,
        user: String,
    },
    ReleaseHumanTask {
        task_id: TaskId,
        user: String,
    },
    ReassignHumanTask {
        task_id: TaskId,
        #[serde(flatten)]
        assign: crate::definition::Assignment,
        user: String,
    },
    /// Completes a human task; `output` must satisfy the step's `form`.
    CompleteHumanTask {
        task_id: TaskId,
        #[serde(default)]
        output: Value,
        user: String,
    },
    /// A timer of the run came due (issued by the engine that owns the run).
    FireTimer {
        workflow_id: WorkflowId,
        timer: crate::workflow::Timer,
    },
}

impl Command {
    /// The run this command is about; `None` for definition commands.
    pub fn workflow_id(&self) -> Option<WorkflowId> {
        use Command::*;
        match self {
            RegisterDefinition { .. } => None,
            StartWorkflow { workflow_id, .. }
            | CancelWorkflow { workflow_id, .. }
            | PauseWorkflow { workflow_id }
            | ResumeWorkflow { workflow_id }
            | AddTask { workflow_id, .. }
            | ChildFinished { workflow_id, .. }
            | SendSignal { workflow_id, .. }
            | FireTimer { workflow_id, .. } => Some(*workflow_id),
            StartTask { task_id, .. }
            | CompleteTask { task_id, .. }
            | FailTask { task_id, .. }
            | Heartbeat { task_id, .. }
            | RetryTask { task_id }
            | SkipTask { task_id, .. }
            | DeferTask { task_id, .. }
            | ClaimHumanTask { task_id, .. }
            | ReleaseHumanTask { task_id, .. }
            | ReassignHumanTask { task_id, .. }
            | CompleteHumanTask { task_id, .. } => task_id.workflow_id(),
        }
    }

    /// Partitioning key on the commands (and events) topic: the workflow id, or
    /// `definition/<name>` for registrations. `None` when a task id is malformed.
    pub fn key(&self) -> Option<String> {
        match self {
            Command::RegisterDefinition { source } => Some(format!(
                "definition/{}",
                source
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )),
            other => other.workflow_id().map(|w| w.to_string()),
        }
    }

    /// snake_case name, as in the `type` field.
    pub fn name(&self) -> &'static str {
        use Command::*;
        match self {
            RegisterDefinition { .. } => "register_definition",
            StartWorkflow { .. } => "start_workflow",
            CancelWorkflow { .. } => "cancel_workflow",
            PauseWorkflow { .. } => "pause_workflow",
            ResumeWorkflow { .. } => "resume_workflow",
            AddTask { .. } => "add_task",
            StartTask { .. } => "start_task",
            CompleteTask { .. } => "complete_task",
            FailTask { .. } => "fail_task",
            Heartbeat { .. } => "heartbeat",
            RetryTask { .. } => "retry_task",
            SkipTask { .. } => "skip_task",
            ChildFinished { .. } => "child_finished",
            FireTimer { .. } => "fire_timer",
            SendSignal { .. } => "send_signal",
            DeferTask { .. } => "defer_task",
            ClaimHumanTask { .. } => "claim_human_task",
            ReleaseHumanTask { .. } => "release_human_task",
            ReassignHumanTask { .. } => "reassign_human_task",
            CompleteHumanTask { .. } => "complete_human_task",
        }
    }
}

/// Why the engine refused a command. Maps onto HTTP statuses at the API edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum Rejection {
    /// 400: the command's content is invalid (bad definition, input fails its schema...).
    #[error("{0}")]
    Invalid(String),
    /// 404: unknown workflow, task or definition.
    #[error("{0}")]
    NotFound(String),
    /// 409: stale attempt, or a verb not allowed in the run's current status.
    #[error("{0}")]
    Conflict(String),
}

/// The engine's answer to a command that asked for one (`reply_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub command_id: CommandId,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Accepted {
        /// The run's last event sequence after applying the command (0 for definitions).
        #[serde(default)]
        seq: u64,
        /// What the command answers, typed by `kind`.
        #[serde(default)]
        result: Answer,
    },
    Rejected {
        rejection: Rejection,
    },
}

/// What an accepted command answers (`result` of an accepted [`Outcome`]), tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// `start_workflow`: the run the start names, and whether it existed before this
    /// command (an idempotency key or a workflow id used again).
    Started {
        workflow_id: WorkflowId,
        status: Status,
        existing: bool,
    },
    /// `register_definition`: the version the definition got.
    Registered { name: String, version: u32 },
    /// `add_task`: the task created.
    TaskAdded { task_id: TaskId },
    /// Any other command applied to a run, or a command applied before and delivered again:
    /// the run's status after it.
    Applied {
        workflow_id: WorkflowId,
        status: Status,
    },
    /// A notice that no longer concerns anything (a timer or a child's end that arrived
    /// after the run or step stopped waiting for it).
    #[default]
    Noted,
}
