//! Runs: start, read, list, history, the operator verbs (cancel, pause, resume, add task),
//! and signals.

use super::{AppState, accepted, parse_limit, parse_workflow_id, unexpected};
use crate::actions;
use crate::dto::{
    ALL_STATUSES, Cancel, History, RunStatus, SignalSent, StartWorkflow, TaskCreated, WorkflowPage,
};
use crate::error::ApiError;
use crate::problem::{Json as JsonBody, OptionalJson, Problem};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use distorch_domain::WorkflowId;
use distorch_domain::command::{Answer, Command};
use distorch_domain::view::WorkflowView;
use distorch_store::WorkflowFilter;
use serde_json::Value;

/// Start a run.
///
/// With an `idempotency_key` or a `workflow_id`, repeating the request returns the run it
/// started (200) instead of starting another. The response waits, for a bounded time, until
/// the run is readable, so a `GET` right after it finds the run.
/// A 503 whose problem names a `workflow_id` means the start is durable but unanswered (an
/// engine failing over): retry with that `workflow_id`.
#[utoipa::path(
    post,
    path = "/api/v1/workflows",
    tag = "workflows",
    request_body = StartWorkflow,
    responses(
        (status = 201, description = "Started", body = RunStatus),
        (status = 200, description = "The run this idempotency key or workflow_id already started", body = RunStatus),
        (status = 400, description = "Bad body, or input fails the definition's input_schema", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown definition or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No answer in time; the problem's `workflow_id` names the run to retry with", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn start_workflow(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<StartWorkflow>,
) -> Result<impl IntoResponse, ApiError> {
    let started = actions::start_workflow(
        &state,
        req.definition,
        req.version,
        req.input,
        req.idempotency_key,
        req.workflow_id,
    )
    .await?;
    let code = if started.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let workflow_id = started.workflow_id;
    let body = RunStatus {
        workflow_id: workflow_id.to_string(),
        status: started.status,
    };
    Ok((
        code,
        [(header::LOCATION, format!("/api/v1/workflows/{workflow_id}"))],
        Json(body),
    ))
}

/// A run with its tasks.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "Run id (UUID)"),
        GetQuery,
    ),
    responses(
        (status = 200, description = "The run", body = WorkflowView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<GetQuery>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id = parse_workflow_id(&id)?;
    let wait = std::time::Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let view = state.store.workflow(id).await?;
        let view = view.ok_or_else(|| ApiError::NotFound(format!("no workflow run {id}")))?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if view.status.is_terminal() || left.is_zero() {
            return Ok(Json(view));
        }
        // Wakes once, when the run has ended, instead of polling or on each of its events.
        if !state.store.wait_for_end(id, left).await? {
            return Ok(Json(state.store.workflow(id).await?.unwrap_or(view)));
        }
    }
}

/// Longest `wait_ms` honoured.
const MAX_WAIT_MS: u64 = 60_000;

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetQuery {
    /// Long-poll: when the run has not finished, wait up to this many ms (at most 60000) for
    /// it to finish before answering. Default 0: answer at once.
    wait_ms: Option<u64>,
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only runs in this status.
    status: Option<String>,
    /// Only runs of this definition.
    definition: Option<String>,
    /// Page size, 1 to 1000; default 50.
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List runs, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    tag = "workflows",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of runs", body = WorkflowPage),
        (status = 400, description = "Bad status, limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_workflows(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            ALL_STATUSES
                .into_iter()
                .find(|s| s.as_str() == raw)
                .ok_or_else(|| {
                    let allowed: Vec<_> = ALL_STATUSES.iter().map(|s| s.as_str()).collect();
                    ApiError::BadRequest(format!(
                        "status {raw:?} is not one of: {}",
                        allowed.join(", ")
                    ))
                })?,
        ),
    };
    let limit = parse_limit(query.limit.as_deref())?;
    let filter = WorkflowFilter {
        status,
        definition: query.definition.filter(|d| !d.is_empty()),
    };
    let cursor = query.cursor.as_deref().filter(|c| !c.is_empty());
    let page = state.store.workflows(&filter, limit, cursor).await?;
    Ok(Json(WorkflowPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Every event of a run, in order.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/history",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    responses(
        (status = 200, description = "The run's events", body = History),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn workflow_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    let id = parse_workflow_id(&id)?;
    let events = state.store.history(id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!("no workflow run {id}")));
    }
    Ok(Json(History { events }))
}

/// Publishes a verb about a run and answers with its status once the view reflects it
/// (200), or with whatever the engine said when the view lags (202).
async fn run_verb(
    state: &AppState,
    workflow_id: WorkflowId,
    command: Command,
) -> Result<(StatusCode, Json<RunStatus>), ApiError> {
    let applied = actions::run_verb(state, workflow_id, command).await?;
    let code = if applied.caught_up {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = RunStatus {
        workflow_id: workflow_id.to_string(),
        status: applied.status,
    };
    Ok((code, Json(body)))
}

/// Cancel a run, optionally compensating its completed steps first.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/cancel",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    request_body(content = Option<Cancel>, description = "Optional"),
    responses(
        (status = 200, description = "Applied", body = RunStatus),
        (status = 202, description = "Applied; the read model has not caught up yet", body = RunStatus),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the run's status", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<Cancel>,
) -> Result<impl IntoResponse, ApiError> {
    let workflow_id = parse_workflow_id(&id)?;
    let command = Command::CancelWorkflow {
        workflow_id,
        compensate: req.compensate,
        reason: req.reason,
    };
    run_verb(&state, workflow_id, command).await
}

/// Pause a run: nothing new is scheduled until it is resumed.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/pause",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    responses(
        (status = 200, description = "Applied", body = RunStatus),
        (status = 202, description = "Applied; the read model has not caught up yet", body = RunStatus),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the run's status", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn pause_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let workflow_id = parse_workflow_id(&id)?;
    run_verb(&state, workflow_id, Command::PauseWorkflow { workflow_id }).await
}

/// Resume a paused run.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/resume",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    responses(
        (status = 200, description = "Applied", body = RunStatus),
        (status = 202, description = "Applied; the read model has not caught up yet", body = RunStatus),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the run's status", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn resume_workflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let workflow_id = parse_workflow_id(&id)?;
    run_verb(&state, workflow_id, Command::ResumeWorkflow { workflow_id }).await
}

/// Add an ad-hoc task step that runs after the steps in flight.
///
/// The body is a task step as written in a definition (`id`, `task`, optional `queue`,
/// `input`, `retry`...); the engine validates it like a definition step.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/tasks",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    request_body(content = Object, description = "A task step"),
    responses(
        (status = 201, description = "Added", body = TaskCreated),
        (status = 400, description = "Invalid step", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn add_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(step): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let workflow_id = parse_workflow_id(&id)?;
    if !step.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a task step object such as {\"id\": \"notify\", \"task\": \"send-email\"}"
                .into(),
        ));
    }
    let (seq, answer) = accepted(
        state
            .bus
            .send(Command::AddTask { workflow_id, step })
            .await?,
    )?;
    let Answer::TaskAdded { task_id } = answer else {
        return Err(unexpected("AddTask", &answer));
    };
    state.caught_up(workflow_id, seq).await;
    Ok((
        StatusCode::CREATED,
        Json(TaskCreated { task_id: task_id.0 }),
    ))
}

/// Send a signal to a run. The JSON body is its payload (an empty body is `null`).
///
/// Signal names are letters, digits, `_`, `-` and `.`. The run keeps a signal until a
/// `signal` step of that name takes it, so it may arrive before the run gets there. The
/// payload becomes that step's output and `.signals.<name>` in later expressions.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/signals/{name}",
    tag = "signals",
    params(
        ("id" = String, Path, description = "Run id (UUID)"),
        ("name" = String, Path, description = "Signal name"),
    ),
    request_body(content = Option<Object>, description = "The payload: any JSON value; empty means null"),
    responses(
        (status = 202, description = "Delivered to the run", body = SignalSent),
        (status = 400, description = "Bad id, name or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn send_signal(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    OptionalJson(payload): OptionalJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let workflow_id = parse_workflow_id(&id)?;
    actions::send_signal(&state, workflow_id, name.clone(), payload).await?;
    let body = SignalSent {
        workflow_id: workflow_id.to_string(),
        signal: name,
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}
