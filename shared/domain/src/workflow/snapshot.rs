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

/// Everything [`Workflow`] holds, as serialisable data: each field holds what the
/// [`Workflow`] field of the same name does, except that the definition is named by name and
/// version and ad-hoc steps are kept as their source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSnapshot {
    /// [`Workflow::id`].
    pub id: WorkflowId,
    /// Name of the run's definition; with `version`, what [`Workflow::restore`] looks up.
    pub definition: String,
    /// Version of the run's definition.
    pub version: u32,
    /// [`Workflow::input`].
    pub input: Value,
    /// [`Workflow::parent`].
    pub parent: Option<ParentRef>,
    /// [`Workflow::idempotency_key`].
    pub idempotency_key: Option<String>,
    /// [`Workflow::created_ms`].
    pub created_ms: i64,
    /// [`Workflow::updated_ms`].
    pub updated_ms: i64,
    /// [`Workflow::last_seq`]: the restored run skips events up to it.
    pub last_seq: u64,
    /// [`Workflow::terminal`].
    pub terminal: Option<Status>,
    /// [`Workflow::paused`].
    pub paused: bool,
    /// [`Workflow::compensation`].
    pub compensation: Option<Compensation>,
    /// [`Workflow::output`].
    pub output: Option<Value>,
    /// [`Workflow::error`].
    pub error: Option<ErrorInfo>,
    /// [`Workflow::steps`].
    pub steps: HashMap<String, StepState>,
    /// [`Workflow::tasks`].
    pub tasks: HashMap<TaskId, TaskState>,
    /// [`Workflow::next_task`].
    pub next_task: u32,
    /// [`Workflow::completed_order`].
    pub completed_order: Vec<String>,
    /// `(position, step source, reserved task id)` in order of addition.
    pub extra_steps: Vec<(usize, Value, TaskId)>,
    /// [`Workflow::applied`].
    pub applied: HashSet<CommandId>,
    /// [`Workflow::signals`].
    pub signals: HashMap<String, Vec<Value>>,
    /// [`Workflow::signals_consumed`].
    pub signals_consumed: HashMap<String, usize>,
    /// [`Workflow::sla_fired`].
    pub sla_fired: HashSet<(Option<String>, bool)>,
}

/// Why a snapshot could not be turned back into a [`Workflow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The run's definition version is not in the [`DefinitionSource`].
    #[error("run {run}: definition {name} v{version} is not registered")]
    UnknownDefinition {
        /// The snapshot's run.
        run: WorkflowId,
        /// Definition name.
        name: String,
        /// Definition version.
        version: u32,
    },
    /// An ad-hoc step's source no longer compiles against the definition.
    #[error("run {run}: ad-hoc step {index} no longer compiles: {reason}")]
    ExtraStep {
        /// The snapshot's run.
        run: WorkflowId,
        /// Position of the step in `extra_steps` (order of addition).
        index: usize,
        /// The compile error.
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
