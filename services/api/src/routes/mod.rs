//! HTTP routes. Handlers validate what they can name precisely (ids, query values, body
//! shape), publish one command, and translate the engine's outcome; everything the engine
//! knows better (definitions, schemas, state transitions) is left to its rejection.

pub(crate) mod analytics;
pub(crate) mod breakers;
pub(crate) mod definitions;
pub(crate) mod dlq;
pub(crate) mod human;
pub(crate) mod ops;
pub(crate) mod path;
pub(crate) mod sla;
pub(crate) mod streams;
pub(crate) mod tasks;
pub(crate) mod worker;
pub(crate) mod workflows;

pub(crate) use analytics::*;
pub(crate) use breakers::*;
pub(crate) use definitions::*;
pub(crate) use dlq::*;
pub(crate) use human::*;
pub(crate) use ops::*;
pub(crate) use path::*;
pub(crate) use sla::*;
pub(crate) use streams::*;
pub(crate) use tasks::*;
pub(crate) use worker::*;
pub(crate) use workflows::*;

use crate::bus::CommandBus;
use crate::dispatch::Dispatchers;
use crate::error::ApiError;
use crate::metrics::{ApiMetrics, SharedRegistry};
use crate::openapi::ApiDoc;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use distorch_domain::command::{Answer, Outcome};
use distorch_domain::{TaskId, WorkflowId};
use distorch_store::ReadStore;

use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

#[derive(Clone)]
pub(crate) struct AppState {
    pub bus: CommandBus,
    pub store: Arc<dyn ReadStore>,
    pub dispatchers: Arc<Dispatchers>,
    pub metrics: ApiMetrics,
    pub registry: SharedRegistry,
    pub read_your_writes: Duration,
    pub breakers: crate::breakers::BreakerBoard,
    pub feed: crate::feed::Feed,
    /// `None`: the analytics routes answer 503.
    pub analytics: Option<Arc<dyn distorch_store::analytics::Analytics>>,
    pub cost_rates: distorch_store::analytics::CostRates,
    /// The log, for the views served straight from a topic (the commands DLQ).
    pub log: Arc<dyn distorch_eventlog::EventLog>,
    pub dlq_topic: String,
    /// The other API replicas, where there can be any (`distorch api`).
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
}

impl AppState {
    /// Waits (bounded) until the run's view reflects event `seq`. A slow projector only
    /// costs freshness, never the request, so failures are logged and reported as `false`.
    pub(crate) async fn caught_up(&self, id: WorkflowId, seq: u64) -> bool {
        match self
            .store
            .wait_for_seq(id, seq, self.read_your_writes)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(workflow_id = %id, error = %e, "waiting for the read model failed");
                false
            }
        }
    }
}

pub(crate) fn router(state: AppState, max_body_bytes: usize) -> Router {
    let schema = crate::graphql::schema(&state);
    let graphql_get = {
        let schema = schema.clone();
        move |protocol, upgrade| crate::graphql::get(schema, protocol, upgrade)
    };
    Router::new()
        .route(
            "/api/v1/definitions",
            post(register_definition).get(list_definitions),
        )
        .route("/api/v1/definitions/{name}", get(latest_definition))
        .route(
            "/api/v1/definitions/{name}/versions/{version}",
            get(definition_version),
        )
        .route(
            "/api/v1/workflows",
            post(start_workflow).get(list_workflows),
        )
        .route("/api/v1/workflows/{id}", get(get_workflow))
        .route("/api/v1/workflows/{id}/history", get(workflow_history))
        .route("/api/v1/workflows/{id}/path", get(workflow_path))
        .route("/api/v1/events/stream", get(sse_events))
        .route("/ws/workflows/{id}", get(ws_workflow))
        .route("/ws/tasks/stream", get(ws_tasks))
        .route("/api/v1/workflows/{id}/cancel", post(cancel_workflow))
        .route("/api/v1/workflows/{id}/pause", post(pause_workflow))
        .route("/api/v1/workflows/{id}/resume", post(resume_workflow))
        .route("/api/v1/workflows/{id}/tasks", post(add_task))
        .route("/api/v1/workflows/{id}/signals/{name}", post(send_signal))
        .route("/api/v1/human-tasks", get(list_human_tasks))
        .route(
            "/api/v1/human-tasks/{task_id}/claim",
            post(claim_human_task),
        )
        .route(
            "/api/v1/human-tasks/{task_id}/release",
            post(release_human_task),
        )
        .route(
            "/api/v1/human-tasks/{task_id}/reassign",
            post(reassign_human_task),
        )
        .route(
            "/api/v1/human-tasks/{task_id}/complete",
            post(complete_human_task),
        )
        .route("/api/v1/sla/breaches", get(sla_breaches))
        .route("/api/v1/analytics/performance", get(analytics_performance))
        .route("/api/v1/analytics/bottlenecks", get(analytics_bottlenecks))
        .route("/api/v1/analytics/cost", get(analytics_cost))
        .route("/api/v1/tasks/{task_id}", get(get_task))
        .route("/api/v1/tasks/{task_id}/retry", post(retry_task))
        .route("/api/v1/tasks/{task_id}/skip", post(skip_task))
        .route("/api/v1/tasks/{task_id}/complete", post(complete_task))
        .route("/api/v1/tasks/{task_id}/fail", post(fail_task))
        .route("/api/v1/tasks/{task_id}/heartbeat", post(heartbeat))
        .route("/api/v1/queues/{queue}/poll", post(poll))
        .route("/internal/queues/{queue}/take", post(take))
        .route("/api/v1/dlq", get(dead_letters))
        .route("/api/v1/dlq/commands", get(dead_commands))
        .route("/api/v1/breakers", get(list_breakers))
        .route(
            "/graphql",
            get(graphql_get).post_service(async_graphql_axum::GraphQL::new(schema)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Counts requests by route template and status.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    state
        .metrics
        .http_request(method.as_str(), &route, response.status().as_u16());
    response
}

pub(crate) fn parse_workflow_id(raw: &str) -> Result<WorkflowId, ApiError> {
    raw.parse().map_err(|e| {
        ApiError::BadRequest(format!(
            "{raw:?} is not a workflow id (expected a UUID): {e}"
        ))
    })
}

pub(crate) fn parse_task_id(raw: &str) -> Result<(TaskId, WorkflowId), ApiError> {
    let id = TaskId(raw.to_owned());
    match id.workflow_id() {
        Some(workflow) => Ok((id, workflow)),
        None => Err(ApiError::BadRequest(format!(
            "{raw:?} is not a task id (expected <workflow uuid>.<number>)"
        ))),
    }
}

const DEFAULT_LIMIT: usize = 50;

/// A `?limit=` of 1 to [`distorch_store::MAX_LIMIT`]; [`DEFAULT_LIMIT`] when absent.
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    const MAX: usize = distorch_store::MAX_LIMIT;
    match raw {
        None | Some("") => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit {raw:?} must be an integer from 1 to {MAX}"
            ))),
        },
    }
}

/// The accepted command's `(seq, answer)`, or its rejection as an HTTP error.
pub(crate) fn accepted(outcome: Outcome) -> Result<(u64, Answer), ApiError> {
    match outcome {
        Outcome::Accepted { seq, result } => Ok((seq, result)),
        Outcome::Rejected { rejection } => Err(rejection.into()),
    }
}

/// An answer of another kind than the command's: an engine of another version, or a bug.
pub(crate) fn unexpected(command: &str, answer: &Answer) -> ApiError {
    ApiError::Unavailable(format!(
        "the engine answered {command} with {answer:?}; is it of another version than the API?"
    ))
}
