//! Health, readiness, metrics, and the problem+json fallbacks.

use super::AppState;
use crate::dto::Health;
use crate::error::ApiError;
use crate::problem::Problem;
use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: commands can be sent and their replies are being read.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.bus.is_ready() {
        Ok(Json(Health {
            status: "ready".into(),
        }))
    } else {
        Err(ApiError::Unavailable(
            "the command reply reader is not running".into(),
        ))
    }
}

/// Prometheus metrics of the whole process (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Queue depth is read from the log on scrape rather than tracked, so it stays right
    // across restarts and other API instances.
    for dispatcher in state.dispatchers.started() {
        match dispatcher.depth().await {
            Ok(depth) => state.metrics.set_queue_depth(dispatcher.queue(), depth),
            Err(e) => tracing::warn!(queue = dispatcher.queue(), error = %e, "queue depth"),
        }
    }
    let text = crate::metrics::render(&state.registry)
        .map_err(|e| ApiError::Unavailable(format!("could not encode metrics: {e}")))?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

pub(crate) async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not support {method}", uri.path()),
    )
}
