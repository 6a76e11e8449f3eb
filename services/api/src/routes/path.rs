//! A run's execution path: which steps ran, in what order, with what outcome.

use super::{AppState, parse_workflow_id};
use crate::actions;
use crate::error::ApiError;
use crate::problem::Problem;
use axum::Json;
use axum::extract::{Path, State};
use distorch_domain::path::{ExecutionPath, PathEntry};
use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/workflows/{id}/path` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PathBody {
    /// Run id (UUID).
    pub workflow_id: String,
    /// In the order the steps began; compensations where they began.
    pub entries: Vec<PathEntry>,
}

/// One step instance on a run's path.
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
        entries,
    }))
}
