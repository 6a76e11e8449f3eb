//! Names of the log topics DisTorch uses. Every service derives names from one [`Topics`]
//! value so a deployment can prefix them (`acme.distorch.events`).

/// The topic names of one deployment, all under one prefix (`distorch` unless configured):
/// `<prefix>.commands`, `<prefix>.events`, `<prefix>.tasks.<queue>`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: "distorch".into(),
        }
    }
}

impl Topics {
    /// Names under `prefix` instead of `distorch`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    /// Commands for the engine, keyed by workflow id (or `definition/<name>`).
    pub fn commands(&self) -> String {
        format!("{}.commands", self.prefix)
    }
    /// Workflow events, keyed by workflow id: the source of truth.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Registered definitions (one partition).
    pub fn definitions(&self) -> String {
        format!("{}.definitions", self.prefix)
    }
    /// Engine answers to commands that asked for one, keyed by the asker's `reply_to`.
    pub fn replies(&self) -> String {
        format!("{}.replies", self.prefix)
    }
    /// Records that could not be processed, with a `reason` header.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }
    /// Circuit breaker transitions of the HTTP executor, keyed by target host (one partition).
    pub fn breakers(&self) -> String {
        format!("{}.breakers", self.prefix)
    }
    /// Engine snapshots of run state, one partition per commands partition (see the engine).
    pub fn snapshots(&self) -> String {
        format!("{}.snapshots", self.prefix)
    }
    /// The index of the ownership markers in the events partitions (one partition; see
    /// `distorch_eventlog::fence`).
    pub fn fences(&self) -> String {
        format!("{}.fences", self.prefix)
    }
    /// Heartbeats of the API replicas: who they are, where they are reached and which
    /// queue partitions they hold (one partition; see `distorch_api::replicas`).
    pub fn api_members(&self) -> String {
        format!("{}.api-members", self.prefix)
    }
    /// Task attempts ready for workers of `queue`, keyed by workflow id.
    pub fn tasks(&self, queue: &str) -> String {
        format!("{}.tasks.{queue}", self.prefix)
    }
}

/// One attempt of a task handed to a worker: what to run, on what input, and the task id and
/// attempt number to report its start, heartbeats and outcome with.
// Also the payload of a `<prefix>.tasks.<queue>` record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PolledTask))]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskDispatch {
    /// The task; every report about the attempt names it.
    pub task_id: crate::TaskId,
    /// The run the task belongs to.
    pub workflow_id: crate::WorkflowId,
    /// Id of the definition step the task runs; for a compensation, of the step it undoes.
    pub step_id: String,
    /// The task type, e.g. `reserve-stock`: what the worker is to do.
    pub task: String,
    /// The queue the attempt was offered on.
    pub queue: String,
    /// The attempt number, from 1. Reports must carry it: one about an attempt that is no
    /// longer the current one is refused.
    pub attempt: u32,
    /// The task's input, any JSON value.
    pub input: serde_json::Value,
    /// The last checkpoint an earlier attempt of this task saved with a heartbeat, to resume
    /// from; `null` when there is none.
    #[serde(default)]
    pub checkpoint: Option<serde_json::Value>,
    /// The attempt fails when this long (ms) passes after its start or its last heartbeat
    /// without a new heartbeat; `null` when the step sets no heartbeat timeout.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// The state of the circuit breaker that guards calls of `http` steps to one target
/// `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
pub enum BreakerState {
    /// Calls go out; outcomes are counted.
    Closed,
    /// No call goes out until the cooldown ends; attempts wait or run their fallback.
    Open,
    /// The cooldown ended: one probe call is out, and its outcome closes or reopens it.
    HalfOpen,
}

/// A breaker changed state: the payload of a `<prefix>.breakers` record, keyed by host. The
/// HTTP executor writes them; the API folds them into each host's current state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BreakerTransition {
    /// The target `host:port`.
    pub host: String,
    /// The state entered.
    pub state: BreakerState,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Why, for people: the failures that opened it, or the probe's outcome.
    pub reason: String,
    /// Consecutive failures counted when it changed (0 once closed again).
    #[serde(default)]
    pub consecutive_failures: u32,
}
