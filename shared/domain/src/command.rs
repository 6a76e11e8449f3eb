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
    /// The command; its fields sit next to `id` in the JSON object, tagged by `type`.
    #[serde(flatten)]
    pub command: Command,
}

/// A run that started another run as one of its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    /// The parent run.
    pub workflow_id: WorkflowId,
    /// Key of the parent's step that waits for the child; the child's end is reported to it.
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
    /// Machine-readable type, which a retry policy's `non_retryable` can name: a worker's
    /// own (e.g. `card_declined`) or one DisTorch sets, such as `timeout.start_to_close`,
    /// `timeout.heartbeat`, `timeout.schedule_to_start`, `timeout.human`, `timeout.signal`,
    /// `expression` (a jq expression failed), `breaker_open` or `child.failed`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "graphql", graphql(name = "type"))]
    pub kind: String,
    /// What went wrong, for people; may be empty.
    #[serde(default)]
    pub message: String,
    /// Whether another attempt may succeed; `false` stops the retries whatever the retry
    /// policy allows. `true` when a report leaves it out.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

impl ErrorInfo {
    /// A retryable error of type `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// Resource use of one attempt, as the worker reported it (for an `http` step, as DisTorch's
/// HTTP executor measured it). Each field is absent/null when not reported.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::SimpleObject))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// CPU time the attempt used (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    /// Peak memory the attempt used (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// For an `http` step: how long the call took, until the whole response was read or the
    /// call failed (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// For an `http` step: size of the response body (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
}

/// A request to change a run (or the definition registry), tagged in JSON by `type`, the
/// snake_case name of the variant ([`Command::name`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Registers the next version of the definition named in `source`.
    RegisterDefinition {
        /// The definition document as JSON (YAML already converted); the engine validates it.
        source: Value,
    },
    /// Starts a run. A start for a run that already exists changes nothing and answers
    /// with that run (`existing`).
    StartWorkflow {
        /// Id of the run to start (see [`WorkflowId`] for how ids are chosen).
        workflow_id: WorkflowId,
        /// Name of the definition to run.
        definition: String,
        /// Latest when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
        /// The run's input, checked against the definition's `input_schema`.
        #[serde(default)]
        input: Value,
        /// The key `workflow_id` was derived from, if any; kept on the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// Set when the run is a child run, started by a step of `parent`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// Ends a live run `cancelled`: its open tasks and child runs are cancelled, after its
    /// completed steps are undone when `compensate` is set.
    CancelWorkflow {
        /// The run.
        workflow_id: WorkflowId,
        /// Undo the completed steps first (rejected if the run is already compensating).
        #[serde(default)]
        compensate: bool,
        /// Why, for people; the read model shows it as the run's error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Stops a live run from starting anything new until it is resumed.
    PauseWorkflow {
        /// The run.
        workflow_id: WorkflowId,
    },
    /// Lets a paused run go on.
    ResumeWorkflow {
        /// The run.
        workflow_id: WorkflowId,
    },
    /// Adds an ad-hoc task step (raw step JSON, validated by the engine) that runs after the
    /// steps in flight.
    AddTask {
        /// The run.
        workflow_id: WorkflowId,
        /// The step as a definition would write it; only task steps are accepted.
        step: Value,
    },
    /// A worker took the task (from the poll endpoint or a task topic).
    StartTask {
        /// The task.
        task_id: TaskId,
        /// The attempt taken; must be the current one, not started yet.
        attempt: u32,
        /// Who took it, for people reading the run.
        worker_id: String,
        /// The process that took it from the queue and hands it on (an API replica, or a
        /// worker reading the log): its instance id, remembered with the running attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
        /// Takes over the attempt if it is running and was started via this process, which
        /// is gone: the attempt is handed out again without waiting for its timeout. Only
        /// an API replica that inherited the queue partition of a dead replica asks this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// A worker finished an attempt successfully.
    CompleteTask {
        /// The task.
        task_id: TaskId,
        /// The attempt; must be the current one.
        attempt: u32,
        /// What the attempt produced.
        #[serde(default)]
        output: Value,
        /// Resource use of the attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    /// A worker reports a failed attempt; the task's retry policy decides what follows.
    FailTask {
        /// The task.
        task_id: TaskId,
        /// The attempt; must be the current one.
        attempt: u32,
        /// What went wrong; `retryable: false` or a `non_retryable` type ends the retries.
        error: ErrorInfo,
        /// The service asked to wait this long (`Retry-After`); the next attempt waits at
        /// least that.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// Resource use of the attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<TaskMetrics>,
    },
    /// The attempt is alive: its heartbeat timeout starts over.
    Heartbeat {
        /// The task.
        task_id: TaskId,
        /// The attempt; must be the current one.
        attempt: u32,
        /// Progress to resume from, handed to later attempts; `None` keeps the last one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<Value>,
    },
    /// Operator: run a parked task again, with a fresh attempt budget.
    RetryTask {
        /// The parked task.
        task_id: TaskId,
    },
    /// Operator: treat a parked or unfinished task as done with this output.
    SkipTask {
        /// The task.
        task_id: TaskId,
        /// The output it counts as having produced.
        #[serde(default)]
        output: Value,
    },
    /// The attempt was not made because the target's circuit breaker is open: try again at
    /// `until_ms` without using up an attempt, or run the step's fallback.
    DeferTask {
        /// The task.
        task_id: TaskId,
        /// The attempt not made; must be the current one.
        attempt: u32,
        /// When to try again (ms since the Unix epoch); a time already past means now.
        until_ms: i64,
        /// Why, for people (the breaker's state).
        reason: String,
    },
    /// A child run ended (sent by the saga processor).
    ChildFinished {
        /// The parent run.
        workflow_id: WorkflowId,
        /// The parent's step that waits for the child.
        step_key: String,
        /// The child run; a child the step no longer waits for is ignored.
        child_id: WorkflowId,
        /// The child's output, when it completed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// Why it did not complete (failed, compensated or cancelled); `None` when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// Delivers a signal to the run (kept until a `signal` step of that name takes it).
    SendSignal {
        /// The run.
        workflow_id: WorkflowId,
        /// Signal name, matched against `signal` steps.
        name: String,
        /// The signal's data: the output of the step that takes it.
        #[serde(default)]
        payload: Value,
    },
    /// `user` takes an open human task to work on it; claiming it again is a no-op.
    ClaimHumanTask {
        /// The human task.
        task_id: TaskId,
        /// Who claims it; rejected while someone else holds it.
        user: String,
    },
    /// The holder puts a claimed human task back in its inbox.
    ReleaseHumanTask {
        /// The human task.
        task_id: TaskId,
        /// Who releases it; must be the holder.
        user: String,
    },
    /// Gives an open human task new owners; it goes back to their inbox unclaimed.
    ReassignHumanTask {
        /// The human task.
        task_id: TaskId,
        /// The new assignee and/or group (at least one); flattened into the command.
        #[serde(flatten)]
        assign: crate::definition::Assignment,
        /// Who reassigns it.
        user: String,
    },
    /// Completes a human task; `output` must satisfy the step's `form`.
    CompleteHumanTask {
        /// The human task.
        task_id: TaskId,
        /// The task's result.
        #[serde(default)]
        output: Value,
        /// Who completes it; must be the holder when someone has claimed it.
        user: String,
    },
    /// A timer of the run came due (issued by the engine that owns the run).
    FireTimer {
        /// The run.
        workflow_id: WorkflowId,
        /// The timer; one that no longer applies (its attempt or step moved on) changes
        /// nothing.
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
    /// The command answered.
    pub command_id: CommandId,
    /// Accepted or rejected; flattened into the reply, tagged by `outcome`.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Whether the engine applied a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Applied, now or earlier (a redelivered command is accepted again and changes
    /// nothing).
    Accepted {
        /// The run's last event sequence after applying the command (0 for definitions).
        #[serde(default)]
        seq: u64,
        /// What the command answers, typed by `kind`.
        #[serde(default)]
        result: Answer,
    },
    /// Refused; nothing changed.
    Rejected {
        /// Why.
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
        /// The run.
        workflow_id: WorkflowId,
        /// Its status after the command.
        status: Status,
        /// Whether the run existed before this command.
        existing: bool,
    },
    /// `register_definition`: the version the definition got.
    Registered {
        /// The definition's name.
        name: String,
        /// The version it got.
        version: u32,
        /// The document was identical to the latest version, which it names: nothing was
        /// registered.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unchanged: bool,
    },
    /// `add_task`: the task created.
    TaskAdded {
        /// The task reserved for the added step.
        task_id: TaskId,
    },
    /// Any other command applied to a run, or a command applied before and delivered again:
    /// the run's status after it.
    Applied {
        /// The run.
        workflow_id: WorkflowId,
        /// Its status after the command.
        status: Status,
    },
    /// `heartbeat` of an attempt whose work is no longer wanted: its run was cancelled, or
    /// its task was cancelled while the attempt ran (its run compensating, its step taking a
    /// fallback). Nothing was recorded; the
    /// worker should stop (a completion of the attempt would be refused).
    CancelRequested {
        /// The run.
        workflow_id: WorkflowId,
        /// Its status.
        status: Status,
    },
    /// A notice that no longer concerns anything (a timer or a child's end that arrived
    /// after the run or step stopped waiting for it).
    #[default]
    Noted,
}
