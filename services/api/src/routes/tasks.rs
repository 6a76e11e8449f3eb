//! Tasks as operators see them: read, retry, skip, and the dead-letter queue.

use super::{AppState, parse_task_id};
use crate::actions;
use crate::dto::{DeadLetters, Skip, TaskAction};
use crate::error::ApiError;
use crate::problem::{OptionalJson, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use distorch_domain::command::Command;
use distorch_domain::view::TaskView;
use distorch_domain::{TaskId, WorkflowId};

/// A task with its latest attempt.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{task_id}",
    tag = "tasks",
    params(("task_id" = String, Path, description = "Task id (`<run uuid>.<n>`)")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let (task_id, _) = parse_task_id(&id)?;
    let view = state.store.task(&task_id).await?;
    let view = view.ok_or_else(|| ApiError::NotFound(format!("no task {task_id}")))?;
    Ok(Json(view))
}

/// Publishes an operator command about a task and answers with the task's status once
/// the read model reflects it (200), or 202 when it lags.
pub(super) async fn task_verb(
    state: &AppState,
    task_id: TaskId,
    workflow_id: WorkflowId,
    command: Command,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let applied = actions::task_verb(state, &task_id, workflow_id, command).await?;
    let code = if applied.caught_up {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = TaskAction {
        task_id: task_id.0,
        workflow_id: workflow_id.to_string(),
        status: applied.status,
    };
    Ok((code, Json(body)))
}

/// Run a task parked in the dead-letter queue again, with a fresh attempt budget.
///
/// A parked human task goes back to the inbox, unclaimed.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/retry",
    tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Retrying", body = TaskAction),
        (status = 202, description = "Retrying; the read model has not caught up yet", body = TaskAction),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task is not parked, or the run has ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn retry_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let command = Command::RetryTask {
        task_id: task_id.clone(),
    };
    task_verb(&state, task_id, workflow_id, command).await
}

/// Skip a parked or unfinished task: it counts as completed with the given output.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/skip",
    tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    request_body(content = Option<Skip>, description = "Optional; output defaults to null"),
    responses(
        (status = 200, description = "Skipped", body = TaskAction),
        (status = 202, description = "Skipped; the read model has not caught up yet", body = TaskAction),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task has finished and is not parked, or the run has ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn skip_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<Skip>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let command = Command::SkipTask {
        task_id: task_id.clone(),
        output: req.output,
    };
    task_verb(&state, task_id, workflow_id, command).await
}

/// Tasks parked in the dead-letter queue, waiting for an operator.
#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    tag = "tasks",
    responses((status = 200, description = "Parked tasks", body = DeadLetters))
)]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
) -> Result<Json<DeadLetters>, ApiError> {
    let items = state.store.dead_letters().await?;
    Ok(Json(DeadLetters { items }))
}
