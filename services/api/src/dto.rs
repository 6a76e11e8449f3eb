//! The REST API's own bodies: requests, acknowledgements and the envelopes (pages, lists)
//! around the read models. The read models themselves (runs, tasks, dead letters, inbox
//! rows...) are served as the domain and the store define them, with the schemas their
//! `openapi` features derive, so a field is added in one place.

use distorch_domain::command::{ErrorInfo, TaskMetrics};
use distorch_domain::event::EventEnvelope;
use distorch_domain::topics::TaskDispatch;
use distorch_domain::view::DeadLetter;
use distorch_domain::workflow::{Status, TaskStatus};
use distorch_store::{DefinitionSummary, HumanTask, SlaRecord, WorkflowSummary};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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

/// Every task status, for `?status=` validation and its error message.
pub const ALL_TASK_STATUSES: [TaskStatus; 6] = [
    TaskStatus::Scheduled,
    TaskStatus::Running,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Skipped,
    TaskStatus::Cancelled,
];

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowPage {
    /// Newest first.
    pub items: Vec<WorkflowSummary>,
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
pub struct DeadLetters {
    pub items: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Definitions {
    pub items: Vec<DefinitionSummary>,
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
    pub status: Option<Status>,
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
    pub status: Option<TaskStatus>,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Polled {
    /// Empty when the wait ended without work.
    pub tasks: Vec<TaskDispatch>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    pub attempt: u32,
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub metrics: Option<TaskMetrics>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    pub attempt: u32,
    pub error: ErrorInfo,
    #[serde(default)]
    pub metrics: Option<TaskMetrics>,
    /// Wait at least this long before the next attempt (a rate limit's `Retry-After`, say);
    /// the step's retry policy still decides whether there is one, and its backoff applies
    /// when longer.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inbox {
    /// Oldest first.
    pub items: Vec<HumanTask>,
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlaBreaches {
    /// Newest first.
    pub items: Vec<SlaRecord>,
}

/// An empty JSON object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}
