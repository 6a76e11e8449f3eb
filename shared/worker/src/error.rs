//! The crate's one error type.

use std::time::Duration;

/// What went wrong talking to the server (or the log) or configuring a worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never produced an HTTP response (connection refused, reset, timeout).
    /// Always worth retrying: the server may be restarting.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What `reqwest` reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-success status. `detail` is the `detail` member of an
    /// `application/problem+json` body when there was one.
    #[error("{method} {url} returned {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The request's HTTP method (`GET`, `POST`).
        method: &'static str,
        /// The URL requested.
        url: String,
        /// The HTTP status code answered.
        status: u16,
        /// The body's problem `detail` (else its `title`, else a short plain-text body).
        detail: Option<String>,
    },
    /// A success response whose body did not have the documented shape: the SDK and the
    /// server disagree on the protocol, retrying will not help.
    #[error("unexpected response body from {url}: {message}")]
    Decode {
        /// The URL requested.
        url: String,
        /// Why the body could not be decoded.
        message: String,
    },
    /// A builder was given an unusable value.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// The event log failed (a `LogSource` append, read or consumer group):
    /// `retryable` when the log says trying again later may succeed.
    #[error("event log: {message}")]
    Log {
        /// What the log reported.
        message: String,
        /// Whether the same call may succeed later.
        retryable: bool,
    },
    /// The engine refused a command a `LogSource` sent. `status` is what the HTTP API
    /// answers for the same refusal: 400 invalid, 404 unknown, 409 stale attempt.
    #[error("the engine rejected {command} ({status}): {detail}")]
    Rejected {
        /// The refused command's name (e.g. `complete_task`).
        command: &'static str,
        /// The HTTP status the API answers for this refusal.
        status: u16,
        /// The engine's reason.
        detail: String,
    },
    /// No reply to a command sent over the log within `waited`. The command is durable and
    /// may still be applied.
    #[error("no reply to {command} within {waited:?}; it is durable and may still be applied")]
    Unanswered {
        /// The command's name (e.g. `complete_task`).
        command: &'static str,
        /// How long the source waited for the reply (its `reply_timeout`).
        waited: Duration,
    },
}

impl Error {
    /// The HTTP status, when the server answered (for an engine rejection over the log,
    /// the status the HTTP API would have answered).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `409 Conflict`: for task calls, the attempt is superseded (timed out, cancelled or
    /// already completed) and the worker must drop it.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Whether sending the same request again may succeed: transport failures, 5xx, 408 and
    /// 429, retryable log failures and missing replies. Other 4xx and engine rejections mean
    /// the request itself is wrong or stale.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Unanswered { .. } => true,
            Error::Status { status, .. } | Error::Rejected { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            Error::Log { retryable, .. } => *retryable,
            Error::Decode { .. } | Error::Config(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        Error::Status {
            method: "POST",
            url: "u".into(),
            status: code,
            detail: None,
        }
    }

    #[test]
    fn only_server_side_and_throttling_statuses_are_retryable() {
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 404, 409, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        assert!(status(409).is_conflict());
    }

    #[test]
    fn log_errors_say_whether_to_retry() {
        let rejected = Error::Rejected {
            command: "complete_task",
            status: 409,
            detail: "attempt 1 is superseded".into(),
        };
        assert!(rejected.is_conflict());
        assert!(!rejected.is_retryable());
        assert_eq!(
            rejected.to_string(),
            "the engine rejected complete_task (409): attempt 1 is superseded"
        );
        let unanswered = Error::Unanswered {
            command: "heartbeat",
            waited: Duration::from_secs(10),
        };
        assert!(unanswered.is_retryable());
        assert_eq!(unanswered.status(), None);
        let log = |retryable| Error::Log {
            message: "broker down".into(),
            retryable,
        };
        assert!(log(true).is_retryable());
        assert!(!log(false).is_retryable());
    }

    #[test]
    fn display_includes_problem_detail() {
        let e = Error::Status {
            method: "POST",
            url: "http://h/api/v1/workflows".into(),
            status: 404,
            detail: Some("definition `x` not found".into()),
        };
        assert_eq!(
            e.to_string(),
            "POST http://h/api/v1/workflows returned 404: definition `x` not found"
        );
    }
}
