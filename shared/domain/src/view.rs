//! Read models as the API shows them, and the pure fold that builds them from events
//! (`WorkflowView::apply`). The projector persists them; the API serves them.

use crate::command::{ErrorInfo, TaskMetrics};
use crate::event::{EventEnvelope, TaskKind};
use crate::ids::{TaskId, WorkflowId};
use crate::workflow::{Status, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/v1/workflows/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowView {
    pub workflow_id: WorkflowId,
    pub definition: String,
    pub version: u32,
    pub status: Status,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// Keys of the steps in progress.
    pub current_steps: Vec<String>,
    pub tasks: Vec<TaskView>,
    /// Sequence of the last event folded in.
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_workflow_id: Option<WorkflowId>,
}

/// One task of a run (a step task or a compensation), with its latest attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub task_id: TaskId,
    pub workflow_id: WorkflowId,
    pub step_id: String,
    pub step_key: String,
    pub kind: TaskKind,
    pub task: String,
    pub queue: String,
    pub status: TaskStatus,
    pub attempt: u32,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    /// In the dead-letter queue waiting for an operator.
    pub parked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<TaskMetrics>,
    pub scheduled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// `GET /api/v1/dlq` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub task_id: TaskId,
    pub workflow_id: WorkflowId,
    pub step_id: String,
    pub task: String,
    pub attempts: u32,
    pub error: Option<ErrorInfo>,
    pub input: Value,
}

impl WorkflowView {
    /// Folds one event in. MUST be idempotent: an event with `seq <= last_seq` changes nothing.
    /// `None` view + a `WorkflowStarted` creates it (see `WorkflowView::start`).
    pub fn apply(&mut self, event: &EventEnvelope) {
        let _ = event;
        todo!("projector helper")
    }
}
