//! End to end: `http` steps called by the HTTP executor of `distorch standalone` against a
//! real local service that the test can make fail (503), slow (past the timeout) or refuse
//! (4xx), and recover on command. Retries, `Retry-After`, the circuit breaker (deferral
//! without using attempts, `GET /api/v1/breakers`) and fallbacks.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use common::{Api, Server, tempdir};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OK: u8 = 0;
/// 503 with `Retry-After: 1`.
const UNAVAILABLE: u8 = 1;
/// Sleeps past any timeout the tests set.
const SLOW: u8 = 2;
/// 503 without `Retry-After`.
const DOWN: u8 = 3;

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    idempotency_key: Option<String>,
    body: Value,
}

/// The service under the test's control.
#[derive(Clone, Default)]
struct Service {
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Service {
    async fn start() -> (Service, String) {
        let svc = Service::default();
        let app = Router::new()
            .route("/charges/{id}", post(charge))
            .route("/status/{code}", any(status))
            .route("/flaky", any(flaky))
            .with_state(svc.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (svc, addr.to_string())
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn calls(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    fn record(&self, path: String, headers: &HeaderMap, body: &Bytes) {
        let idempotency_key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.seen.lock().unwrap().push(Seen {
            path,
            idempotency_key,
            body,
        });
    }

    /// What the current mode makes of a request, if it is not a success.
    async fn trouble(&self) -> Option<Response> {
        match self.mode.load(Ordering::SeqCst) {
            UNAVAILABLE => Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "try later",
                )
                    .into_response(),
            ),
            DOWN => Some((StatusCode::SERVICE_UNAVAILABLE, "down").into_response()),
            SLOW => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some(StatusCode::OK.into_response())
            }
            _ => None,
        }
    }
}

async fn charge(
    State(svc): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    svc.record(format!("/charges/{id}"), &headers, &body);
    if let Some(r) = svc.trouble().await {
        return r;
    }
    let amount = serde_json::from_slice::<Value>(&body).unwrap_or_default()["amount"].clone();
    (
        StatusCode::CREATED,
        [("x-charge", "yes")],
        axum::Json(json!({"charge": id, "amount": amount})),
    )
        .into_response()
}

async fn status(
    State(svc): State<Service>,
    Path(code): Path<u16>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    svc.record(format!("/status/{code}"), &headers, &body);
    (StatusCode::from_u16(code).unwrap(), "as you asked").into_response()
}

async fn flaky(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    svc.record("/flaky".into(), &headers, &body);
    if let Some(r) = svc.trouble().await {
        return r;
    }
    axum::Json(json!({"ok": true})).into_response()
}

async fn history(api: &Api, id: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(status, 200, "history of {id}: {body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

/// Polls `GET /api/v1/breakers` until `host` is in `state` (30 s at most).
async fn wait_breaker(api: &Api, host: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get("/breakers").await;
        assert_eq!(status, 200, "breakers: {body}");
        let item = body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|b| b["host"] == host).cloned());
        if let Some(item) = item.filter(|b| b["state"] == state) {
            return item;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the breaker of {host} to be {state}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_templated_call_lands_as_the_step_output_with_a_stable_idempotency_key() {
    let (svc, addr) = Service::start().await;
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = format!(
        r#"
name: charge
steps:
  - id: charge
    http:
      method: POST
      url: 'http://{addr}/charges/{{.input.order_id}}'
      headers: {{Idempotency-Key: '{{.task_id}}'}}
      body: '{{amount: .input.amount}}'
      success: [200, 201]
      timeout: 5s
output: '.steps.charge.output'
"#
    );
    let (status, body) = api.register_yaml(&yaml).await;
    assert_eq!(status, 201, "{body}");
    let id = api
        .start("charge", json!({"order_id": "o-1", "amount": 42}))
        .await;
    let run = api.wait_status(&id, "completed").await;
    assert_eq!(run["output"]["status"], 201);
    assert_eq!(
        run["output"]["body"],
        json!({"charge": "o-1", "amount": 42})
    );
    assert_eq!(run["output"]["headers"]["x-charge"], "yes");

    let task = &run["tasks"][0];
    assert_eq!(task["worker_id"], "http-executor");
    assert_eq!(task["attempt"], 1);
    let calls = svc.calls("/charges/o-1");
    assert_eq!(calls.len(), 1, "one call: {calls:?}");
    assert_eq!(
        calls[0].idempotency_key.as_deref(),
        task["task_id"].as_str(),
        "Idempotency-Key is the task id"
    );
    assert_eq!(
        calls[0].body,
        json!({"amount": 42}),
        "the body jq was applied"
    );
}

#[tokio::test]
async fn a_client_error_is_final_and_a_server_error_is_retried_after_retry_after() {
    let (svc, addr) = Service::start().await;
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = format!(
        r#"
name: refused
steps:
  - id: call
    http: {{url: 'http://{addr}/status/422'}}
    retry: {{max_attempts: 4, initial_interval: 10ms}}
    on_failure: fail
"#
    );
    assert_eq!(api.register_yaml(&yaml).await.0, 201);
    let yaml = format!(
        r#"
name: flaky
steps:
  - id: call
    http: {{method: PUT, url: 'http://{addr}/flaky', timeout: 2s}}
    retry: {{max_attempts: 4, initial_interval: 10ms}}
output: '.steps.call.output.body'
"#
    );
    assert_eq!(api.register_yaml(&yaml).await.0, 201);

    // 4xx: one call, no retry, the run fails per `on_failure`.
    let refused = api.start("refused", json!({})).await;
    let run = api.wait_status(&refused, "failed").await;
    let task = &run["tasks"][0];
    assert_eq!(task["attempt"], 1, "a 422 is not retried: {run}");
    assert_eq!(task["error"]["type"], "http.4xx");
    assert_eq!(task["error"]["retryable"], false);
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("as you asked"),
        "the message quotes the body: {task}"
    );
    assert_eq!(svc.calls("/status/422").len(), 1);

    // 503 with Retry-After: 1, then healthy: the second attempt waits at least 1 s.
    svc.set(UNAVAILABLE);
    let flaky = api.start("flaky", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.calls("/flaky").is_empty() {
        assert!(Instant::now() < deadline, "the service was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.set(OK);
    let run = api.wait_status(&flaky, "completed").await;
    assert_eq!(run["output"], json!({"ok": true}));
    let events = history(&api, &flaky).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "task_failed")
        .collect();
    assert!(!failed.is_empty(), "the 503 failed an attempt: {events:?}");
    let first = failed[0];
    assert_eq!(first["error"]["type"], "http.5xx");
    assert_eq!(first["error"]["retryable"], true);
    let wait = first["retry_at_ms"].as_i64().unwrap() - first["at_ms"].as_i64().unwrap();
    assert!(
        wait >= 1000,
        "Retry-After: 1 is honoured over the 10ms backoff (waits {wait} ms)"
    );
    assert_eq!(
        svc.calls("/flaky").len(),
        failed.len() + 1,
        "one call per attempt"
    );
}

#[tokio::test]
async fn a_slow_service_times_out_and_the_attempt_is_retried() {
    let (svc, addr) = Service::start().await;
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = format!(
        r#"
name: slow
steps:
  - id: call
    http: {{url: 'http://{addr}/flaky', timeout: 200ms}}
    retry: {{max_attempts: 5, initial_interval: 10ms}}
"#
    );
    assert_eq!(api.register_yaml(&yaml).await.0, 201);
    svc.set(SLOW);
    let id = api.start("slow", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = history(&api, &id).await;
        if let Some(f) = events.iter().find(|e| e["type"] == "task_failed") {
            assert_eq!(f["error"]["type"], "http.timeout", "{f}");
            break;
        }
        assert!(Instant::now() < deadline, "no timeout: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.set(OK);
    api.wait_status(&id, "completed").await;
}

#[tokio::test]
async fn an_open_breaker_makes_attempts_wait_without_using_them_until_the_service_recovers() {
    let (svc, addr) = Service::start().await;
    let dir = tempdir();
    // The thresholds come from `[http]`: two failures in a row open it for 3 s.
    let server = Server::start_with_config(
        dir.path(),
        "[http]\nbreaker = {consecutive_failures = 2, cooldown_ms = 3000}\n",
    );
    let api = server.api();
    let yaml = format!(
        r#"
name: guarded
steps:
  - id: call
    http: {{method: POST, url: 'http://{addr}/flaky', body: '.input'}}
    retry: {{max_attempts: 4, initial_interval: 20ms, max_interval: 100ms}}
output: '.steps.call.output.body'
"#
    );
    assert_eq!(api.register_yaml(&yaml).await.0, 201);
    svc.set(DOWN);
    let id = api.start("guarded", json!({"n": 1})).await;

    // Two real failures open the breaker; the next attempt is deferred, not made.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = history(&api, &id).await;
        if count(&events, "task_deferred") > 0 {
            break events;
        }
        assert!(Instant::now() < deadline, "never deferred: {events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deferred = events
        .iter()
        .find(|e| e["type"] == "task_deferred")
        .unwrap();
    assert!(
        deferred["reason"].as_str().unwrap().contains("open"),
        "{deferred}"
    );
    let host = addr.clone();
    let open = wait_breaker(&api, &host, "open").await;
    // The same state through GraphQL.
    let gql: serde_json::Value = api
        .http
        .post(format!("{}/graphql", api.base.trim_end_matches("/api/v1")))
        .json(&json!({"query": "{ breakers { host state consecutiveFailures } }"}))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("GraphQL JSON");
    let listed = gql["data"]["breakers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        listed
            .iter()
            .any(|b| b["host"] == host.as_str() && b["state"] == "OPEN"),
        "GraphQL breakers (the state is the BreakerState enum): {gql}"
    );
    assert!(
        open["consecutive_failures"].as_u64().unwrap() >= 2,
        "{open}"
    );
    assert!(!open["since"].as_str().unwrap().is_empty());
    let run = api.workflow(&id).await;
    assert_eq!(
        run["status"], "running",
        "a deferred attempt does not fail the run"
    );

    // A run started while it is open waits as well, without calling.
    let calls_before = svc.calls("/flaky").len();
    let waiting = api.start("guarded", json!({"n": 2})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&history(&api, &waiting).await, "task_deferred") == 0 {
        assert!(Instant::now() < deadline, "the second run was not deferred");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = svc.calls("/flaky");
    assert!(
        seen[calls_before..]
            .iter()
            .all(|s| s.body != json!({"n": 2})),
        "no call was made for the deferred run"
    );

    // Recovery: after the cooldown one probe goes through, succeeds and closes it.
    svc.set(OK);
    for run in [&id, &waiting] {
        let done = api.wait_status(run, "completed").await;
        assert_eq!(done["output"], json!({"ok": true}));
        let events = history(&api, run).await;
        let failed = count(&events, "task_failed");
        let deferrals = count(&events, "task_deferred");
        assert!(deferrals >= 1, "{run} waited: {events:?}");
        let final_attempt = done["tasks"][0]["attempt"].as_u64().unwrap() as usize;
        assert_eq!(
            final_attempt,
            failed + deferrals + 1,
            "every attempt failed, was deferred or completed"
        );
        let input = if *run == id {
            json!({"n": 1})
        } else {
            json!({"n": 2})
        };
        let made = svc
            .calls("/flaky")
            .iter()
            .filter(|s| s.body == input)
            .count();
        assert_eq!(made, failed + 1, "deferred attempts made no call");
    }
    wait_breaker(&api, &host, "closed").await;

    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["paths"]["/api/v1/breakers"]["get"].is_object(),
        "GET /api/v1/breakers is documented"
    );
}

#[tokio::test]
async fn while_the_breaker_is_open_the_fallback_step_runs_instead() {
    let (svc, addr) = Service::start().await;
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = format!(
        r#"
name: pay
fallbacks:
  - {{id: charge-later, task: queue-charge, queue: payments, input: '{{order: .input.order_id}}'}}
steps:
  - id: charge
    http:
      method: POST
      url: 'http://{addr}/charges/{{.input.order_id}}'
      breaker: {{consecutive_failures: 1, cooldown: 1m}}
    retry: {{max_attempts: 3, initial_interval: 20ms}}
    fallback: charge-later
output: '.steps.charge.output'
"#
    );
    let (status, body) = api.register_yaml(&yaml).await;
    assert_eq!(status, 201, "{body}");
    svc.set(DOWN);
    let id = api.start("pay", json!({"order_id": "o-7"})).await;

    // One failure opens the breaker; the retry finds it open and the fallback runs.
    let task = api.take("payments").await;
    assert_eq!(task["input"], json!({"order": "o-7"}));
    assert_eq!(api.complete(&task, json!({"queued": true})).await.0, 200);
    let run = api.wait_status(&id, "completed").await;
    assert_eq!(run["output"], json!({"queued": true}));
    let events = history(&api, &id).await;
    let taken = events
        .iter()
        .find(|e| e["type"] == "fallback_taken")
        .unwrap_or_else(|| panic!("no fallback_taken: {events:?}"));
    assert_eq!(taken["fallback"], "charge-later");
    assert_eq!(svc.calls("/charges/o-7").len(), 1, "no call while open");
    wait_breaker(&api, &addr, "open").await;
}
