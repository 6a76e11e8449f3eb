//! Queries: the read side, from the same read store as the REST API.

use super::error::OrGql;
use super::types::{PageInfo, Workflow, WorkflowPage};
use crate::error::ApiError;
use crate::routes::{AppState, Breaker, breaker_rows, parse_task_id, parse_workflow_id};
use crate::routes::{WindowQuery, analytics};
use async_graphql::{Context, ID, InputObject, Object, Result};
use distorch_domain::view::{DeadLetter, TaskView};
use distorch_domain::workflow::Status;
use distorch_store::analytics::{Bottlenecks, Cost, Performance, Window};
use distorch_store::{DefinitionSummary, MAX_LIMIT, WorkflowFilter};

/// The query root: reads of the same read store (and log, for the commands DLQ) as REST.
pub struct Query;

/// Which runs `workflows` lists; the conditions given must all hold.
#[derive(InputObject, Default, Debug)]
pub struct WorkflowsFilter {
    /// Only runs in this status.
    pub status: Option<Status>,
    /// Only runs of this definition (its name).
    pub definition: Option<String>,
}

/// Reads: runs, tasks, definitions, dead letters, analytics and circuit breakers.
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
        Ok(view.map(Workflow::from))
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
            status: filter.status,
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
            nodes: page.items,
            page_info: PageInfo {
                has_next_page: page.next_cursor.is_some(),
                end_cursor: page.next_cursor,
            },
        })
    }

    /// A task by id (`<run uuid>.<n>`); `null` when there is none.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<TaskView>> {
        let state = ctx.data_unchecked::<AppState>();
        let (task_id, _) = parse_task_id(&id).gql()?;
        let view = state
            .store
            .task(&task_id)
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(view)
    }

    /// Every registered definition with its versions.
    async fn definitions(&self, ctx: &Context<'_>) -> Result<Vec<DefinitionSummary>> {
        let state = ctx.data_unchecked::<AppState>();
        let rows = state
            .store
            .definitions()
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(rows)
    }

    /// Tasks parked in the dead-letter queue, waiting for an operator.
    async fn dead_letters(&self, ctx: &Context<'_>) -> Result<Vec<DeadLetter>> {
        let state = ctx.data_unchecked::<AppState>();
        let items = state
            .store
            .dead_letters()
            .await
            .map_err(ApiError::from)
            .gql()?;
        Ok(items)
    }

    /// Command records moved to the dead-letter queue (malformed, or rejected with nobody to
    /// answer), oldest first, like `GET /api/v1/dlq/commands`: `first` records (1 to 1000,
    /// default 100) after `after`, the `id` of the last record of the previous page.
    async fn dead_letter_commands(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        #[graphql(default = 100, validator(minimum = 1, maximum = 1000))] first: usize,
    ) -> Result<Vec<crate::routes::DeadCommand>> {
        let state = ctx.data_unchecked::<AppState>();
        let from = after
            .as_deref()
            .map(crate::routes::dlq_cursor_after)
            .transpose()
            .gql()?;
        let page = crate::routes::dlq_page(state.log.as_ref(), &state.dlq_topic, from, first)
            .await
            .gql()?;
        Ok(page.items)
    }

    /// Performance, bottlenecks and cost of what ended in a window, exactly as
    /// `GET /api/v1/analytics/{performance,bottlenecks,cost}` report them (JSON). The window
    /// is `from`/`to` (RFC 3339) or `window` (`30m`, `24h`, `7d`) ending at `to` or now;
    /// default: the last 24 hours.
    async fn analytics(
        &self,
        from: Option<String>,
        to: Option<String>,
        window: Option<String>,
    ) -> Result<AnalyticsReport> {
        let query = WindowQuery { from, to, window };
        Ok(AnalyticsReport(query.resolve().gql()?))
    }

    /// Circuit breakers of the services `http` steps call, one per `host:port` that ever
    /// tripped (as `GET /api/v1/breakers`).
    async fn breakers(&self, ctx: &Context<'_>) -> Vec<Breaker> {
        breaker_rows(&ctx.data_unchecked::<AppState>().breakers)
    }
}

/// Analytics over one window; each report is fetched only when selected.
pub struct AnalyticsReport(Window);

/// Analytics reports over one time window, as JSON; each is computed only when selected.
#[Object]
impl AnalyticsReport {
    /// Per definition and step: counts, p50/p95/p99 run and end-to-end times, throughput,
    /// failure and retry rates.
    async fn performance(&self, ctx: &Context<'_>) -> Result<async_graphql::Json<Performance>> {
        let state = ctx.data_unchecked::<AppState>();
        let report = analytics(state).gql()?.performance(self.0).await;
        Ok(async_graphql::Json(report.map_err(ApiError::from).gql()?))
    }

    /// Steps ranked by their share of task time: queue wait, run time, backoff, people,
    /// open breakers.
    async fn bottlenecks(&self, ctx: &Context<'_>) -> Result<async_graphql::Json<Bottlenecks>> {
        let state = ctx.data_unchecked::<AppState>();
        let report = analytics(state).gql()?.bottlenecks(self.0).await;
        Ok(async_graphql::Json(report.map_err(ApiError::from).gql()?))
    }

    /// Cost per definition, step, task type, queue and tenant at the configured rates.
    async fn cost(&self, ctx: &Context<'_>) -> Result<async_graphql::Json<Cost>> {
        let state = ctx.data_unchecked::<AppState>();
        let report = analytics(state)
            .gql()?
            .cost(self.0, &state.cost_rates)
            .await;
        Ok(async_graphql::Json(report.map_err(ApiError::from).gql()?))
    }
}
