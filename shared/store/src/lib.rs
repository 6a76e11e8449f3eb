//! Read-model store port (what the projector writes and the API reads) and its backends.
//!
//! This crate owns the [`ReadStore`] contract, its row/summary types and its backends. It
//! depends on the domain (views and the fold live there, so every backend folds alike) and
//! MUST NOT depend on the event log, on services, or on a web framework.
//!
//! Contract (every backend MUST honour it):
//! - `apply` is idempotent: events are keyed by (workflow id, seq); an event already folded
//!   in changes nothing, so a replay or a redelivered batch is harmless.
//! - A successful `apply` is durable; the projector commits its log offsets only after it.
//! - Reads see every batch whose `apply` returned.
//! - A view is exactly [`WorkflowView::start`] + [`WorkflowView::apply`] over the run's events.
//!   Dead letters are exactly the parked tasks of the stored views.
//! - Listings are newest first (creation time, then id, both descending) and a cursor never
//!   yields a run twice.
//!
//! Entry points: [`ReadStore`], [`sqlite::SqliteStore`], the [`conformance`] suite.

pub mod conformance;
pub mod sqlite;

use async_trait::async_trait;
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::view::{DeadLetter, TaskView, WorkflowView};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Storage(_))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    pub status: Option<Status>,
    pub definition: Option<String>,
}

/// One page of runs, newest first; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A row of `GET /api/v1/workflows`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkflowSummary {
    pub workflow_id: WorkflowId,
    pub definition: String,
    pub version: u32,
    pub status: Status,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DefinitionSummary {
    pub name: String,
    pub latest_version: u32,
    pub versions: Vec<u32>,
    pub description: Option<String>,
}

#[async_trait]
pub trait ReadStore: Send + Sync + 'static {
    /// Folds a batch of events (any runs, in log order per run) into the read models.
    async fn apply(&self, events: &[EventEnvelope]) -> Result<()>;
    /// Records registered definitions (idempotent by name + version).
    async fn apply_definitions(&self, defs: &[DefinitionRegistered]) -> Result<()>;

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
    async fn task(&self, id: &TaskId) -> Result<Option<TaskView>>;
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>>;
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
    /// Waits until definition `name` at `version` is readable; false on timeout.
    async fn wait_for_definition(
        &self,
        name: &str,
        version: u32,
        timeout: Duration,
    ) -> Result<bool>;
}
