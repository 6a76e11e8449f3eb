//! Names of the log topics DisTorch uses. Every service derives names from one [`Topics`]
//! value so a deployment can prefix them (`acme.distorch.events`).

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
    /// Task attempts ready for workers of `queue`, keyed by workflow id.
    pub fn tasks(&self, queue: &str) -> String {
        format!("{}.tasks.{queue}", self.prefix)
    }
}

/// What a worker receives for one attempt; the payload of a `tasks.<queue>` record.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PolledTask))]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskDispatch {
    pub task_id: crate::TaskId,
    pub workflow_id: crate::WorkflowId,
    pub step_id: String,
    pub task: String,
    pub queue: String,
    pub attempt: u32,
    pub input: serde_json::Value,
    #[serde(default)]
    pub checkpoint: Option<serde_json::Value>,
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// A circuit breaker's state: the HTTP executor's breakers per target host (the saga's
/// `http::breaker` module holds the transitions), as the API shows them.
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
