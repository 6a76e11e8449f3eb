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
