//! The Rust worker SDK against a real `distorch standalone`: handlers, retries (with a
//! handler's `retry_after`), heartbeats with checkpoints, and the per-attempt metrics that
//! land in the task's events.

mod common;

use common::{Server, tempdir};
use distorch_worker::{TaskError, Worker};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_workers_run_retry_and_checkpoint_a_workflow_to_completion() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = r#"
name: sdk
defaults:
  retry: {max_attempts: 3, initial_interval: 20ms}
steps:
  - {id: fetch, task: fetch, queue: sdk}
  - {id: crunch, task: crunch, queue: sdk, heartbeat_timeout: 2s, input: '.steps.fetch.output'}
output: '.steps.crunch.output'
"#;
    assert_eq!(api.register_yaml(yaml).await.0, 201);

    let fetch_calls = Arc::new(AtomicU32::new(0));
    let calls = fetch_calls.clone();
    let worker = Worker::builder(server.url.clone(), "sdk")
        .concurrency(4)
        .handler("fetch", move |ctx| {
            let calls = calls.clone();
            async move {
                // The first attempt fails retryably, asking for a delay longer than the
                // policy's 20 ms backoff; the SDK reports it, the engine retries after it.
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(TaskError::retryable("upstream_429", "slow down")
                        .retry_after(Duration::from_millis(1500)));
                }
                Ok(json!({"n": ctx.input["n"], "attempt": ctx.attempt}))
            }
        })
        .handler("crunch", |ctx| async move {
            assert!(
                ctx.heartbeat(Some(json!({"progress": 50}))).await,
                "attempt still current"
            );
            let n = ctx.input["n"].as_u64().unwrap_or(0);
            Ok(json!({"sum": n * 2, "from_attempt": ctx.input["attempt"]}))
        })
        .spawn()
        .expect("worker");

    let id = api.start("sdk", json!({"n": 21})).await;
    let run = api.wait_status(&id, "completed").await;
    worker.shutdown().await;

    assert_eq!(run["output"], json!({"sum": 42, "from_attempt": 2}));
    assert_eq!(fetch_calls.load(Ordering::SeqCst), 2);
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(
        tasks[0]["attempt"], 2,
        "fetch succeeded on its second attempt"
    );
    let (_, history) = api.get(&format!("/workflows/{id}/history")).await;
    let events = history["events"].as_array().unwrap();
    let checkpoint = events
        .iter()
        .find(|e| e["type"] == "task_heartbeat")
        .map(|e| e["checkpoint"].clone());
    assert_eq!(
        checkpoint,
        Some(json!({"progress": 50})),
        "the heartbeat's checkpoint is an event"
    );
    let failed = events
        .iter()
        .find(|e| e["type"] == "task_failed")
        .expect("the first attempt's failure");
    let delay = failed["retry_at_ms"].as_i64().unwrap() - failed["at_ms"].as_i64().unwrap();
    assert!(
        delay >= 1500,
        "the retry waits the handler's retry_after, not the 20 ms backoff: {failed}"
    );
    let completed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "task_completed")
        .collect();
    assert_eq!(completed.len(), 2);
    if cfg!(target_os = "linux") {
        for e in completed {
            assert!(
                e["metrics"]["cpu_ms"].is_number(),
                "worker CPU time reported: {e}"
            );
            assert!(
                e["metrics"]["peak_memory_bytes"].as_u64().unwrap_or(0) > 0,
                "peak memory reported: {e}"
            );
        }
    }
}
