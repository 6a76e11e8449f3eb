//! Analytics end to end: runs driven through `distorch standalone` by a worker that reports
//! CPU and memory appear in the performance, bottleneck and cost reports (REST and GraphQL)
//! with exactly the figures the test produced.

mod common;

use common::{Server, tempdir};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const CPU_MS: f64 = 250.0;
const MEMORY: u64 = 1 << 30;

fn find(rows: &Value, pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    rows.as_array()?.iter().find(|r| pred(r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_what_the_runs_did() {
    let dir = tempdir();
    let config = r#"
[api.cost_rates]
per_cpu_second = 2.0
per_gib_second = 0.0
per_attempt = 0.5
"#;
    let server = Server::start_with_config(dir.path(), config);
    let api = server.api();
    let (status, body) = api
        .post(
            "/definitions",
            json!({"name": "billing", "steps": [
                {"id": "charge", "task": "charge", "queue": "bill",
                 "retry": {"max_attempts": 3, "initial_interval": "10ms"}},
                {"id": "receipt", "task": "receipt", "queue": "bill"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(api.start("billing", json!({"tenant": "acme"})).await);
    }
    let metrics = json!({"cpu_ms": CPU_MS, "peak_memory_bytes": MEMORY});
    // The first charge fails once (retryable); every other attempt completes.
    let mut failed_once = false;
    let mut completed = 0;
    while completed < RUNS * 2 {
        let task = api.take("bill").await;
        let id = task["task_id"].as_str().unwrap();
        if task["step_id"] == "charge" && !failed_once {
            failed_once = true;
            let error = json!({"type": "gateway", "message": "timeout", "retryable": true});
            let (status, body) = api
                .post(
                    &format!("/tasks/{id}/fail"),
                    json!({"attempt": task["attempt"], "error": error, "metrics": metrics}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            continue;
        }
        let (status, body) = api
            .post(
                &format!("/tasks/{id}/complete"),
                json!({"attempt": task["attempt"], "output": {}, "metrics": metrics}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        completed += 1;
    }
    for id in &ids {
        api.wait_status(id, "completed").await;
    }

    // Analytics are recorded by the projector right after the read models; wait for them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let performance = loop {
        let (status, body) = api.get("/analytics/performance?window=1h").await;
        assert_eq!(status, 200, "{body}");
        let runs =
            find(&body["definitions"], |d| d["definition"] == "billing").map(|d| d["runs"].clone());
        if runs == Some(json!(RUNS)) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "runs never reached the report: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let def = find(&performance["definitions"], |d| {
        d["definition"] == "billing"
    })
    .unwrap();
    assert_eq!(def["completed"], json!(RUNS), "{def}");
    assert_eq!(def["failure_rate"], json!(0.0), "{def}");
    // 3 charges + 1 failed charge + 3 receipts.
    assert_eq!(def["attempts"], json!(RUNS * 2 + 1), "{def}");
    assert_eq!(def["retries"], json!(1), "{def}");
    let charge = find(&performance["steps"], |s| {
        s["definition"] == "billing" && s["step_id"] == "charge"
    })
    .unwrap();
    assert_eq!(
        (&charge["attempts"], &charge["completed"], &charge["failed"]),
        (&json!(RUNS + 1), &json!(RUNS), &json!(1)),
        "{charge}"
    );

    let (status, bottlenecks) = api.get("/analytics/bottlenecks?window=1h").await;
    assert_eq!(status, 200, "{bottlenecks}");
    let charge = find(&bottlenecks["steps"], |s| s["step_id"] == "charge").unwrap();
    assert_eq!(charge["retries"], json!(1), "{charge}");
    let parts: i64 = [
        "queue_wait_ms",
        "run_ms",
        "backoff_ms",
        "human_wait_ms",
        "breaker_wait_ms",
    ]
    .iter()
    .map(|k| charge[*k].as_i64().unwrap())
    .sum();
    assert_eq!(
        charge["total_ms"].as_i64().unwrap(),
        parts,
        "parts add up: {charge}"
    );

    let (status, cost) = api.get("/analytics/cost?window=1h").await;
    assert_eq!(status, 200, "{cost}");
    let row = find(&cost["rows"], |r| {
        r["step_id"] == "charge" && r["tenant"] == "acme"
    })
    .unwrap_or_else(|| panic!("no acme charge row: {cost}"));
    let attempts = (RUNS + 1) as f64;
    assert_eq!(row["attempts"], json!(RUNS + 1), "{row}");
    let cpu_s = row["cpu_seconds"].as_f64().unwrap();
    assert!((cpu_s - attempts * CPU_MS / 1000.0).abs() < 1e-9, "{row}");
    let total = row["total"].as_f64().unwrap();
    let expected = attempts * CPU_MS / 1000.0 * 2.0 + attempts * 0.5;
    assert!(
        (total - expected).abs() < 1e-9,
        "{total} != {expected}: {row}"
    );

    // GraphQL serves the same reports.
    let query = r#"{ analytics(window: "1h") { performance cost } }"#;
    let resp: Value = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(resp.get("errors").is_none(), "{resp}");
    let gql = &resp["data"]["analytics"];
    assert_eq!(
        find(&gql["performance"]["definitions"], |d| d["definition"]
            == "billing"),
        Some(def),
        "GraphQL and REST disagree"
    );
    assert_eq!(gql["cost"]["total"], cost["total"]);

    let (status, body) = api.get("/analytics/cost?window=soon").await;
    assert_eq!(status, 400, "a bad window is refused: {body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("window"),
        "{body}"
    );
}
