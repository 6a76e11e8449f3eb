//! What a client command can end with, the exit code of each, and the one-line message a
//! person reads on stderr. Pure: no I/O.

use serde_json::Value;
use std::fmt;

/// Success.
pub const OK: u8 = 0;
/// `--wait` or `wait` saw the run end `failed`, `cancelled` or `compensated`.
pub const RUN_NOT_COMPLETED: u8 = 1;
/// The request is wrong: a usage error found locally (as clap's own, which exit 2 too) or a
/// 4xx the API answered. Repeating it unchanged will not help.
pub const USAGE: u8 = 2;
/// The server could not be reached, timed out, failed (5xx), or answered something that is
/// no DisTorch API answer. Repeating it later may help.
pub const SERVER: u8 = 3;
/// `--timeout` of `--wait` or `wait` expired before the run ended.
pub const WAIT_TIMED_OUT: u8 = 4;

/// Why a client command did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Bad arguments or local files, found before anything was sent.
    Usage(String),
    /// The API answered with an error status.
    Api(ApiError),
    /// No answer: connection refused, DNS, timeout, a broken response.
    Network { url: String, cause: String },
    /// The run had not ended when `--timeout` expired.
    WaitTimedOut {
        workflow_id: String,
        status: String,
        after: String,
    },
}

/// An error response, read from its `application/problem+json` body when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// The problem's `title`, or the status's canonical reason.
    pub title: String,
    /// The problem's `detail`, or the body's text when it is no problem.
    pub detail: String,
    /// A start answered 503 names the run it will create: retry with it.
    pub workflow_id: Option<String>,
}

impl ApiError {
    /// Reads an error response: `problem+json` fields when present, else the raw text.
    pub fn from_response(status: u16, reason: Option<&str>, body: &str) -> Self {
        let problem: Option<Value> = serde_json::from_str(body).ok();
        let field = |name: &str| {
            problem
                .as_ref()
                .and_then(|p| p.get(name))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let title = field("title")
            .or_else(|| reason.map(str::to_owned))
            .unwrap_or_else(|| "Error".into());
        let detail = field("detail").unwrap_or_else(|| shorten(body.trim(), 300));
        Self {
            status,
            title,
            detail,
            workflow_id: field("workflow_id"),
        }
    }
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::Api(e) if (400..500).contains(&e.status) => USAGE,
            Failure::Api(_) | Failure::Network { .. } => SERVER,
            Failure::WaitTimedOut { .. } => WAIT_TIMED_OUT,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(msg) => write!(f, "{msg}"),
            Failure::Api(e) => {
                write!(f, "{} ({})", e.title, e.status)?;
                if !e.detail.is_empty() {
                    write!(f, ": {}", e.detail)?;
                }
                if let (503, Some(id)) = (e.status, &e.workflow_id) {
                    write!(
                        f,
                        "\nthe start is durable but unconfirmed: repeat it with --workflow-id {id} \
                         (that never starts a second run)"
                    )?;
                }
                Ok(())
            }
            Failure::Network { url, cause } => write!(
                f,
                "cannot reach the DisTorch API at {url}: {cause}\n\
                 is the server running? Point the CLI at it with --url or DISTORCH_URL"
            ),
            Failure::WaitTimedOut {
                workflow_id,
                status,
                after,
            } => write!(
                f,
                "run {workflow_id} is still {status} after {after}; it goes on: wait again with \
                 `distorch workflow wait {workflow_id}`"
            ),
        }
    }
}

/// Exit code of `--wait` / `wait` for the run's final status.
pub fn exit_for_status(status: &str) -> u8 {
    match status {
        "completed" => OK,
        _ => RUN_NOT_COMPLETED,
    }
}

/// Run statuses after which nothing changes any more.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "compensated" | "cancelled")
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, body: &str) -> Failure {
        Failure::Api(ApiError::from_response(status, Some("Reason"), body))
    }

    #[test]
    fn exit_codes_separate_bad_requests_from_server_trouble() {
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        for status in [400, 404, 409, 413, 415] {
            assert_eq!(api(status, "").exit_code(), 2, "{status}");
        }
        for status in [500, 502, 503] {
            assert_eq!(api(status, "").exit_code(), 3, "{status}");
        }
        let down = Failure::Network {
            url: "http://x".into(),
            cause: "refused".into(),
        };
        assert_eq!(down.exit_code(), 3);
        let slow = Failure::WaitTimedOut {
            workflow_id: "w".into(),
            status: "running".into(),
            after: "1s".into(),
        };
        assert_eq!(slow.exit_code(), 4);
    }

    #[test]
    fn run_statuses_map_to_0_or_1_and_only_ended_ones_are_terminal() {
        assert_eq!(exit_for_status("completed"), 0);
        for s in ["failed", "cancelled", "compensated"] {
            assert_eq!(exit_for_status(s), 1, "{s}");
            assert!(is_terminal(s));
        }
        assert!(is_terminal("completed"));
        for s in ["running", "paused", "parked", "compensating"] {
            assert!(!is_terminal(s), "{s}");
        }
    }

    #[test]
    fn a_problem_is_shown_by_title_status_and_detail() {
        let body = r#"{"type":"urn:distorch:problem:bad-request","title":"Bad Request","status":400,"detail":"steps[0].wait: invalid duration"}"#;
        let f = api(400, body);
        assert_eq!(
            f.to_string(),
            "Bad Request (400): steps[0].wait: invalid duration"
        );
    }

    #[test]
    fn an_absent_or_null_problem_field_falls_back() {
        let f = api(404, r#"{"title":null,"status":404,"detail":"no run"}"#);
        assert_eq!(f.to_string(), "Reason (404): no run");
        let f = api(502, "<html>bad gateway</html>");
        assert_eq!(f.to_string(), "Reason (502): <html>bad gateway</html>");
        let f = Failure::Api(ApiError::from_response(500, None, ""));
        assert_eq!(f.to_string(), "Error (500)");
    }

    #[test]
    fn an_unconfirmed_start_says_how_to_retry() {
        let body = r#"{"title":"Service Unavailable","status":503,"detail":"not confirmed","workflow_id":"0190"}"#;
        let text = api(503, body).to_string();
        assert!(text.contains("--workflow-id 0190"), "{text}");
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "ab…");
        assert_eq!(shorten("ééééé", 4), "ééé…");
    }
}
