//! The crate's error type and its mapping onto HTTP problems.

use crate::problem::Problem;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use distorch_domain::command::Rejection;
use distorch_eventlog::LogError;
use distorch_store::StoreError;

/// Why a request failed. [`ApiError::status`] gives its HTTP status; as a response it is a
/// [`Problem`] whose `detail` is the message, and in GraphQL an error with that status's
/// `extensions.code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request (or the command it became) is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 404: unknown run, task, definition or route.
    #[error("{0}")]
    NotFound(String),
    /// 409: the engine refused the command in the run's current state (stale attempt,
    /// verb not allowed in this status).
    #[error("{0}")]
    Conflict(String),
    /// 415: the body's `Content-Type` is not one the route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413: the body is larger than `api.max_body_bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 503: the command was appended (so it is durable) but no reply came in time; the
    /// value is the timeout in seconds.
    #[error(
        "the engine did not answer within {0} s (an engine may be failing over); the command is durable and will still be applied"
    )]
    Timeout(f64),
    /// 503: a start that was not confirmed (no answer in time, an engine failing over, or a
    /// failed append) may still be applied under this id; a retry naming it starts nothing
    /// more. The problem (or GraphQL error) carries the id for the retry.
    #[error(
        "{reason}. Retry with \"workflow_id\": \"{workflow_id}\" (or the same \
         idempotency_key): the retry returns that run if it started and never starts a second one"
    )]
    StartPending {
        /// The id the start was published with.
        workflow_id: distorch_domain::WorkflowId,
        /// What went wrong, without the retry advice the message adds.
        reason: String,
    },
    /// 503: the service cannot serve the request right now (a command could not be appended,
    /// the reply reader stopped, analytics are not configured, an engine of another version).
    #[error("{0}")]
    Unavailable(String),
    /// The event log failed: 503 when the error is retryable, else 500.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// The read store failed: 400 for a bad cursor, 503 when retryable, else 500.
    #[error("read store: {0}")]
    Store(#[from] StoreError),
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Invalid(detail) => ApiError::BadRequest(detail),
            Rejection::NotFound(detail) => ApiError::NotFound(detail),
            Rejection::Conflict(detail) => ApiError::Conflict(detail),
        }
    }
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) | ApiError::StartPending { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Log(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::BadCursor(_)) => StatusCode::BAD_REQUEST,
            ApiError::Store(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Log(_) | ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut problem = Problem::new(status, self.to_string());
        if let ApiError::StartPending { workflow_id, .. } = &self {
            problem.workflow_id = Some(workflow_id.to_string());
        }
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_their_statuses() {
        let cases = [
            (Rejection::Invalid("x".into()), 400),
            (Rejection::NotFound("x".into()), 404),
            (Rejection::Conflict("x".into()), 409),
        ];
        for (rejection, status) in cases {
            assert_eq!(ApiError::from(rejection).status().as_u16(), status);
        }
        assert_eq!(
            ApiError::Timeout(5.0).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::Store(StoreError::BadCursor("?".into())).status(),
            StatusCode::BAD_REQUEST
        );
        assert!(ApiError::Timeout(5.0).to_string().contains("durable"));
    }
}
