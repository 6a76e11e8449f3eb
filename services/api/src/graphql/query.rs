//! Queries: the read side, from the same read store as the REST API.

use super::error::OrGql;
use super::types::{
    DeadLetterItem, Definition, PageInfo, Task, Workflow, WorkflowPage, WorkflowRow, WorkflowStatus,
};
use crate::error::ApiError;
use crate::routes::{AppState, Breaker, breaker_rows, parse_task_id, parse_workflow_id};
use async_graphql::{Context, ID, InputObject, Object, Result};
use distorch_store::{MAX_LIMIT, WorkflowFilter};

pub struct Query;

/// Which runs `workflows` lists; the conditions given must all hold.
#[derive(InputObject, Default, Debug)]
pub struct WorkflowsFilter {
    pub status: Option<WorkflowStatus>,
    /// Definition name.
    pub definition: Option<String>,
}

#[Object]
impl Query {
    /// A run by id; `null` when there is none.
    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Workflow>> {
        let state = ctx.data_unchecked::<AppState>();
        let id = parse_workflow_id(&id).gql()?;
        let view = state
            .store
            .workflow(id)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(view.map(Workflow))
    }

    /// Runs, newest first, `first` per page (1 to 1000, default 50); pass a page's
    /// `pageInfo.endCursor` as `after` for the next one.
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        filter: Option<WorkflowsFilter>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> Result<WorkflowPage> {
        let state = ctx.data_unchecked::<AppState>();
        let limit = usize::try_from(first)
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("first {first} must be from 1 to {MAX_LIMIT}"))
            })
            .gql()?;
        let filter = filter.unwrap_or_default();
        let filter = WorkflowFilter {
            status: filter.status.map(Into::into),
            definition: filter.definition.filter(|d| !d.is_empty()),
        };
        let after = after.as_deref().filter(|c| !c.is_empty());
        let page = state
            .store
            .workflows(&filter, limit, after)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(WorkflowPage {
            nodes: page.items.into_iter().map(WorkflowRow::from).collect(),
            page_info: PageInfo {
                has_next_page: page.next_cursor.is_some(),
                end_cursor: page.next_cursor,
            },
        })
    }

    /// A task by id (`<run uuid>.<n>`); `null` when there is none.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Task>> {
        let state = ctx.data_unchecked::<AppState>();
        let (task_id, _) = parse_task_id(&id).gql()?;
        let view = state
            .store
            .task(&task_id)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(view.map(Task))
    }

    /// Every registered definition with its versions.
    async fn definitions(&self, ctx: &Context<'_>) -> Result<Vec<Definition>> {
        let state = ctx.data_unchecked::<AppState>();
        let rows = state
            .store
            .definitions()
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(rows.into_iter().map(Definition::from).collect())
    }

    /// Tasks parked in the dead-letter queue, waiting for an operator.
    async fn dead_letters(&self, ctx: &Context<'_>) -> Result<Vec<DeadLetterItem>> {
        let state = ctx.data_unchecked::<AppState>();
        let items = state
            .store
            .dead_letters()
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(items.into_iter().map(DeadLetterItem::from).collect())
    }

    /// Circuit breakers of the services `http` steps call, one per `host:port` that ever
    /// tripped (as `GET /api/v1/breakers`).
    async fn breakers(&self, ctx: &Context<'_>) -> Vec<Breaker> {
        breaker_rows(&ctx.data_unchecked::<AppState>().breakers)
    }
}
