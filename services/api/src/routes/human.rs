//! Human tasks: the inbox, and claim, release, reassign and complete.
//!
//! Every verb says who does it: `user` in the body, else the `X-DisTorch-User` header.
//! Whether that person may do it (claimed by someone else, form not satisfied...) is the
//! engine's decision, and its rejection becomes the answer.

use super::tasks::task_verb;
use super::{AppState, parse_limit, parse_task_id};
use crate::dto::{ALL_TASK_STATUSES, Actor, CompleteHuman, Inbox, Reassign, TaskAction};
use crate::error::ApiError;
use crate::problem::{OptionalJson, Problem};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use distorch_domain::command::Command;
use distorch_domain::definition::Assignment;
use distorch_store::{HumanTaskFilter, InboxStatus};

/// Names the acting user when the body does not.
pub(crate) const USER_HEADER: &str = "x-distorch-user";

/// The acting user: the body's `user`, else the header; a blank one is an error.
fn who(body: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    let user = match body {
        Some(user) => user,
        None => match headers.get(USER_HEADER) {
            Some(v) => v
                .to_str()
                .map_err(|_| {
                    ApiError::BadRequest("the X-DisTorch-User header is not valid text".into())
                })?
                .to_owned(),
            None => {
                return Err(ApiError::BadRequest(
                    "say who acts: `user` in the body or an X-DisTorch-User header".into(),
                ));
            }
        },
    };
    if user.trim().is_empty() {
        return Err(ApiError::BadRequest("the user must not be empty".into()));
    }
    Ok(user)
}

/// `Some(value)` unless absent or empty.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InboxQuery {
    /// Only tasks assigned to this person.
    assignee: Option<String>,
    /// Only tasks offered to this group.
    group: Option<String>,
    /// `open` (scheduled or claimed), or one task status: `scheduled`, `running`,
    /// `completed`, `failed`, `skipped`, `cancelled`. Default: all.
    status: Option<String>,
    /// 1 to 1000; default 50.
    limit: Option<String>,
}

/// The human-task inbox, oldest first. Set conditions must all hold.
#[utoipa::path(
    get,
    path = "/api/v1/human-tasks",
    tag = "human-tasks",
    params(InboxQuery),
    responses(
        (status = 200, description = "Matching human tasks", body = Inbox),
        (status = 400, description = "Bad status or limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_human_tasks(
    State(state): State<AppState>,
    query: Result<Query<InboxQuery>, QueryRejection>,
) -> Result<Json<Inbox>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some("open") => Some(InboxStatus::Open),
        Some(raw) => Some(InboxStatus::Is(
            ALL_TASK_STATUSES
                .into_iter()
                .find(|s| s.as_str() == raw)
                .ok_or_else(|| {
                    let allowed: Vec<_> = ALL_TASK_STATUSES.iter().map(|s| s.as_str()).collect();
                    ApiError::BadRequest(format!(
                        "status {raw:?} is not one of: open, {}",
                        allowed.join(", ")
                    ))
                })?,
        )),
    };
    let filter = HumanTaskFilter {
        assignee: given(query.assignee),
        group: given(query.group),
        status,
    };
    let limit = parse_limit(query.limit.as_deref())?;
    let rows = state.store.human_tasks(&filter, limit).await?;
    Ok(Json(Inbox { items: rows }))
}

/// Claim a human task: it becomes `running` and only the claimant can complete or release
/// it. Claiming your own claim again changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/human-tasks/{task_id}/claim",
    tag = "human-tasks",
    params(
        ("task_id" = String, Path, description = "Task id"),
        ("X-DisTorch-User" = Option<String>, Header, description = "Who acts, when the body has no `user`"),
    ),
    request_body(content = Option<Actor>, description = "Optional when the header names the user"),
    responses(
        (status = 200, description = "Claimed", body = TaskAction),
        (status = 202, description = "Claimed; the read model has not caught up yet", body = TaskAction),
        (status = 400, description = "No user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown human task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Claimed by someone else, or finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn claim_human_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<Actor>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let user = who(req.user, &headers)?;
    let command = Command::ClaimHumanTask {
        task_id: task_id.clone(),
        user,
    };
    task_verb(&state, task_id, workflow_id, command).await
}

/// Release your claim: the task goes back to its inbox.
#[utoipa::path(
    post,
    path = "/api/v1/human-tasks/{task_id}/release",
    tag = "human-tasks",
    params(
        ("task_id" = String, Path, description = "Task id"),
        ("X-DisTorch-User" = Option<String>, Header, description = "Who acts, when the body has no `user`"),
    ),
    request_body(content = Option<Actor>, description = "Optional when the header names the user"),
    responses(
        (status = 200, description = "Released", body = TaskAction),
        (status = 202, description = "Released; the read model has not caught up yet", body = TaskAction),
        (status = 400, description = "No user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown human task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not claimed by this user, or finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn release_human_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<Actor>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let user = who(req.user, &headers)?;
    let command = Command::ReleaseHumanTask {
        task_id: task_id.clone(),
        user,
    };
    task_verb(&state, task_id, workflow_id, command).await
}

/// Give a human task to another person or group; any claim is dropped.
#[utoipa::path(
    post,
    path = "/api/v1/human-tasks/{task_id}/reassign",
    tag = "human-tasks",
    params(
        ("task_id" = String, Path, description = "Task id"),
        ("X-DisTorch-User" = Option<String>, Header, description = "Who acts, when the body has no `user`"),
    ),
    request_body = Reassign,
    responses(
        (status = 200, description = "Reassigned", body = TaskAction),
        (status = 202, description = "Reassigned; the read model has not caught up yet", body = TaskAction),
        (status = 400, description = "No new owner, or no user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown human task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The task has finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn reassign_human_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<Reassign>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let assign = Assignment {
        assignee: given(req.assignee),
        group: given(req.group),
    };
    if assign.assignee.is_none() && assign.group.is_none() {
        return Err(ApiError::BadRequest(
            "name the new owner: `assignee`, `group`, or both".into(),
        ));
    }
    let user = who(req.user, &headers)?;
    let command = Command::ReassignHumanTask {
        task_id: task_id.clone(),
        assign,
        user,
    };
    task_verb(&state, task_id, workflow_id, command).await
}

/// Complete a human task with the person's answer. The output must satisfy the step's
/// `form`; it becomes the step's output and the run goes on.
#[utoipa::path(
    post,
    path = "/api/v1/human-tasks/{task_id}/complete",
    tag = "human-tasks",
    params(
        ("task_id" = String, Path, description = "Task id"),
        ("X-DisTorch-User" = Option<String>, Header, description = "Who acts, when the body has no `user`"),
    ),
    request_body = CompleteHuman,
    responses(
        (status = 200, description = "Completed", body = TaskAction),
        (status = 202, description = "Completed; the read model has not caught up yet", body = TaskAction),
        (status = 400, description = "The output does not match the form (the detail names the field), or no user", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown human task", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Claimed by someone else, or finished", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn complete_human_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(req): OptionalJson<CompleteHuman>,
) -> Result<(StatusCode, Json<TaskAction>), ApiError> {
    let (task_id, workflow_id) = parse_task_id(&id)?;
    let user = who(req.user, &headers)?;
    let command = Command::CompleteHumanTask {
        task_id: task_id.clone(),
        output: req.output,
        user,
    };
    task_verb(&state, task_id, workflow_id, command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_user_before_the_header() {
        let mut headers = HeaderMap::new();
        assert!(
            who(None, &headers)
                .unwrap_err()
                .to_string()
                .contains("X-DisTorch-User")
        );
        headers.insert(USER_HEADER, "ann".parse().unwrap());
        assert_eq!(who(None, &headers).unwrap(), "ann");
        assert_eq!(who(Some("bob".into()), &headers).unwrap(), "bob");
        assert!(who(Some(" ".into()), &headers).is_err());
    }
}
