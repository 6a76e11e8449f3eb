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

/// One page of runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowPage {
    /// Newest first.
    pub items: Vec<WorkflowSummary>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A run's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct History {
    /// Every event of the run in order (event envelopes: `workflow_id`, `seq` (1, 2, 3...
    /// without gaps), `at_ms` (ms since the Unix epoch), `type` and the event's fields).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventEnvelope>,
}

/// The tasks in the dead-letter queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetters {
    /// Every parked task; empty when none is.
    pub items: Vec<DeadLetter>,
}

/// The definition catalogue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Definitions {
    /// One entry per registered definition name, with its versions.
    pub items: Vec<DefinitionSummary>,
}

/// One registered version of a definition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionDoc {
    /// Definition name.
    pub name: String,
    /// Version number, from 1.
    pub version: u32,
    /// The document as registered, in JSON (a definition registered as YAML is returned
    /// converted to JSON).
    pub definition: Value,
}

/// The definition version a registration produced (REST and GraphQL alike).
#[derive(Debug, Clone, Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct Registered {
    /// Definition name.
    pub name: String,
    /// The new version number (from 1), or the latest one's when the document is identical
    /// to it.
    pub version: u32,
    /// The document was identical to the latest version: nothing was registered, and
    /// `version` names that version (REST answers 200 instead of 201).
    pub unchanged: bool,
}

/// A request to start a run.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflow {
    /// Definition name.
    pub definition: String,
    /// Definition version; the latest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// The run's input, any JSON; checked against the definition's `input_schema`. Default
    /// `null`.
    #[serde(default)]
    pub input: Value,
    /// The same key for the same definition always names the same run: a repeated start
    /// returns the existing run (200) instead of starting another. Not with `workflow_id`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The run's id (a UUID) chosen by the caller, instead of an `idempotency_key`: a repeated
    /// start with the same id returns the existing run (200). A start answered 503 names the
    /// id it will create in the problem's `workflow_id`; retrying with it is always safe.
    #[serde(default)]
    pub workflow_id: Option<String>,
}

/// A run and its status after a request about it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunStatus {
    /// Run id (UUID).
    pub workflow_id: String,
    /// The run's status as the read model shows it once it reflects the request, else as
    /// the engine reported it (a verb then answers 202). `null` only when neither said.
    pub status: Option<Status>,
}

/// Options of a cancellation.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Undo the completed steps (saga) before ending `cancelled`. Default false.
    #[serde(default)]
    pub compensate: bool,
    /// Why, recorded with the cancellation; optional.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The task an added step became.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskCreated {
    /// Task id (`<run uuid>.<n>`).
    pub task_id: String,
}

/// Options of a skip.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    /// Used as the task's output, any JSON; default `null`.
    #[serde(default)]
    pub output: Value,
}

/// A task and its status after an operator's or a person's action on it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskAction {
    /// Task id (`<run uuid>.<n>`).
    pub task_id: String,
    /// Its run's id (UUID).
    pub workflow_id: String,
    /// The task's status; `null` when the read model has not caught up yet (202).
    pub status: Option<TaskStatus>,
}

/// A worker's request for work.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// Who polls; not blank. Shown on the task and in its events.
    pub worker_id: String,
    /// Most attempts to take, 1 to 100; default 1.
    #[serde(default)]
    pub max_tasks: Option<u32>,
    /// How long to wait for work, in ms: 0 to 60000; default 20000.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// The attempts a poll handed out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Polled {
    /// Empty when the wait ended without work.
    pub tasks: Vec<TaskDispatch>,
}

/// A worker's report that an attempt succeeded.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Complete {
    /// The `attempt` of the polled task being reported.
    pub attempt: u32,
    /// The task's result, any JSON; it becomes the step's output. Default `null`.
    #[serde(default)]
    pub output: Value,
    /// What the attempt used (CPU, memory...), for cost analytics; optional.
    #[serde(default)]
    pub metrics: Option<TaskMetrics>,
}

/// A worker's report that an attempt failed.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// The `attempt` of the polled task being reported.
    pub attempt: u32,
    /// What went wrong; its `type` must not be blank. With `retryable: false` (default true)
    /// there is no further attempt.
    pub error: ErrorInfo,
    /// What the attempt used (CPU, memory...), for cost analytics; optional.
    #[serde(default)]
    pub metrics: Option<TaskMetrics>,
    /// Wait at least this many ms before the next attempt (a rate limit's `Retry-After`, say);
    /// the step's retry policy still decides whether there is one, and its backoff applies
    /// when longer.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// A worker's sign that an attempt is still running.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The `attempt` of the polled task being reported.
    pub attempt: u32,
    /// Progress to hand to the next attempt if this one fails, any JSON; optional. The next
    /// attempt receives the latest one as its `checkpoint`.
    #[serde(default)]
    pub checkpoint: Option<Value>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeartbeatAck {
    /// True when the attempt's work is no longer wanted (its run was cancelled, or its task
    /// cancelled while the run compensates or the step takes a fallback): stop, nothing was
    /// recorded, and a completion would be refused. An attempt that is stale for another reason (a retry took over) has
    /// its heartbeat refused with 409 instead, which also means stop.
    pub cancel_requested: bool,
}

/// Human tasks of the inbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inbox {
    /// Oldest first.
    pub items: Vec<HumanTask>,
}

/// Who acts; the `X-DisTorch-User` header may say it instead.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Who acts; not blank. Takes precedence over the header.
    #[serde(default)]
    pub user: Option<String>,
}

/// The new owner: an `assignee`, a `group`, or both.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reassign {
    /// The person the task goes to; absent or empty: none.
    #[serde(default)]
    pub assignee: Option<String>,
    /// The group the task is offered to; absent or empty: none.
    #[serde(default)]
    pub group: Option<String>,
    /// Who reassigns it; the `X-DisTorch-User` header may say it instead.
    #[serde(default)]
    pub user: Option<String>,
}

/// A person's answer to a human task.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteHuman {
    /// Must satisfy the step's `form`; becomes the step's output. Default `null`.
    #[serde(default)]
    pub output: Value,
    /// Who completes it; the `X-DisTorch-User` header may say it instead.
    #[serde(default)]
    pub user: Option<String>,
}

/// A signal the run has received.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignalSent {
    /// Run id (UUID).
    pub workflow_id: String,
    /// Signal name.
    pub signal: String,
}

/// SLA warnings and breaches.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlaBreaches {
    /// Newest first.
    pub items: Vec<SlaRecord>,
}

/// An empty JSON object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Empty {}

/// A health check's answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: String,
}
