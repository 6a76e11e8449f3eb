//! The workflow state machine: [`decide()`] / [`handle`] turn a [`CommandEnvelope`] into the
//! run's next events (or a [`Rejection`]) given the run's [`Workflow`] state, the definitions
//! and the engine's clock (`now_ms`); [`evolve`] folds one event into the state.
//!
//! [`CommandEnvelope`]: crate::command::CommandEnvelope
//! [`Rejection`]: crate::command::Rejection

use crate::ids::TaskId;
use serde::{Deserialize, Serialize};

/// Where a run stands. The first four are live; the others are final.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WorkflowStatus))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::Enum),
    graphql(name = "WorkflowStatus")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its steps are being scheduled and run.
    Running,
    /// An operator paused it: nothing new starts until it is resumed (attempts already
    /// handed out may still report).
    Paused,
    /// A task waits in the dead-letter queue for an operator to retry or skip it.
    Parked,
    /// A step failed, or an operator cancelled the run with compensation: its completed
    /// steps are being undone, the most recently completed first.
    Compensating,
    /// Ended successfully, with an output.
    Completed,
    /// Ended in failure; its error says why.
    Failed,
    /// Ended after a failure, its completed steps undone.
    Compensated,
    /// Ended by a cancel (an operator's, or its parent run's when it no longer needed it),
    /// after compensating when that was asked for.
    Cancelled,
}

impl Status {
    /// Whether the run has ended: completed, failed, compensated or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Compensated | Status::Cancelled
        )
    }

    /// The name used in JSON, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Parked => "parked",
            Status::Compensating => "compensating",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Compensated => "compensated",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Where a task's latest attempt stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a worker to start it (or, for a person's task, in the inbox unclaimed).
    /// Also while the task waits out a backoff or an open circuit breaker before its next
    /// attempt.
    Scheduled,
    /// A worker started the attempt, or someone claimed the person's task.
    Running,
    /// Done, with an output.
    Completed,
    /// Its last attempt failed and no other follows (unless an operator retries a parked
    /// task).
    Failed,
    /// An operator skipped it, giving its output.
    Skipped,
    /// Abandoned: its run or its step no longer needs it.
    Cancelled,
}

impl TaskStatus {
    /// The name used on the wire and in the read models.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// A timer the engine keeps for a run; firing it issues `Command::FireTimer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// The wait before the next attempt is over (the backoff after a failure, or the delay
    /// of an attempt deferred while a circuit breaker was open): schedule it.
    Retry {
        /// The task to schedule again.
        task_id: TaskId,
        /// The attempt that failed or was deferred; the timer is stale once another attempt
        /// is current.
        attempt: u32,
    },
    /// No worker started `attempt` within the step's `schedule_to_start_timeout`.
    ScheduleToStart {
        /// The task whose attempt waits for a worker.
        task_id: TaskId,
        /// The attempt the timer is for; stale once another attempt is current.
        attempt: u32,
    },
    /// `attempt` did not finish within the step's (start-to-close) `timeout`.
    StartToClose {
        /// The task whose attempt runs.
        task_id: TaskId,
        /// The attempt the timer is for; stale once another attempt is current.
        attempt: u32,
    },
    /// `attempt` sent no heartbeat within the step's `heartbeat_timeout`.
    Heartbeat {
        /// The task whose attempt runs.
        task_id: TaskId,
        /// The attempt the timer is for; stale once another attempt is current.
        attempt: u32,
    },
    /// A `wait` step, or a `signal` step's timeout.
    Wait {
        /// Key of the waiting step.
        step_key: String,
    },
    /// A human task's escalation.
    Escalate {
        /// The human task to reassign to its escalation target.
        task_id: TaskId,
    },
    /// A human task's deadline.
    HumanTimeout {
        /// The human task that fails when nobody completed it.
        task_id: TaskId,
    },
    /// An SLA warning (`breach: false`) or breach of the run (`step_key: None`) or a step.
    Sla {
        /// Key of the step whose SLA it is; `None` for the run's.
        step_key: Option<String>,
        /// `true` for the SLA's end, `false` for its `warn_at` warning.
        breach: bool,
    },
}

mod context;
mod decide;
mod plan;
mod snapshot;
mod state;

pub use decide::{Decision, answer_ended, decide, handle};
pub use snapshot::{RestoreError, WorkflowSnapshot};
pub use state::{ExtraStep, StepState, StepStatus, TaskState, Workflow, evolve};

use crate::definition::Definition;
use std::sync::Arc;

/// Where the state machine finds definitions (the engine's registry; a map in tests).
pub trait DefinitionSource {
    /// `version: None` means the latest.
    fn definition(&self, name: &str, version: Option<u32>) -> Option<Arc<Definition>>;
}
