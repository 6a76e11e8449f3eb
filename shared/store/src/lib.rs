#![warn(missing_docs)]
//! Read-model store port (what the projector writes and the API reads) and its backends.
//!
//! This crate owns the [`ReadStore`] contract, its row/summary types and its backends. It
//! depends on the domain (views and the fold live there, so every backend folds alike) and
//! MUST NOT depend on the event log, on services, or on a web framework.
//!
//! Contract (every backend MUST honour it):
//! - `apply` is idempotent: events are keyed by (workflow id, seq); an event already folded
//!   in changes nothing, so a replay or a redelivered batch is harmless.
//! - What `apply` folded is durable once a later `flush` returned (a backend may write or
//!   sync lazily); the projector commits its log offsets only after that flush.
//! - Reads see every batch whose `apply` returned.
//! - A view is exactly [`WorkflowView::start`] + [`WorkflowView::apply`] over the run's events.
//!   Dead letters are exactly the parked tasks of the stored views. The inbox is exactly the
//!   human tasks of the stored views ([`HumanTask::from_view`]). SLA alerts are exactly the
//!   `SlaWarned`/`SlaBreached` events folded in, each once.
//! - Listings are newest first (creation time, then id, both descending) and a cursor never
//!   yields a run twice. The inbox is oldest first (creation time, then task id), a work
//!   queue; SLA alerts are newest first.
//!
//! Entry points: [`ReadStore`], [`sqlite::SqliteStore`], the [`conformance`] suite.
//! The analytics port (task-attempt and run facts, performance/bottleneck/cost reports) and
//! its SQLite and ClickHouse backends live in [`analytics`].

pub mod analytics;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(feature = "scylla")]
pub mod scylla;
pub mod sqlite;

use async_trait::async_trait;
use distorch_domain::command::ErrorInfo;
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::view::{DeadLetter, SlaAlert, SlaKind, TaskView, WorkflowView};
use distorch_domain::workflow::{Status, TaskStatus};
use distorch_domain::{TaskId, WorkflowId};
use serde_json::Value;
use std::time::Duration;

/// Why a read-store or analytics operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, the database, the network, a timeout, or a row that does not
    /// decode); the only retryable kind.
    #[error("storage error: {0}")]
    Storage(String),
    /// A listing cursor that no page of this store handed out (the caller's mistake).
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
    /// A report window the caller got wrong (empty or reversed).
    #[error("invalid window: {0}")]
    BadWindow(String),
    /// The backend cannot be used as configured (a bad URL, a schema older than this
    /// build); an operator must act, so retrying does not help.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// Whether trying the same call again may succeed: only for [`StoreError::Storage`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Storage(_))
    }
}

/// The result of every store and analytics operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which runs a listing returns; the conditions that are set must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    /// Only runs in this status.
    pub status: Option<Status>,
    /// Only runs of this definition (by name, any version).
    pub definition: Option<String>,
}

/// One page of runs, newest first; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows of this page, at most the requested limit.
    pub items: Vec<T>,
    /// Opaque cursor to pass back for the next page.
    pub next_cursor: Option<String>,
}

/// A row of `GET /api/v1/workflows`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WorkflowRow))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "WorkflowRow")
)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkflowSummary {
    /// The run.
    pub workflow_id: WorkflowId,
    /// Name of the definition the run executes.
    pub definition: String,
    /// Version of that definition the run was started with.
    pub version: u32,
    /// The run's current status.
    pub status: Status,
    /// When the run started (RFC 3339); the listing's sort key.
    pub created_at: String,
    /// When the last event folded into the run happened (RFC 3339).
    pub updated_at: String,
}

/// A row of the definition catalogue: one registered definition name with all its versions.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = DefinitionRow))]
#[cfg_attr(
    feature = "graphql",
    derive(async_graphql::SimpleObject),
    graphql(name = "Definition")
)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DefinitionSummary {
    /// The definition's name.
    pub name: String,
    /// The highest registered version.
    pub latest_version: u32,
    /// Every registered version, ascending.
    pub versions: Vec<u32>,
    /// The description of the latest version, if it has one.
    pub description: Option<String>,
}

/// Most rows one inbox or SLA query returns.
pub const MAX_LIMIT: usize = 1000;

/// Which human tasks an inbox query returns, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    /// Waiting for someone: `scheduled` (unclaimed) or `running` (claimed).
    Open,
    /// Exactly this status.
    Is(TaskStatus),
}

/// Inbox query; the conditions that are set must all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HumanTaskFilter {
    /// Only tasks assigned to this person.
    pub assignee: Option<String>,
    /// Only tasks assigned to this group.
    pub group: Option<String>,
    /// Only tasks in this status (or open); `None`: any status.
    pub status: Option<InboxStatus>,
}

impl HumanTaskFilter {
    /// Whether `task` meets every condition that is set (the reference semantics every backend's
    /// query must give).
    pub fn matches(&self, task: &HumanTask) -> bool {
        let status = match self.status {
            None => true,
            Some(InboxStatus::Open) => {
                matches!(task.status, TaskStatus::Scheduled | TaskStatus::Running)
            }
            Some(InboxStatus::Is(s)) => task.status == s,
        };
        status
            && self
                .assignee
                .as_ref()
                .is_none_or(|a| task.assignee.as_ref() == Some(a))
            && self
                .group
                .as_ref()
                .is_none_or(|g| task.group.as_ref() == Some(g))
    }
}

/// A row of the human-task inbox: a human task of a run with its inbox side.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = InboxItem))]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HumanTask {
    /// The task.
    pub task_id: TaskId,
    /// The run the task belongs to.
    pub workflow_id: WorkflowId,
    /// Name of the run's definition.
    pub definition: String,
    /// The step of the definition that created the task.
    pub step_id: String,
    /// The step instance: the step id, prefixed by `<foreach id>[<i>].` inside a loop.
    pub step_key: String,
    /// `scheduled` while unclaimed, `running` once claimed, then its final status.
    pub status: TaskStatus,
    /// Rendered when the task was created.
    pub title: String,
    /// The person it is assigned to, if any.
    pub assignee: Option<String>,
    /// The group it is assigned to, if any.
    pub group: Option<String>,
    /// Who claimed it; `None` while unclaimed (or released).
    pub claimed_by: Option<String>,
    /// JSON Schema the completion's output must satisfy.
    pub form: Option<Value>,
    /// An escalation timer reassigned it.
    pub escalated: bool,
    /// Who completed it, once completed.
    pub completed_by: Option<String>,
    /// RFC 3339: when it was created, when it times out.
    pub created_at: String,
    /// When it times out (RFC 3339), if it has a timeout.
    pub due_at: Option<String>,
    /// The completion's output, once completed.
    pub output: Option<Value>,
    /// Why it failed (or timed out), if it did.
    pub error: Option<ErrorInfo>,
}

impl HumanTask {
    /// The inbox row of `task`, a task of `view`; `None` unless it is a human task.
    pub fn from_view(view: &WorkflowView, task: &TaskView) -> Option<HumanTask> {
        let h = task.human.as_ref()?;
        Some(HumanTask {
            task_id: task.task_id.clone(),
            workflow_id: view.workflow_id,
            definition: view.definition.clone(),
            step_id: task.step_id.clone(),
            step_key: task.step_key.clone(),
            status: task.status,
            title: h.title.clone(),
            assignee: h.assignee.clone(),
            group: h.group.clone(),
            claimed_by: h.claimed_by.clone(),
            form: h.form.clone(),
            escalated: h.escalated,
            completed_by: h.completed_by.clone(),
            created_at: task.scheduled_at.clone(),
            due_at: h.due_at.clone(),
            output: task.output.clone(),
            error: task.error.clone(),
        })
    }

    /// Every human task of `view`, in the order they were created.
    pub fn all_of(view: &WorkflowView) -> impl Iterator<Item = HumanTask> + '_ {
        view.tasks.iter().filter_map(|t| Self::from_view(view, t))
    }
}

/// An SLA warning or breach of a run (or one of its steps).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SlaBreach))]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlaRecord {
    /// The run.
    pub workflow_id: WorkflowId,
    /// Name of the run's definition.
    pub definition: String,
    /// `None`: the run's own SLA.
    pub step_key: Option<String>,
    /// The SLA's duration in ms, from the start of the run or step.
    pub sla_ms: u64,
    /// A warning (`warn_at` passed) or a breach.
    pub kind: SlaKind,
    /// RFC 3339.
    pub at: String,
}

impl SlaRecord {
    /// The record of `alert`, an SLA alert of `view`.
    pub fn new(view: &WorkflowView, alert: &SlaAlert) -> Self {
        Self {
            workflow_id: view.workflow_id,
            definition: view.definition.clone(),
            step_key: alert.step_key.clone(),
            sla_ms: alert.sla_ms,
            kind: alert.kind,
            at: alert.at.clone(),
        }
    }
}

/// The runs of a batch in first-seen order, each with its events in batch order: how every
/// backend folds a batch run by run.
/// Works on borrowed events and on owned ones (which a fold can then keep without a copy).
pub(crate) fn group_by_run<E: std::borrow::Borrow<EventEnvelope>>(
    events: impl IntoIterator<Item = E>,
) -> Vec<(WorkflowId, Vec<E>)> {
    let mut index = std::collections::HashMap::new();
    let mut groups: Vec<(WorkflowId, Vec<E>)> = Vec::new();
    for e in events {
        let id = e.borrow().workflow_id;
        let i = *index.entry(id).or_insert_with(|| {
            groups.push((id, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(e);
    }
    groups
}

/// The read-model store port: what the projector writes and the API reads (see the crate docs for
/// the contract every backend honours).
#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Folds a batch of events (any runs, in log order per run) into the read models.
    async fn apply(&self, events: &[EventEnvelope]) -> Result<()>;
    /// Records registered definitions (idempotent by name + version).
    async fn apply_definitions(&self, defs: &[DefinitionRegistered]) -> Result<()>;
    /// Makes everything applied so far survive a crash or power loss. A store whose writes
    /// are durable when they return has nothing to do; one that writes or syncs lazily (the
    /// embedded one) writes what it holds back and syncs here. The projector calls it before
    /// it commits log offsets past what it applied.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// Drops every read model (runs, histories, listings, inbox, dead letters, SLA alerts,
    /// definitions); a rebuild from the log follows. Afterwards the store MUST read as
    /// empty, and applying the same events again MUST give the same read models. Not
    /// meant to run while a projector writes: the caller stops it first.
    async fn reset(&self) -> Result<()>;

    /// The run's view; `None` when no event of it was applied.
    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowView>>;
    /// `cursor` is an opaque value from a previous page; `limit` is at most 1000.
    async fn workflows(
        &self,
        filter: &WorkflowFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<WorkflowSummary>>;
    /// Every event of the run, in order.
    async fn history(&self, id: WorkflowId) -> Result<Vec<EventEnvelope>>;
    /// A task by id, as its run's view shows it; `None` when unknown.
    async fn task(&self, id: &TaskId) -> Result<Option<TaskView>>;
    /// Every task parked in the dead-letter queue, waiting for an operator.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>>;
    /// The inbox: human tasks matching `filter`, oldest first, at most `limit` (clamped to
    /// 1..=[`MAX_LIMIT`]).
    async fn human_tasks(&self, filter: &HumanTaskFilter, limit: usize) -> Result<Vec<HumanTask>>;
    /// SLA warnings and breaches of every run, newest first, at most `limit` (clamped to
    /// 1..=[`MAX_LIMIT`]).
    async fn sla_breaches(&self, limit: usize) -> Result<Vec<SlaRecord>>;
    /// The definition catalogue: one summary per registered name.
    async fn definitions(&self) -> Result<Vec<DefinitionSummary>>;
    /// `version: None` means the latest.
    async fn definition(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<DefinitionRegistered>>;
    /// Waits until the run's view has folded in event `seq` (read-your-writes after a
    /// command); returns false when `timeout` passes first.
    async fn wait_for_seq(&self, id: WorkflowId, seq: u64, timeout: Duration) -> Result<bool>;
    /// Waits until the run's view shows it ended (completed, failed, compensated or
    /// cancelled); false when `timeout` passes first. Waiters of a long-poll use this rather
    /// than waking, and re-reading the view, on every event of the run.
    async fn wait_for_end(&self, id: WorkflowId, timeout: Duration) -> Result<bool>;
    /// Waits until definition `name` at `version` is readable; false on timeout.
    async fn wait_for_definition(
        &self,
        name: &str,
        version: u32,
        timeout: Duration,
    ) -> Result<bool>;
}
