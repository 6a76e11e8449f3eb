//! Request and response bodies of the REST API. The domain crate carries no framework
//! derives, so the read models are mirrored here with `ToSchema` for the OpenAPI document.
//! The `From` conversions destructure every field: a field added to a domain view fails the
//! build here instead of silently missing from the API.

use distorch_domain::command::{ErrorInfo, TaskMetrics};
use distorch_domain::event::{EventEnvelope, TaskKind};
use distorch_domain::view::{DeadLetter, HumanView, SlaAlert, SlaKind, TaskView, WorkflowView};
use distorch_domain::workflow::{Status, TaskStatus};
use distorch_store::{DefinitionSummary, HumanTask, SlaRecord, WorkflowSummary};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Running,
    Paused,
    Parked,
    Compensating,
    Completed,
    Failed,
    Compensated,
    Cancelled,
}

impl From<Status> for WorkflowStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Running => Self::Running,
            Status::Paused => Self::Paused,
            Status::Parked => Self::Parked,
            Status::Compensating => Self::Compensating,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Compensated => Self::Compensated,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

/// Every status a run can have, for `?status=` validation and its error message.
pub const ALL_STATUSES: [Status; 8] = [
    Status::Running,
    Status::Paused,
    Status::Parked,
    Status::Compensating,
    Status::Completed,
    Status::Failed,
    Status::Compensated,
    Status::Cancelled,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Scheduled,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl From<TaskStatus> for TaskState {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Scheduled => Self::Scheduled,
            TaskStatus::Running => Self::Running,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Skipped => Self::Skipped,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// `step` for a step's own task, `compensation` for an undo task, `human` for a person's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Step,
    Compensation,
    Human,
}

impl From<TaskKind> for Kind {
    fn from(kind: TaskKind) -> Self {
        match kind {
            TaskKind::Step => Self::Step,
            TaskKind::Compensation => Self::Compensation,
            TaskKind::Human => Self::Human,
        }
    }
}

/// Every task status, for `?status=` validation and its error message.
pub const ALL_TASK_STATUSES: [TaskStatus; 6] = [
    TaskStatus::Scheduled,
    TaskStatus::Running,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Skipped,
    TaskStatus::Cancelled,
];

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A failure: of a task attempt, a run, or reported by a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// Machine-readable type that a step's `non_retryable` list can name.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    /// `false` skips the remaining attempts. Defaults to `true`.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

impl From<ErrorInfo> for Failure {
    fn from(
        ErrorInfo {
            kind,
            message,
            retryable,
        }: ErrorInfo,
    ) -> Self {
        Self {
            kind,
            message,
            retryable,
        }
    }
}

impl From<Failure> for ErrorInfo {
    fn from(
        Failure {
            kind,
            message,
            retryable,
        }: Failure,
    ) -> Self {
        Self {
            kind,
            message,
            retryable,
        }
    }
}

/// Resource use of one attempt as measured by the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// HTTP tasks: time to the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// HTTP tasks: size of the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
}

impl From<TaskMetrics> for Metrics {
    fn from(m: TaskMetrics) -> Self {
        Self {
            cpu_ms: m.cpu_ms,
            peak_memory_bytes: m.peak_memory_bytes,
            latency_ms: m.latency_ms,
            response_bytes: m.response_bytes,
        }
    }
}

impl From<Metrics> for TaskMetrics {
    fn from(m: Metrics) -> Self {
        Self {
            cpu_ms: m.cpu_ms,
            peak_memory_bytes: m.peak_memory_bytes,
            latency_ms: m.latency_ms,
            response_bytes: m.response_bytes,
        }
    }
}

/// One task of a run (a step's task or a compensation) with its latest attempt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Task {
    pub task_id: String,
    pub workflow_id: String,
    pub step_id: String,
    /// The step id, prefixed by `<foreach id>[<i>].` per enclosing foreach iteration.
    pub step_key: String,
    pub kind: Kind,
    /// Task type, e.g. `reserve-stock`.
    pub task: String,
    pub queue: String,
    pub status: TaskState,
    pub attempt: u32,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Failure>,
    /// Waiting in the dead-letter queue for an operator (retry or skip).
    pub parked: bool,
    pub worker_id: Option<String>,
    pub metrics: Option<Metrics>,
    pub scheduled_at: String,
    /// For a human task: when it was claimed.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The inbox side of a human task; absent for other tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human: Option<Human>,
}

/// The inbox side of a human task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Human {
    pub title: String,
    pub assignee: Option<String>,
    pub group: Option<String>,
    /// Who is working on it; only they can complete or release it.
    pub claimed_by: Option<String>,
    /// JSON Schema the completion's `output` must satisfy.
    #[schema(value_type = Option<Object>)]
    pub form: Option<Value>,
    /// Reassigned by its escalation timer.
    pub escalated: bool,
    pub completed_by: Option<String>,
    /// When it times out (RFC 3339), if it has a timeout.
    pub due_at: Option<String>,
}

impl From<HumanView> for Human {
    fn from(view: HumanView) -> Self {
        let HumanView {
            title,
            assignee,
            group,
            claimed_by,
            form,
            escalated,
            completed_by,
            due_at,
        } = view;
        Self {
            title,
            assignee,
            group,
            claimed_by,
            form,
            escalated,
            completed_by,
            due_at,
        }
    }
}

/// `warning` when an SLA's `warn_at` passed, `breach` when the SLA itself did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlaLevel {
    Warning,
    Breach,
}

impl From<SlaKind> for SlaLevel {
    fn from(kind: SlaKind) -> Self {
        match kind {
            SlaKind::Warning => Self::Warning,
            SlaKind::Breach => Self::Breach,
        }
    }
}

/// An SLA warning or breach on a run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sla {
    /// The step whose SLA it is; `null` for the run's own SLA.
    pub step_key: Option<String>,
    pub sla_ms: u64,
    pub kind: SlaLevel,
    /// RFC 3339.
    pub at: String,
}

impl From<SlaAlert> for Sla {
    fn from(alert: SlaAlert) -> Self {
        let SlaAlert {
            step_key,
            sla_ms,
            kind,
            at,
        } = alert;
        Self {
            step_key,
            sla_ms,
            kind: kind.into(),
            at,
        }
    }
}

impl From<TaskView> for Task {
    fn from(view: TaskView) -> Self {
        let TaskView {
            task_id,
            workflow_id,
            step_id,
            step_key,
            kind,
            task,
            queue,
            status,
            attempt,
            input,
            output,
            error,
            parked,
            worker_id,
            metrics,
            scheduled_at,
            started_at,
            finished_at,
            human,
        } = view;
        Self {
            task_id: task_id.0,
            workflow_id: workflow_id.to_string(),
            step_id,
            step_key,
            kind: kind.into(),
            task,
            queue,
            status: status.into(),
            attempt,
            input,
            output,
            error: error.map(Into::into),
            parked,
            worker_id,
            metrics: metrics.map(Into::into),
            scheduled_at,
            started_at,
            finished_at,
            human: human.map(Into::into),
        }
    }
}

/// A run as the read model shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Workflow {
    pub workflow_id: String,
    pub definition: String,
    pub version: u32,
    pub status: WorkflowStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Failure>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Keys of the steps in progress.
    pub current_steps: Vec<String>,
    pub tasks: Vec<Task>,
    /// Sequence number of the last event this view reflects.
    pub last_seq: u64,
    /// The run that started this one as a child step, if any.
    pub parent_workflow_id: Option<String>,
    /// SLA warnings and breaches of the run and its steps, oldest first.
    pub sla: Vec<Sla>,
}

impl From<WorkflowView> for Workflow {
    fn from(view: WorkflowView) -> Self {
        let WorkflowView {
            workflow_id,
            definition,
            version,
            status,
            input,
            output,
            error,
            created_at,
            updated_at,
            current_steps,
            tasks,
            last_seq,
            parent_workflow_id,
            sla,
        } = view;
        Self {
            workflow_id: workflow_id.to_string(),
            definition,
            version,
            status: status.into(),
            input,
            output,
            error: error.map(Into::into),
            created_at,
            updated_at,
            current_steps,
            tasks: tasks.into_iter().map(Into::into).collect(),
            last_seq,
            parent_workflow_id: parent_workflow_id.map(|id| id.to_string()),
            sla: sla.into_iter().map(Into::into).collect(),
        }
    }
}

/// A row of the run list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowRow {
    pub workflow_id: String,
    pub definition: String,
    pub version: u32,
    pub status: WorkflowStatus,
    pub created_at: String,
    pub updated_at: String,
}

impl From<WorkflowSummary> for WorkflowRow {
    fn from(row: WorkflowSummary) -> Self {
        let WorkflowSummary {
            workflow_id,
            definition,
            version,
            status,
            created_at,
            updated_at,
        } = row;
        Self {
            workflow_id: workflow_id.to_string(),
            definition,
            version,
            status: status.into(),
            created_at,
            updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowPage {
    /// Newest first.
    pub items: Vec<WorkflowRow>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct History {
    /// Every event of the run in order (event envelopes: `workflow_id`, `seq`, `at_ms`,
    /// `type` and the event's fields).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventEnvelope>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterItem {
    pub task_id: String,
    pub workflow_id: String,
    pub step_id: String,
    pub task: String,
    pub attempts: u32,
    pub error: Option<Failure>,
    pub input: Value,
}

impl From<DeadLetter> for DeadLetterItem {
    fn from(dl: DeadLetter) -> Self {
        let DeadLetter {
            task_id,
            workflow_id,
            step_id,
            task,
            attempts,
            error,
            input,
        } = dl;
        Self {
            task_id: task_id.0,
            workflow_id: workflow_id.to_string(),
            step_id,
            task,
            attempts,
            error: error.map(Into::into),
            input,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetters {
    pub items: Vec<DeadLetterItem>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionRow {
    pub name: String,
    pub latest_version: u32,
    pub versions: Vec<u32>,
    pub description: Option<String>,
}

impl From<DefinitionSummary> for DefinitionRow {
    fn from(row: DefinitionSummary) -> Self {
        let DefinitionSummary {
            name,
            latest_version,
            versions,
            description,
        } = row;
        Self {
            name,
            latest_version,
            versions,
            description,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Definitions {
    pub items: Vec<DefinitionRow>,
}

/// One registered version of a definition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionDoc {
    pub name: String,
    pub version: u32,
    /// The normalised JSON document.
    pub definition: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Registered {
    pub name: String,
    pub version: u32,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflow {
    /// Definition name.
    pub definition: String,
    /// Latest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// Checked against the definition's `input_schema`.
    #[serde(default)]
    pub input: Value,
    /// The same key for the same definition always names the same run: a repeated start
    /// returns the existing run (200) instead of starting another.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The run's id (a UUID) chosen by the caller, instead of an `idempotency_key`: a repeated
    /// start with the same id returns the existing run (200). A start answered 503 names the
    /// id it will create in the problem's `workflow_id`; retrying with it is always safe.
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunStatus {
    pub workflow_id: String,
    /// `null` when the read model has not caught up yet (202).
    pub status: Option<WorkflowStatus>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Undo the completed steps (saga) before ending `cancelled`.
    #[serde(default)]
    pub compensate: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskCreated {
    pub task_id: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    /// Used as the task's output.
    #[serde(default)]
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskAction {
    pub task_id: String,
    pub workflow_id: String,
    /// `null` when the read model has not caught up yet (202).
    pub status: Option<TaskState>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// Shown on the task and in its events.
    pub worker_id: String,
    /// 1 to 100; default 1.
    #[serde(default)]
    pub max_tasks: Option<u32>,
    /// How long to wait for work, 0 to 60000; default 20000.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// One task attempt for a worker.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolledTask {
    pub task_id: String,
    pub workflow_id: String,
    pub step_id: String,
    pub task: String,
    /// Echo it in heartbeat, complete and fail.
    pub attempt: u32,
    pub input: Value,
    /// The last checkpoint a previous attempt saved with a heartbeat.
    pub checkpoint: Option<Value>,
    /// Heartbeat at least this often, or the attempt times out.
    pub heartbeat_timeout_ms: Option<u64>,
}

impl From<distorch_domain::topics::TaskDispatch> for PolledTask {
    fn from(d: distorch_domain::topics::TaskDispatch) -> Self {
        Self {
            task_id: d.task_id.0,
            workflow_id: d.workflow_id.to_string(),
            step_id: d.step_id,
            task: d.task,
            attempt: d.attempt,
            input: d.input,
            checkpoint: d.checkpoint,
            heartbeat_timeout_ms: d.heartbeat_timeout_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Polled {
    /// Empty when the wait ended without work.
    pub tasks: Vec<PolledTask>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub attempt: u32,
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub metrics: Option<Metrics>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    pub attempt: u32,
    pub error: Failure,
    #[serde(default)]
    pub metrics: Option<Metrics>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub attempt: u32,
    /// Progress to hand to the next attempt if this one fails.
    #[serde(default)]
    pub checkpoint: Option<Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeartbeatAck {
    /// Always false: an attempt of a cancelled run (or any attempt no longer current) has
    /// its heartbeat refused with 409, which tells the worker to stop.
    pub cancel_requested: bool,
}

/// A human task as the inbox lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboxItem {
    pub task_id: String,
    pub workflow_id: String,
    pub definition: String,
    pub step_id: String,
    pub step_key: String,
    /// `scheduled` (unclaimed), `running` (claimed), or how it ended.
    pub status: TaskState,
    pub title: String,
    pub assignee: Option<String>,
    pub group: Option<String>,
    pub claimed_by: Option<String>,
    /// JSON Schema the completion's `output` must satisfy.
    #[schema(value_type = Option<Object>)]
    pub form: Option<Value>,
    /// Reassigned by its escalation timer.
    pub escalated: bool,
    pub completed_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// When it times out (RFC 3339), if it has a timeout.
    pub due_at: Option<String>,
    pub output: Option<Value>,
    /// Why it failed (e.g. `timeout.human`).
    pub error: Option<Failure>,
}

impl From<HumanTask> for InboxItem {
    fn from(row: HumanTask) -> Self {
        let HumanTask {
            task_id,
            workflow_id,
            definition,
            step_id,
            step_key,
            status,
            title,
            assignee,
            group,
            claimed_by,
            form,
            escalated,
            completed_by,
            created_at,
            due_at,
            output,
            error,
        } = row;
        Self {
            task_id: task_id.0,
            workflow_id: workflow_id.to_string(),
            definition,
            step_id,
            step_key,
            status: status.into(),
            title,
            assignee,
            group,
            claimed_by,
            form,
            escalated,
            completed_by,
            created_at,
            due_at,
            output,
            error: error.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inbox {
    /// Oldest first.
    pub items: Vec<InboxItem>,
}

/// Who acts; the `X-DisTorch-User` header may say it instead.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    #[serde(default)]
    pub user: Option<String>,
}

/// The new owner: an `assignee`, a `group`, or both.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reassign {
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// Who reassigns it; the `X-DisTorch-User` header may say it instead.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteHuman {
    /// Must satisfy the step's `form`; becomes the step's output.
    #[serde(default)]
    pub output: Value,
    /// Who completes it; the `X-DisTorch-User` header may say it instead.
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignalSent {
    pub workflow_id: String,
    pub signal: String,
}

/// An SLA warning or breach, with its run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlaBreach {
    pub workflow_id: String,
    pub definition: String,
    /// The step whose SLA it is; `null` for the run's own SLA.
    pub step_key: Option<String>,
    pub sla_ms: u64,
    pub kind: SlaLevel,
    /// RFC 3339.
    pub at: String,
}

impl From<SlaRecord> for SlaBreach {
    fn from(row: SlaRecord) -> Self {
        let SlaRecord {
            workflow_id,
            definition,
            step_key,
            sla_ms,
            kind,
            at,
        } = row;
        Self {
            workflow_id: workflow_id.to_string(),
            definition,
            step_key,
            sla_ms,
            kind: kind.into(),
            at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlaBreaches {
    /// Newest first.
    pub items: Vec<SlaBreach>,
}

/// An empty JSON object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}
