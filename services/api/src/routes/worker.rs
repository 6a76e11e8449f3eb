//! The worker protocol: long-poll a queue, heartbeat, complete, fail.
//!
//! These are the hot path: they answer as soon as the engine has decided and never wait
//! for the read model.

use super::{AppState, accepted, parse_task_id};
use crate::dto::{Complete, Empty, Fail, Heartbeat, HeartbeatAck, Poll, Polled};
use crate::error::ApiError;
use crate::problem::{Json as JsonBody, Problem};
use axum::Json;
use axum::extract::{Path, State};
use distorch_domain::command::{Answer, Command};

use std::time::Duration;

const MAX_TASKS: u32 = 100;
const DEFAULT_WAIT_MS: u64 = 20_000;
const MAX_WAIT_MS: u64 = 60_000;

/// Queue names become topic names, so they are kept to a portable alphabet.
fn check_queue(queue: &str) -> Result<(), ApiError> {
    let ok = !queue.is_empty()
        && queue.len() <= 200
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "queue {queue:?} must be 1 to 200 characters of A-Z, a-z, 0-9, '-', '_' or '.'"
        )))
    }
}

/// A poll's queue and limits, checked: `(max_tasks, wait)`.
fn check_poll(queue: &str, req: &Poll) -> Result<(usize, Duration), ApiError> {
    check_queue(queue)?;
    if req.worker_id.trim().is_empty() {
        return Err(ApiError::BadRequest("`worker_id` must not be empty".into()));
    }
    let max = req.max_tasks.unwrap_or(1);
    if !(1..=MAX_TASKS).contains(&max) {
        return Err(ApiError::BadRequest(format!(
            "`max_tasks` is {max}; it must be from 1 to {MAX_TASKS}"
        )));
    }
    let wait_ms = req.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::BadRequest(format!(
            "`wait_ms` is {wait_ms}; it must be at most {MAX_WAIT_MS}"
        )));
    }
    Ok((max as usize, Duration::from_millis(wait_ms)))
}

/// Take up to `max_tasks` task attempts from a queue, waiting up to `wait_ms` for the
/// first one. Every returned attempt has been started for `worker_id`. With several API
/// replicas, every attempt of the queue can reach a worker whichever replica it polls.
#[utoipa::path(
    post,
    path = "/api/v1/queues/{queue}/poll",
    tag = "workers",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = Poll,
    responses(
        (status = 200, description = "Attempts to run (empty when the wait ended)", body = Polled),
        (status = 400, description = "Bad queue name or body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn poll(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    JsonBody(req): JsonBody<Poll>,
) -> Result<Json<Polled>, ApiError> {
    hand_out(&state, &queue, &req, true).await
}

/// Between API replicas: take attempts this replica holds for a worker polling another
/// replica. Like a poll, but only this replica's share of the queue and never passed on.
/// Not for workers: poll `/api/v1/queues/{queue}/poll`, which asks here when it needs to.
#[utoipa::path(
    post,
    path = "/internal/queues/{queue}/take",
    tag = "internal",
    params(("queue" = String, Path, description = "Queue name")),
    request_body = Poll,
    responses(
        (status = 200, description = "Attempts started for the worker (empty when this replica had none within the wait)", body = Polled),
        (status = 400, description = "Bad queue name or body", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn take(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    JsonBody(req): JsonBody<Poll>,
) -> Result<Json<Polled>, ApiError> {
    hand_out(&state, &queue, &req, false).await
}

/// A poll's answer: attempts of `queue` started for the worker; with `forward`, topped up
/// by the other replicas.
async fn hand_out(
    state: &AppState,
    queue: &str,
    req: &Poll,
    forward: bool,
) -> Result<Json<Polled>, ApiError> {
    let (max, wait) = check_poll(queue, req)?;
    let dispatcher = state.dispatchers.get(queue).await?;
    let tasks = dispatcher
        .poll(
            &state.bus,
            &state.metrics,
            state.replicas.as_ref(),
            forward,
            &req.worker_id,
            max,
            wait,
        )
        .await?;
    Ok(Json(Polled { tasks }))
}

/// Report an attempt's success.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/complete",
    tag = "workers",
    params(("task_id" = String, Path, description = "Task id")),
    request_body = Complete,
    responses(
        (status = 200, description = "Recorded", body = Empty),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale attempt (superseded, timed out or cancelled)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn complete_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Complete>,
) -> Result<Json<Empty>, ApiError> {
    let (task_id, _) = parse_task_id(&id)?;
    let command = Command::CompleteTask {
        task_id,
        attempt: req.attempt,
        output: req.output,
        metrics: req.metrics,
    };
    accepted(state.bus.send(command).await?)?;
    Ok(Json(Empty {}))
}

/// Report an attempt's failure; the step's retry policy decides what follows.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/fail",
    tag = "workers",
    params(("task_id" = String, Path, description = "Task id")),
    request_body = Fail,
    responses(
        (status = 200, description = "Recorded", body = Empty),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale attempt", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn fail_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Fail>,
) -> Result<Json<Empty>, ApiError> {
    let (task_id, _) = parse_task_id(&id)?;
    if req.error.kind.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`error.type` must not be empty".into(),
        ));
    }
    let command = Command::FailTask {
        task_id,
        attempt: req.attempt,
        error: req.error,
        metrics: req.metrics,
        retry_after_ms: req.retry_after_ms,
    };
    accepted(state.bus.send(command).await?)?;
    Ok(Json(Empty {}))
}

/// Report that an attempt is still running, optionally saving a checkpoint.
///
/// The attempt's heartbeat timeout, if the step has one, counts again from now. A
/// checkpoint is handed to the next attempt should this one fail.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{task_id}/heartbeat",
    tag = "workers",
    params(("task_id" = String, Path, description = "Task id")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Recorded; or, with `cancel_requested`, the attempt's work is no longer wanted (its run was cancelled, or its task): stop", body = HeartbeatAck),
        (status = 404, description = "Unknown task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale attempt (a later attempt took over, or it ended): stop working on it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    let (task_id, _) = parse_task_id(&id)?;
    let command = Command::Heartbeat {
        task_id,
        attempt: req.attempt,
        checkpoint: req.checkpoint,
    };
    let (_, answer) = accepted(state.bus.send(command).await?)?;
    Ok(Json(HeartbeatAck {
        cancel_requested: matches!(answer, Answer::CancelRequested { .. }),
    }))
}
