//! GraphQL object types: thin wrappers over the domain's read models, so the domain keeps
//! no framework derives and each field reads straight from the view the REST API serves.

use super::error::OrGql;
use crate::actions;
use crate::error::ApiError;
use crate::feed;
use crate::routes::AppState;
use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use distorch_domain::command::ErrorInfo;
use distorch_domain::event::{EventEnvelope, TaskKind};
use distorch_domain::path::{self, PathEntry};
use distorch_domain::view::{DeadLetter, TaskView, WorkflowView, rfc3339};
use distorch_domain::workflow::{Status, TaskStatus};
use serde_json::Value;
use std::sync::Arc;

/// Run status.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WorkflowStatus {
    Running,
    Paused,
    Parked,
    Compensating,
    Completed,
    Failed,
    Compensated,
    Cancelled,
}

impl From<Status> for WorkflowStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Running => Self::Running,
            Status::Paused => Self::Paused,
            Status::Parked => Self::Parked,
            Status::Compensating => Self::Compensating,
            Status::Completed => Self::Completed,
            Status::Failed => Self::Failed,
            Status::Compensated => Self::Compensated,
            Status::Cancelled => Self::Cancelled,
        }
    }
}

impl From<WorkflowStatus> for Status {
    fn from(s: WorkflowStatus) -> Self {
        match s {
            WorkflowStatus::Running => Self::Running,
            WorkflowStatus::Paused => Self::Paused,
            WorkflowStatus::Parked => Self::Parked,
            WorkflowStatus::Compensating => Self::Compensating,
            WorkflowStatus::Completed => Self::Completed,
            WorkflowStatus::Failed => Self::Failed,
            WorkflowStatus::Compensated => Self::Compensated,
            WorkflowStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Task status.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "TaskStatus")]
pub enum TaskState {
    Scheduled,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl From<TaskStatus> for TaskState {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Scheduled => Self::Scheduled,
            TaskStatus::Running => Self::Running,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Skipped => Self::Skipped,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// `STEP` for a step's own task, `COMPENSATION` for an undo task, `HUMAN` for a person's.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "TaskKind")]
pub enum Kind {
    Step,
    Compensation,
    Human,
}

impl From<TaskKind> for Kind {
    fn from(k: TaskKind) -> Self {
        match k {
            TaskKind::Step => Self::Step,
            TaskKind::Compensation => Self::Compensation,
            TaskKind::Human => Self::Human,
        }
    }
}

/// A failure of a task attempt or of a run.
#[derive(SimpleObject, Clone, Debug)]
pub struct Failure {
    /// Machine-readable type that a step's `non_retryable` list can name.
    #[graphql(name = "type")]
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

impl From<ErrorInfo> for Failure {
    fn from(e: ErrorInfo) -> Self {
        Self {
            kind: e.kind,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

/// A run as the read model shows it.
pub struct Workflow(pub WorkflowView);

#[Object]
impl Workflow {
    async fn workflow_id(&self) -> ID {
        ID(self.0.workflow_id.to_string())
    }
    async fn definition(&self) -> &str {
        &self.0.definition
    }
    async fn version(&self) -> u32 {
        self.0.version
    }
    async fn status(&self) -> WorkflowStatus {
        self.0.status.into()
    }
    async fn input(&self) -> &Value {
        &self.0.input
    }
    async fn output(&self) -> Option<&Value> {
        self.0.output.as_ref()
    }
    /// Why the run failed or was cancelled, or (while live) why compensation began.
    async fn error(&self) -> Option<Failure> {
        self.0.error.clone().map(Into::into)
    }
    /// RFC 3339.
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
    /// Keys of the steps in progress.
    async fn current_steps(&self) -> &[String] {
        &self.0.current_steps
    }
    /// In the order they were first scheduled.
    async fn tasks(&self) -> Vec<Task> {
        self.0.tasks.iter().cloned().map(Task).collect()
    }
    /// Sequence number of the last event this view reflects.
    async fn last_seq(&self) -> u64 {
        self.0.last_seq
    }
    /// The run that started this one as a child step, if any.
    async fn parent_workflow_id(&self) -> Option<ID> {
        self.0.parent_workflow_id.map(|p| ID(p.to_string()))
    }
    /// Every event of the run, in order.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowEvent>> {
        let state = ctx.data_unchecked::<AppState>();
        let events = state
            .store
            .history(self.0.workflow_id)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(events
            .into_iter()
            .map(|e| WorkflowEvent(Arc::new(e)))
            .collect())
    }
    /// Which steps ran, in what order, with what outcome (as `GET .../path`).
    async fn path(&self, ctx: &Context<'_>) -> Result<Vec<PathStep>> {
        let state = ctx.data_unchecked::<AppState>();
        let path = actions::execution_path(state, self.0.workflow_id)
            .await
            .gql()?;
        Ok(path.entries.into_iter().map(PathStep).collect())
    }
}

/// A task of a run (a step's task, a compensation or a human task) with its latest attempt.
pub struct Task(pub TaskView);

#[Object]
impl Task {
    async fn task_id(&self) -> ID {
        ID(self.0.task_id.0.clone())
    }
    async fn workflow_id(&self) -> ID {
        ID(self.0.workflow_id.to_string())
    }
    async fn step_id(&self) -> &str {
        &self.0.step_id
    }
    /// The step id, prefixed by `<foreach id>[<i>].` per enclosing foreach iteration.
    async fn step_key(&self) -> &str {
        &self.0.step_key
    }
    async fn kind(&self) -> Kind {
        self.0.kind.into()
    }
    /// Task type, e.g. `reserve-stock`.
    async fn task(&self) -> &str {
        &self.0.task
    }
    async fn queue(&self) -> &str {
        &self.0.queue
    }
    async fn status(&self) -> TaskState {
        self.0.status.into()
    }
    async fn attempt(&self) -> u32 {
        self.0.attempt
    }
    async fn input(&self) -> &Value {
        &self.0.input
    }
    async fn output(&self) -> Option<&Value> {
        self.0.output.as_ref()
    }
    async fn error(&self) -> Option<Failure> {
        self.0.error.clone().map(Into::into)
    }
    /// Waiting in the dead-letter queue for an operator (retry or skip).
    async fn parked(&self) -> bool {
        self.0.parked
    }
    async fn worker_id(&self) -> Option<&str> {
        self.0.worker_id.as_deref()
    }
    async fn scheduled_at(&self) -> &str {
        &self.0.scheduled_at
    }
    async fn started_at(&self) -> Option<&str> {
        self.0.started_at.as_deref()
    }
    async fn finished_at(&self) -> Option<&str> {
        self.0.finished_at.as_deref()
    }
}

/// A row of the run list.
#[derive(SimpleObject, Clone, Debug)]
pub struct WorkflowRow {
    pub workflow_id: ID,
    pub definition: String,
    pub version: u32,
    pub status: WorkflowStatus,
    pub created_at: String,
    pub updated_at: String,
}

impl From<distorch_store::WorkflowSummary> for WorkflowRow {
    fn from(s: distorch_store::WorkflowSummary) -> Self {
        Self {
            workflow_id: ID(s.workflow_id.to_string()),
            definition: s.definition,
            version: s.version,
            status: s.status.into(),
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Where a page ends and whether another follows.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub end_cursor: Option<String>,
}

/// One page of runs, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct WorkflowPage {
    pub nodes: Vec<WorkflowRow>,
    pub page_info: PageInfo,
}

/// A registered definition with its versions.
#[derive(SimpleObject, Clone, Debug)]
pub struct Definition {
    pub name: String,
    pub latest_version: u32,
    pub versions: Vec<u32>,
    pub description: Option<String>,
}

impl From<distorch_store::DefinitionSummary> for Definition {
    fn from(d: distorch_store::DefinitionSummary) -> Self {
        Self {
            name: d.name,
            latest_version: d.latest_version,
            versions: d.versions,
            description: d.description,
        }
    }
}

/// A task parked in the dead-letter queue.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeadLetterItem {
    pub task_id: ID,
    pub workflow_id: ID,
    pub step_id: String,
    pub task: String,
    pub attempts: u32,
    pub error: Option<Failure>,
    pub input: Value,
}

impl From<DeadLetter> for DeadLetterItem {
    fn from(d: DeadLetter) -> Self {
        Self {
            task_id: ID(d.task_id.0),
            workflow_id: ID(d.workflow_id.to_string()),
            step_id: d.step_id,
            task: d.task,
            attempts: d.attempts,
            error: d.error.map(Into::into),
            input: d.input,
        }
    }
}

/// One event of a run, as its history shows it.
pub struct WorkflowEvent(pub Arc<EventEnvelope>);

#[Object]
impl WorkflowEvent {
    async fn workflow_id(&self) -> ID {
        ID(self.0.workflow_id.to_string())
    }
    /// 1, 2, 3... per run, without gaps: pass the last one seen as `afterSeq` to resume.
    async fn seq(&self) -> u64 {
        self.0.seq
    }
    /// When the engine decided it (RFC 3339).
    async fn at(&self) -> String {
        rfc3339(self.0.at_ms)
    }
    /// The event type, e.g. `task_completed`.
    #[graphql(name = "type")]
    async fn kind(&self) -> &'static str {
        self.0.event.name()
    }
    /// The whole event as JSON, as `GET /api/v1/workflows/{id}/history` shows it.
    async fn data(&self) -> Value {
        serde_json::to_value(self.0.as_ref()).unwrap_or(Value::Null)
    }
}

/// An event about a task of a queue.
pub struct TaskUpdate(pub feed::TaskUpdate);

#[Object]
impl TaskUpdate {
    async fn task_id(&self) -> ID {
        ID(self.0.task_id.0.clone())
    }
    async fn queue(&self) -> &str {
        &self.0.queue
    }
    async fn workflow_id(&self) -> ID {
        ID(self.0.envelope.workflow_id.to_string())
    }
    /// The event's seq in its run.
    async fn seq(&self) -> u64 {
        self.0.envelope.seq
    }
    async fn at(&self) -> String {
        rfc3339(self.0.envelope.at_ms)
    }
    /// The event type, e.g. `task_started`.
    #[graphql(name = "type")]
    async fn kind(&self) -> &'static str {
        self.0.envelope.event.name()
    }
    /// The whole event as JSON.
    async fn data(&self) -> Value {
        serde_json::to_value(self.0.envelope.as_ref()).unwrap_or(Value::Null)
    }
}

/// What sort of step a path entry is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum StepKind {
    Task,
    Http,
    Human,
    Switch,
    Parallel,
    Foreach,
    Wait,
    Signal,
    Child,
    Compensation,
}

/// How a path entry ended, or that it has not yet.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum StepOutcome {
    Running,
    Completed,
    Failed,
    Parked,
    Skipped,
    Compensated,
    Cancelled,
}

/// Why a path entry was skipped.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum SkipReason {
    When,
    BranchNotTaken,
    Operator,
}

/// One step instance on a run's execution path.
pub struct PathStep(pub PathEntry);

#[Object]
impl PathStep {
    async fn step_key(&self) -> &str {
        &self.0.step_key
    }
    async fn step_id(&self) -> &str {
        &self.0.step_id
    }
    /// Key of the enclosing container step, if any.
    async fn parent(&self) -> Option<&str> {
        self.0.parent.as_deref()
    }
    async fn kind(&self) -> StepKind {
        match self.0.kind {
            path::PathKind::Task => StepKind::Task,
            path::PathKind::Http => StepKind::Http,
            path::PathKind::Human => StepKind::Human,
            path::PathKind::Switch => StepKind::Switch,
            path::PathKind::Parallel => StepKind::Parallel,
            path::PathKind::Foreach => StepKind::Foreach,
            path::PathKind::Wait => StepKind::Wait,
            path::PathKind::Signal => StepKind::Signal,
            path::PathKind::Child => StepKind::Child,
            path::PathKind::Compensation => StepKind::Compensation,
        }
    }
    async fn outcome(&self) -> StepOutcome {
        match self.0.outcome {
            path::Outcome::Running => StepOutcome::Running,
            path::Outcome::Completed => StepOutcome::Completed,
            path::Outcome::Failed => StepOutcome::Failed,
            path::Outcome::Parked => StepOutcome::Parked,
            path::Outcome::Skipped => StepOutcome::Skipped,
            path::Outcome::Compensated => StepOutcome::Compensated,
            path::Outcome::Cancelled => StepOutcome::Cancelled,
        }
    }
    async fn skip_reason(&self) -> Option<SkipReason> {
        self.0.skip_reason.map(|r| match r {
            path::SkipReason::When => SkipReason::When,
            path::SkipReason::BranchNotTaken => SkipReason::BranchNotTaken,
            path::SkipReason::Operator => SkipReason::Operator,
        })
    }
    /// Sequence number of the event that began it.
    async fn seq(&self) -> u64 {
        self.0.seq
    }
    async fn started_at(&self) -> Option<&str> {
        self.0.started_at.as_deref()
    }
    async fn finished_at(&self) -> Option<&str> {
        self.0.finished_at.as_deref()
    }
    async fn attempts(&self) -> u32 {
        self.0.attempts
    }
    async fn task_id(&self) -> Option<ID> {
        self.0.task_id.as_ref().map(|t| ID(t.0.clone()))
    }
    /// For a `switch`: `cases[<i>]` or `default`.
    async fn branch(&self) -> Option<String> {
        self.0.branch.map(crate::routes::branch_name)
    }
    async fn fallback(&self) -> Option<&str> {
        self.0.fallback.as_deref()
    }
    async fn child_workflow_id(&self) -> Option<ID> {
        self.0.child_workflow_id.map(|c| ID(c.to_string()))
    }
    async fn error(&self) -> Option<Failure> {
        self.0.error.clone().map(Into::into)
    }
}
