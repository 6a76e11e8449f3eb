//! SLA warnings and breaches across runs.

use super::{AppState, parse_limit};
use crate::dto::SlaBreaches;
use crate::error::ApiError;
use crate::problem::Problem;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SlaQuery {
    /// 1 to 1000; default 50.
    limit: Option<String>,
}

/// SLA warnings (`warn_at` passed) and breaches of runs and steps, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/sla/breaches",
    tag = "sla",
    params(SlaQuery),
    responses(
        (status = 200, description = "Warnings and breaches", body = SlaBreaches),
        (status = 400, description = "Bad limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sla_breaches(
    State(state): State<AppState>,
    query: Result<Query<SlaQuery>, QueryRejection>,
) -> Result<Json<SlaBreaches>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = parse_limit(query.limit.as_deref())?;
    let rows = state.store.sla_breaches(limit).await?;
    Ok(Json(SlaBreaches { items: rows }))
}
