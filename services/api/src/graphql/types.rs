//! GraphQL object types. The read models are the domain's and the store's own, with the
//! GraphQL derives of their `graphql` features, so REST and GraphQL show the same fields;
//! what only GraphQL has (a run's history and path as fields, events as typed objects) is
//! added here.

use super::error::OrGql;
use crate::actions;
use crate::error::ApiError;
use crate::feed;
use crate::routes::AppState;
use async_graphql::{ComplexObject, Context, ID, Object, Result, SimpleObject};
use distorch_domain::event::EventEnvelope;
use distorch_domain::path::PathEntry;
use distorch_domain::view::{WorkflowView, rfc3339};
use distorch_store::WorkflowSummary;
use serde_json::Value;
use std::sync::Arc;

/// A run as the read model shows it, with its history and execution path.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Workflow {
    #[graphql(flatten)]
    pub view: WorkflowView,
}

impl From<WorkflowView> for Workflow {
    fn from(view: WorkflowView) -> Self {
        Self { view }
    }
}

#[ComplexObject]
impl Workflow {
    /// Every event of the run, in order.
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowEvent>> {
        let state = ctx.data_unchecked::<AppState>();
        let events = state
            .store
            .history(self.view.workflow_id)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(events
            .into_iter()
            .map(|e| WorkflowEvent(Arc::new(e)))
            .collect())
    }

    /// Which steps ran, in what order, with what outcome (as `GET .../path`).
    async fn path(&self, ctx: &Context<'_>) -> Result<Vec<PathEntry>> {
        let state = ctx.data_unchecked::<AppState>();
        let path = actions::execution_path(state, self.view.workflow_id)
            .await
            .gql()?;
        Ok(path.entries)
    }
}

/// Where a page ends and whether another follows.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// Whether another page follows.
    pub has_next_page: bool,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub end_cursor: Option<String>,
}

/// One page of runs, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct WorkflowPage {
    /// The runs of this page, newest first.
    pub nodes: Vec<WorkflowSummary>,
    /// Where this page ends and whether another follows.
    pub page_info: PageInfo,
}

/// A run's event as GraphQL shows it: the envelope's fields, the event as JSON.
pub struct WorkflowEvent(pub Arc<EventEnvelope>);

/// One event of a run, as its history shows it.
#[Object]
impl WorkflowEvent {
    /// The run's id (UUID).
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

/// A [`feed::TaskUpdate`] as GraphQL shows it.
pub struct TaskUpdate(pub feed::TaskUpdate);

/// An event about a task of a queue.
#[Object]
impl TaskUpdate {
    /// The task's id (`<run uuid>.<n>`).
    async fn task_id(&self) -> ID {
        ID(self.0.task_id.0.clone())
    }
    /// The task's queue.
    async fn queue(&self) -> &str {
        &self.0.queue
    }
    /// The task's run (UUID).
    async fn workflow_id(&self) -> ID {
        ID(self.0.envelope.workflow_id.to_string())
    }
    /// The event's seq in its run.
    async fn seq(&self) -> u64 {
        self.0.envelope.seq
    }
    /// When the engine decided it (RFC 3339).
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
