//! A run's state as data: what an engine writes into a partition snapshot so that the next
//! owner of the partition restores the run without replaying its history.
//!
//! A [`Workflow`] holds its compiled definition and compiled ad-hoc steps, which are not
//! data. The snapshot names the definition by name and version (definitions are immutable
//! and live in their own topic) and keeps ad-hoc steps as the source the `TaskAdded` event
//! carried; [`Workflow::restore`] compiles them again.

use super::state::{Compensation, ExtraStep, StepState, TaskState, Workflow};
use super::{DefinitionSource, Status};
use crate::command::{ErrorInfo, ParentRef};
use crate::ids::{CommandId, TaskId, WorkflowId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Everything [`Workflow`] holds, as serialisable data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSnapshot {
    pub id: WorkflowId,
    pub definition: String,
    pub version: u32,
    pub input: Value,
    pub parent: Option<ParentRef>,
    pub idempotency_key: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub last_seq: u64,
    pub terminal: Option<Status>,
    pub paused: bool,
    pub compensation: Option<Compensation>,
    pub output: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub steps: HashMap<String, StepState>,
    pub tasks: HashMap<TaskId, TaskState>,
    pub next_task: u32,
    pub completed_order: Vec<String>,
    /// `(position, step source, reserved task id)` in order of addition.
    pub extra_steps: Vec<(usize, Value, TaskId)>,
    pub applied: HashSet<CommandId>,
    pub signals: HashMap<String, Vec<Value>>,
    pub signals_consumed: HashMap<String, usize>,
    pub sla_fired: HashSet<(Option<String>, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("run {run}: definition {name} v{version} is not registered")]
    UnknownDefinition {
        run: WorkflowId,
        name: String,
        version: u32,
    },
    #[error("run {run}: ad-hoc step {index} no longer compiles: {reason}")]
    ExtraStep {
        run: WorkflowId,
        index: usize,
        reason: String,
    },
}

impl Workflow {
    /// The run as data. Restoring it gives a run that decides exactly as this one does.
    pub fn snapshot(&self) -> WorkflowSnapshot {
        // Destructured field by field so that a new field of `Workflow` fails to compile
        // here until the snapshot carries it too.
        let Workflow {
            id,
            definition,
            input,
            parent,
            idempotency_key,
            created_ms,
            updated_ms,
            last_seq,
            terminal,
            paused,
            compensation,
            output,
            error,
            steps,
            tasks,
            next_task,
            completed_order,
            extra_steps,
            applied,
            signals,
            signals_consumed,
            sla_fired,
        } = self;
        WorkflowSnapshot {
            id: *id,
            definition: definition.name.clone(),
            version: definition.version,
            input: input.clone(),
            parent: parent.clone(),
            idempotency_key: idempotency_key.clone(),
            created_ms: *created_ms,
            updated_ms: *updated_ms,
            last_seq: *last_seq,
            terminal: *terminal,
            paused: *paused,
            compensation: compensation.clone(),
            output: output.clone(),
            error: error.clone(),
            steps: steps.clone(),
            tasks: tasks.clone(),
            next_task: *next_task,
            completed_order: completed_order.clone(),
            extra_steps: extra_steps
                .iter()
                .map(|e| (e.position, e.source.clone(), e.task_id.clone()))
                .collect(),
            applied: applied.clone(),
            signals: signals.clone(),
            signals_consumed: signals_consumed.clone(),
            sla_fired: sla_fired.clone(),
        }
    }

    /// The run a snapshot describes, with its definition from `defs`.
    pub fn restore(
        snap: WorkflowSnapshot,
        defs: &impl DefinitionSource,
    ) -> Result<Workflow, RestoreError> {
        let WorkflowSnapshot {
            id,
            definition,
            version,
            input,
            parent,
            idempotency_key,
            created_ms,
            updated_ms,
            last_seq,
            terminal,
            paused,
            compensation,
            output,
            error,
            steps,
            tasks,
            next_task,
            completed_order,
            extra_steps: extra_sources,
            applied,
            signals,
            signals_consumed,
            sla_fired,
        } = snap;
        let Some(definition) = defs.definition(&definition, Some(version)) else {
            return Err(RestoreError::UnknownDefinition {
                run: id,
                name: definition,
                version,
            });
        };
        let mut extra_steps: Vec<ExtraStep> = Vec::with_capacity(extra_sources.len());
        for (index, (position, source, task_id)) in extra_sources.into_iter().enumerate() {
            let taken: Vec<String> = extra_steps.iter().map(|e| e.step.id.clone()).collect();
            let step =
                definition
                    .parse_step(&source, &taken)
                    .map_err(|e| RestoreError::ExtraStep {
                        run: id,
                        index,
                        reason: e.to_string(),
                    })?;
            extra_steps.push(ExtraStep {
                position,
                step,
                task_id,
                source,
            });
        }
        Ok(Workflow {
            id,
            definition,
            input,
            parent,
            idempotency_key,
            created_ms,
            updated_ms,
            last_seq,
            terminal,
            paused,
            compensation,
            output,
            error,
            steps,
            tasks,
            next_task,
            completed_order,
            extra_steps,
            applied,
            signals,
            signals_consumed,
            sla_fired,
        })
    }
}
