//! A run's execution path: which steps ran, in what order, with what outcome.

use super::{AppState, parse_workflow_id};
use crate::actions;
use crate::dto::Failure;
use crate::error::ApiError;
use crate::problem::Problem;
use axum::Json;
use axum::extract::{Path, State};
use distorch_domain::path::{Branch, ExecutionPath, PathEntry};
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/workflows/{id}/path` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathBody {
    pub workflow_id: String,
    /// In the order the steps began; compensations where they began.
    pub entries: Vec<PathStep>,
}

/// One step instance on a run's path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathStep {
    /// The step id, prefixed by `<foreach id>[<i>].` per enclosing foreach iteration.
    pub step_key: String,
    pub step_id: String,
    /// Key of the enclosing container step (switch, parallel, foreach), if any.
    pub parent: Option<String>,
    /// `task`, `http`, `human`, `switch`, `parallel`, `foreach`, `wait`, `signal`, `child`
    /// or `compensation` (the undo task of the step `step_key`).
    pub kind: String,
    /// `running`, `completed`, `failed`, `parked`, `skipped`, `compensated` or `cancelled`.
    pub outcome: String,
    /// For `skipped`: `when` (its condition was false), `branch_not_taken` or `operator`.
    pub skip_reason: Option<String>,
    /// Sequence number of the event that began it.
    pub seq: u64,
    /// RFC 3339; `null` for a step that never began.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Attempts made by its task (0 for steps without one).
    pub attempts: u32,
    pub task_id: Option<String>,
    /// For a `switch`: `cases[<i>]` or `default`.
    pub branch: Option<String>,
    /// For an `http` step whose circuit breaker was open: the fallback run instead.
    pub fallback: Option<String>,
    /// For a child-run step: the child's run id.
    pub child_workflow_id: Option<String>,
    pub error: Option<Failure>,
}

/// How a switch's branch is written: like its place in the definition.
pub(crate) fn branch_name(branch: Branch) -> String {
    match branch {
        Branch::Case(i) => format!("cases[{i}]"),
        Branch::Default => "default".into(),
    }
}

impl From<PathEntry> for PathStep {
    fn from(entry: PathEntry) -> Self {
        let PathEntry {
            step_key,
            step_id,
            parent,
            kind,
            outcome,
            skip_reason,
            seq,
            started_at,
            finished_at,
            attempts,
            task_id,
            branch,
            fallback,
            child_workflow_id,
            error,
        } = entry;
        Self {
            step_key,
            step_id,
            parent,
            kind: kind.as_str().into(),
            outcome: outcome.as_str().into(),
            skip_reason: skip_reason.map(|r| r.as_str().into()),
            seq,
            started_at,
            finished_at,
            attempts,
            task_id: task_id.map(|t| t.0),
            branch: branch.map(branch_name),
            fallback,
            child_workflow_id: child_workflow_id.map(|c| c.to_string()),
            error: error.map(Into::into),
        }
    }
}

/// The run's execution path: every step that began, was skipped or was compensated, in
/// order, with its outcome, times and attempts; a `switch` also lists the steps of the
/// branches it did not take.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/path",
    tag = "workflows",
    params(("id" = String, Path, description = "Run id (UUID)")),
    responses(
        (status = 200, description = "The run's path", body = PathBody),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn workflow_path(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PathBody>, ApiError> {
    let id = parse_workflow_id(&id)?;
    let ExecutionPath { entries } = actions::execution_path(&state, id).await?;
    Ok(Json(PathBody {
        workflow_id: id.to_string(),
        entries: entries.into_iter().map(PathStep::from).collect(),
    }))
}
