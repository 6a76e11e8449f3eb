//! End to end through `distorch standalone`: a run that outlives its SLA warns, then breaches;
//! each alert reaches a webhook that fails the first delivery (retried) and is counted in
//! `/metrics`, while the run itself carries on and completes.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Server, metric_value, tempdir};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SLOW: &str = r#"
name: slow
sla: {duration: 300ms, warn_at: 50%}
steps:
  - id: work
    task: work
    queue: sla-e2e
"#;

#[derive(Default)]
struct Received {
    /// Requests per idempotency key.
    attempts: HashMap<String, u32>,
    /// Accepted alerts with their idempotency keys.
    accepted: Vec<(String, Value)>,
}

type Shared = Arc<Mutex<Received>>;

/// Answers 503 to the first delivery of each alert and 200 to the next ones.
async fn flaky(State(rx): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut rx = rx.lock().unwrap();
    let n = rx.attempts.entry(key.clone()).or_default();
    *n += 1;
    if *n == 1 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    rx.accepted.push((key, body));
    StatusCode::OK
}

/// Starts the webhook receiver; returns its base URL.
async fn webhook_server(rx: Shared) -> String {
    let app = Router::new()
        .route("/hook", post(flaky))
        .route("/gone", post(|| async { StatusCode::GONE }))
        .with_state(rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_breached_sla_warns_then_alerts_every_webhook_with_retries_while_the_run_goes_on() {
    let rx: Shared = Arc::default();
    let hooks = webhook_server(rx.clone()).await;
    let dir = tempdir();
    let server = Server::start_with_config(
        dir.path(),
        &format!(
            "[alerts]\nwebhooks = [\"{hooks}/hook\", \"{hooks}/gone\"]\ninitial_backoff_ms = 50\nmax_attempts = 4\n"
        ),
    );
    let api = server.api();
    let (status, body) = api.register_yaml(SLOW).await;
    assert_eq!(status, 201, "{body}");
    let id = api.start("slow", json!({})).await;
    // Its task is handed out; nobody completes it until the SLA has passed.
    let task = api.take("sla-e2e").await;

    let alerts = eventually("a warning and a breach at the webhook", async || {
        let rx = rx.lock().unwrap();
        let of_run: Vec<_> = rx
            .accepted
            .iter()
            .filter(|(_, a)| a["workflow_id"] == id.as_str())
            .cloned()
            .collect();
        let kinds: Vec<_> = of_run.iter().map(|(_, a)| a["kind"].clone()).collect();
        (kinds.contains(&json!("sla_warning")) && kinds.contains(&json!("sla_breach")))
            .then_some(of_run)
    })
    .await;
    for (key, alert) in &alerts {
        assert_eq!(alert["step_key"], Value::Null, "the run's SLA: {alert}");
        assert_eq!(alert["sla_ms"], 300, "{alert}");
        assert!(
            alert["at"].as_str().is_some_and(|at| at.ends_with('Z')),
            "{alert}"
        );
        let seq = alert["event_seq"].as_u64().expect("event_seq");
        assert_eq!(
            key,
            &format!("{id}:{seq}:0"),
            "idempotency key of webhook 0"
        );
        let attempts = rx.lock().unwrap().attempts[key];
        assert!(attempts >= 2, "the first delivery failed and was retried");
    }

    let metrics = eventually("the SLA and alert counters", async || {
        let m = server.metrics().await;
        let at_least = |name: &str, n: f64| metric_value(&m, name).is_some_and(|v| v >= n);
        (at_least("distorch_sla_breaches_total", 1.0)
            && at_least("distorch_sla_warnings_total", 1.0)
            && at_least("distorch_alerts_delivered_total", 2.0)
            // The `/gone` webhook answers 410: given up at once, both alerts.
            && at_least("distorch_alerts_failed_total", 2.0))
        .then_some(m)
    })
    .await;
    assert!(metrics.contains("distorch_sla_breaches_total"));

    // Alerting held nothing up: the run is still there to finish.
    assert_eq!(api.workflow(&id).await["status"], "running");
    let (status, body) = api.complete(&task, json!({"done": true})).await;
    assert_eq!(status, 200, "{body}");
    api.wait_status(&id, "completed").await;
}
