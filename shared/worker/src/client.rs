//! A thin typed client for DisTorch's REST API: the worker protocol plus the few calls a
//! driver needs (register a definition, start a run, read a run).
//!
//! Every method is one HTTP request: no retries here. Callers decide what is safe to retry
//! using [`Error::is_retryable`] and [`Error::is_conflict`]; the [`Worker`](crate::Worker)
//! does so for reports.

use crate::Error;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::time::Duration;

/// How long a non-polling request may take before it counts as a transport failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a long-poll gets beyond its `wait_ms`, so a slow-but-alive server is not
/// mistaken for a dead one.
const POLL_GRACE: Duration = Duration::from_secs(10);

/// A client for one DisTorch server. Cheap to clone: clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port` without a trailing slash.
    base: String,
}

/// One task attempt handed to a worker by a poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id (`<workflow id>.<n>`), the same for all its attempts; reports address it.
    pub task_id: String,
    /// The run the task belongs to.
    pub workflow_id: String,
    /// The `id` of the definition step that created the task.
    pub step_id: String,
    /// Task type; selects the handler.
    pub task: String,
    /// 1-based; every report must echo it so the server can reject stale attempts.
    pub attempt: u32,
    /// The step's input, as the definition computed it for this task.
    pub input: Value,
    /// The last checkpoint a previous attempt heartbeated, to resume from.
    #[serde(default)]
    pub checkpoint: Option<Value>,
    /// The server times the attempt out when no heartbeat arrives for this long.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// Resource usage of one attempt, as sent with its report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// CPU time (user + system) the process spent during the attempt, in milliseconds;
    /// process-wide, so it includes concurrent attempts (see the crate docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<f64>,
    /// The process's peak resident memory during the attempt, in bytes; process-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

/// The `error` member of a fail report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Machine-readable failure type (sent as `type`); a retry policy's `non_retryable`
    /// list matches on it.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable description, shown in the run's history.
    pub message: String,
    /// `false` fails the step without further attempts, whatever the retry policy says.
    pub retryable: bool,
}

/// Run status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// Steps are being scheduled and executed.
    Running,
    /// An operator paused the run; nothing new is scheduled until it is resumed.
    Paused,
    /// A task exhausted its attempts under the `park` policy (or a compensation kept
    /// failing) and waits in the dead-letter queue for an operator to retry or skip it.
    Parked,
    /// A step failed under the `compensate` policy; the compensations of completed steps are
    /// running in reverse order.
    Compensating,
    /// Terminal: every step finished; `output` holds the run's result.
    Completed,
    /// Terminal: the run failed without compensating (e.g. a step ran out of attempts under
    /// the `fail` policy).
    Failed,
    /// Terminal: the run failed and its compensations all ran.
    Compensated,
    /// Terminal: the run was cancelled (after compensating, when the cancel asked for it).
    Cancelled,
}

impl WorkflowStatus {
    /// A run in a terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Compensated | Self::Cancelled
        )
    }
}

/// `201` answer to a definition registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DefinitionRef {
    /// The definition's name, as given in the document.
    pub name: String,
    /// The version the server stored it as.
    pub version: u32,
}

/// Body of `POST /api/v1/workflows`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartWorkflow {
    /// Name of the registered definition to run.
    pub definition: String,
    /// `None` starts the latest version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The run's input, checked against the definition's input schema when it has one.
    pub input: Value,
    /// Starting twice with the same key returns the first run instead of a second one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Answer to a start: `201` for a new run, `200` for the run an idempotency key already
/// started.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StartedWorkflow {
    /// The id of the run (the existing one when the idempotency key was already used).
    pub workflow_id: String,
    /// `None` when the server's read model has not caught up with the start yet; the run
    /// exists, but `GET /workflows/{id}` may briefly answer `404`.
    #[serde(default)]
    pub status: Option<WorkflowStatus>,
}

/// The server's answer to a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct HeartbeatAck {
    /// Someone asked to cancel the attempt's run or task: the work should stop.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// A run as `GET /api/v1/workflows/{id}` shows it. Only the members every client needs are
/// typed; the rest of the view is kept in `extra` so this SDK need not track the view's
/// evolution.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Workflow {
    /// The run's id.
    pub workflow_id: String,
    /// Its status as of the server's read model.
    pub status: WorkflowStatus,
    /// The run's result, set once it has completed.
    #[serde(default)]
    pub output: Option<Value>,
    /// Every other member of the view, untyped.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Serialize)]
struct PollRequest<'a> {
    worker_id: &'a str,
    max_tasks: u32,
    wait_ms: u64,
}

#[derive(Deserialize)]
struct PollResponse {
    tasks: Vec<Task>,
}

#[derive(Serialize)]
struct CompleteRequest<'a> {
    attempt: u32,
    output: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
}

#[derive(Serialize)]
struct FailRequest<'a> {
    attempt: u32,
    error: &'a ErrorReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Metrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct HeartbeatRequest<'a> {
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a Value>,
}

#[derive(Deserialize)]
struct Problem {
    detail: Option<String>,
    title: Option<String>,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Workers hold few, busy connections; keeping them warm avoids a handshake per
            // report under load.
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Self::with_http(base_url, http)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest` client (proxies, headers).
    pub fn with_http(base_url: impl Into<String>, http: reqwest::Client) -> Result<Self, Error> {
        let base = base_url.into().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "base url `{base}` must start with http:// or https://"
            )));
        }
        Ok(Self { http, base })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Registers a definition given as a JSON document.
    pub async fn register_definition(&self, definition: &Value) -> Result<DefinitionRef, Error> {
        let url = format!("{}/api/v1/definitions", self.base);
        let req = self.http.post(&url).json(definition);
        self.send_json("POST", url, req, REQUEST_TIMEOUT).await
    }

    /// Registers a definition given as YAML text, sent as is.
    pub async fn register_definition_yaml(&self, yaml: &str) -> Result<DefinitionRef, Error> {
        let url = format!("{}/api/v1/definitions", self.base);
        let req = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned());
        self.send_json("POST", url, req, REQUEST_TIMEOUT).await
    }

    /// Starts a run.
    pub async fn start_workflow(&self, start: &StartWorkflow) -> Result<StartedWorkflow, Error> {
        let url = format!("{}/api/v1/workflows", self.base);
        let req = self.http.post(&url).json(start);
        self.send_json("POST", url, req, REQUEST_TIMEOUT).await
    }

    /// Reads a run's current view.
    pub async fn get_workflow(&self, workflow_id: &str) -> Result<Workflow, Error> {
        let url = format!("{}/api/v1/workflows/{}", self.base, segment(workflow_id));
        let req = self.http.get(&url);
        self.send_json("GET", url, req, REQUEST_TIMEOUT).await
    }

    /// Like [`Client::get_workflow`], but when the run has not finished the server waits up
    /// to `wait` (at most 60 s) for it to finish before answering.
    pub async fn wait_workflow(
        &self,
        workflow_id: &str,
        wait: Duration,
    ) -> Result<Workflow, Error> {
        let url = format!(
            "{}/api/v1/workflows/{}?wait_ms={}",
            self.base,
            segment(workflow_id),
            wait.as_millis()
        );
        let req = self.http.get(&url);
        self.send_json("GET", url, req, REQUEST_TIMEOUT + wait)
            .await
    }

    /// Long-polls `queue` for up to `max_tasks` attempts, waiting at most `wait` for the first
    /// one. An empty list means the wait ended with no work.
    pub async fn poll(
        &self,
        queue: &str,
        worker_id: &str,
        max_tasks: u32,
        wait: Duration,
    ) -> Result<Vec<Task>, Error> {
        let url = format!("{}/api/v1/queues/{}/poll", self.base, segment(queue));
        let body = PollRequest {
            worker_id,
            max_tasks,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let req = self.http.post(&url).json(&body);
        let resp: PollResponse = self.send_json("POST", url, req, wait + POLL_GRACE).await?;
        Ok(resp.tasks)
    }

    /// Reports an attempt's success. `409` ([`Error::is_conflict`]) means it was superseded.
    pub async fn complete(
        &self,
        task_id: &str,
        attempt: u32,
        output: &Value,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        let body = CompleteRequest {
            attempt,
            output,
            metrics,
        };
        self.task_call(task_id, "complete", &body).await
    }

    /// Reports an attempt's failure; the next attempt, if the retry policy allows one, waits
    /// at least `retry_after`. `409` ([`Error::is_conflict`]) means it was superseded.
    pub async fn fail(
        &self,
        task_id: &str,
        attempt: u32,
        error: &ErrorReport,
        retry_after: Option<Duration>,
        metrics: Option<Metrics>,
    ) -> Result<(), Error> {
        let body = FailRequest {
            attempt,
            error,
            metrics,
            retry_after_ms: retry_after.map(crate::task::retry_after_ms),
        };
        self.task_call(task_id, "fail", &body).await
    }

    /// Extends the attempt's heartbeat lease, optionally saving a checkpoint a later attempt
    /// resumes from. `409` ([`Error::is_conflict`]) means the attempt was superseded.
    pub async fn heartbeat(
        &self,
        task_id: &str,
        attempt: u32,
        checkpoint: Option<&Value>,
    ) -> Result<HeartbeatAck, Error> {
        let body = HeartbeatRequest {
            attempt,
            checkpoint,
        };
        let url = format!("{}/api/v1/tasks/{}/heartbeat", self.base, segment(task_id));
        let req = self.http.post(&url).json(&body);
        let resp = self.send("POST", url, req, REQUEST_TIMEOUT).await?;
        // The lease was extended whatever the body says; an ack we cannot read is treated
        // as "carry on" rather than failing a heartbeat that succeeded.
        let bytes = resp.bytes().await.unwrap_or_default();
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    async fn task_call(
        &self,
        task_id: &str,
        action: &str,
        body: &impl Serialize,
    ) -> Result<(), Error> {
        let url = format!("{}/api/v1/tasks/{}/{action}", self.base, segment(task_id));
        let req = self.http.post(&url).json(body);
        // The body of a successful report carries nothing the worker needs.
        self.send("POST", url, req, REQUEST_TIMEOUT).await.map(drop)
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: String,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, Error> {
        let resp = self.send(method, url.clone(), req, timeout).await?;
        let bytes = resp.bytes().await.map_err(|source| Error::Transport {
            url: url.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url,
            message: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: &'static str,
        url: String,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, Error> {
        let resp = match req.timeout(timeout).send().await {
            Ok(resp) => resp,
            Err(source) => return Err(Error::Transport { url, source }),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // A failed body read only loses the detail; the status is what callers act on.
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::Status {
            method,
            url,
            status: status.as_u16(),
            detail: problem_detail(&body),
        })
    }
}

/// The human-readable part of an error body: problem+json `detail` (or `title`), else the
/// body text itself when it is short enough to be a message rather than a page.
fn problem_detail(body: &[u8]) -> Option<String> {
    if let Ok(p) = serde_json::from_slice::<Problem>(body)
        && let Some(d) = p.detail.or(p.title)
    {
        return Some(d);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty() && text.len() <= 512).then(|| text.to_string())
}

/// Percent-encodes one path segment, so ids and queue names containing `/`, `?` or spaces
/// address the intended resource.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("orders-1.v2_x~"), "orders-1.v2_x~");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn problem_detail_prefers_detail_then_title_then_short_text() {
        assert_eq!(
            problem_detail(br#"{"type":"about:blank","title":"Conflict","detail":"superseded"}"#),
            Some("superseded".into())
        );
        assert_eq!(
            problem_detail(br#"{"title":"Conflict"}"#),
            Some("Conflict".into())
        );
        assert_eq!(
            problem_detail(b"  bad gateway \n"),
            Some("bad gateway".into())
        );
        assert_eq!(problem_detail(b""), None);
        assert_eq!(problem_detail(&[b'x'; 2000]), None);
    }

    #[test]
    fn poll_response_accepts_null_checkpoint_and_timeout() {
        let body = json!({"tasks": [{
            "task_id": "t1", "workflow_id": "w1", "step_id": "s1", "task": "noop",
            "attempt": 2, "input": {"a": 1}, "checkpoint": null, "heartbeat_timeout_ms": null
        }]});
        let resp: PollResponse = serde_json::from_value(body).unwrap();
        assert_eq!(resp.tasks[0].attempt, 2);
        assert_eq!(resp.tasks[0].checkpoint, None);
        assert_eq!(resp.tasks[0].heartbeat_timeout_ms, None);
    }

    #[test]
    fn fail_body_names_the_error_kind_type_and_omits_absent_metrics() {
        let error = ErrorReport {
            kind: "panic".into(),
            message: "boom".into(),
            retryable: true,
        };
        let body = FailRequest {
            attempt: 1,
            error: &error,
            metrics: None,
            retry_after_ms: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"attempt": 1, "error": {"type": "panic", "message": "boom", "retryable": true}})
        );
        let delayed = FailRequest {
            retry_after_ms: Some(crate::task::retry_after_ms(Duration::from_micros(1500))),
            ..body
        };
        assert_eq!(
            serde_json::to_value(&delayed).unwrap()["retry_after_ms"],
            json!(2),
            "sent beside `error`, rounded up to whole ms"
        );
        let m = Metrics {
            cpu_ms: Some(1.5),
            peak_memory_bytes: None,
        };
        assert_eq!(serde_json::to_value(m).unwrap(), json!({"cpu_ms": 1.5}));
    }

    #[test]
    fn start_answer_tolerates_a_lagging_read_model() {
        let s: StartedWorkflow =
            serde_json::from_value(json!({"workflow_id": "w", "status": null})).unwrap();
        assert_eq!(s.status, None);
        let s: StartedWorkflow =
            serde_json::from_value(json!({"workflow_id": "w", "status": "running"})).unwrap();
        assert_eq!(s.status, Some(WorkflowStatus::Running));
    }

    #[test]
    fn heartbeat_ack_defaults_to_carry_on() {
        let ack: HeartbeatAck = serde_json::from_value(json!({})).unwrap();
        assert!(!ack.cancel_requested);
        let ack: HeartbeatAck = serde_json::from_value(json!({"cancel_requested": true})).unwrap();
        assert!(ack.cancel_requested);
    }

    #[test]
    fn workflow_view_keeps_unknown_members() {
        let w: Workflow = serde_json::from_value(json!({
            "workflow_id": "w", "status": "compensating", "output": null, "definition": "d"
        }))
        .unwrap();
        assert_eq!(w.status, WorkflowStatus::Compensating);
        assert!(!w.status.is_terminal());
        assert_eq!(w.extra["definition"], "d");
    }
}
