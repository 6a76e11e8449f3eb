//! The workflow state machine: `decide(&State, Command) -> Result<Vec<Event>, Rejection>` and
//! `evolve(&mut State, &EventEnvelope)`.

use crate::ids::TaskId;
use serde::{Deserialize, Serialize};

/// Run status as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WorkflowStatus))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::Enum),
    graphql(name = "WorkflowStatus")
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Paused,
    Parked,
    Compensating,
    Completed,
    Failed,
    Compensated,
    Cancelled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Compensated | Status::Cancelled
        )
    }

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

/// Task status as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "graphql", derive(async_graphql::Enum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Scheduled,
    Running,
    Completed,
    Failed,
    Skipped,
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
    /// Backoff before the next attempt.
    Retry {
        task_id: TaskId,
        attempt: u32,
    },
    ScheduleToStart {
        task_id: TaskId,
        attempt: u32,
    },
    StartToClose {
        task_id: TaskId,
        attempt: u32,
    },
    Heartbeat {
        task_id: TaskId,
        attempt: u32,
    },
    /// A `wait` step, or a `signal` step's timeout.
    Wait {
        step_key: String,
    },
    /// A human task's escalation.
    Escalate {
        task_id: TaskId,
    },
    /// A human task's deadline.
    HumanTimeout {
        task_id: TaskId,
    },
    /// An SLA warning (`breach: false`) or breach of the run (`step_key: None`) or a step.
    Sla {
        step_key: Option<String>,
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
