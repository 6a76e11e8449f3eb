//! SDK workers that take tasks straight from Kafka (`LogSource`), against DisTorch as
//! separate processes (engine, saga, projector, API) on a real Kafka-compatible broker.
//!
//! - Two workers share a queue's consumer group and run runs of a two-step definition to
//!   completion: the first step fails its first attempt (a retry), the second heartbeats a
//!   checkpoint. The runs are started and read through the API; the workers never call it.
//! - A worker that dies mid-task (its runtime is torn down, like a crashed process; its
//!   consumer leaves the group on the way, so the test does not depend on the broker
//!   noticing a dead member) loses nothing: the attempt times out on the engine and another
//!   worker runs the next one.
//!
//! Needs `DISTORCH_TEST_KAFKA` (host:port); `bash scripts/test.sh` starts a broker and sets it.

mod common;

use common::kafka::{broker, cluster_config, unique_prefix};
use common::{Api, Server, tempdir};
use distorch_worker::{LogSource, TaskError, Worker};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Runs of the first part. With the 8 task partitions split 4/4, all of them landing on one
/// worker (which would fail the spread check) has odds of 2 in 2^16.
const RUNS: i64 = 16;

async fn source(prefix: &str) -> LogSource {
    LogSource::builder()
        .topic_prefix(prefix)
        .connect(&broker())
        .await
        .expect("connect the worker to the broker")
}

/// Waits (up to `limit`) for the run to reach `status`.
async fn wait_status(api: &Api, id: &str, status: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (code, run) = api.get(&format!("/workflows/{id}")).await;
        if code == 200 && run["status"] == status {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not reach {status} within {limit:?}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn history(api: &Api, id: &str) -> Vec<Value> {
    let (code, body) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(code, 200, "history of {id}: {body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_workers_run_retry_checkpoint_and_take_over_from_a_dead_worker() {
    let prefix = unique_prefix("kworker");
    let dir = tempdir();
    let config = cluster_config(dir.path(), &prefix, "");
    let _engine = Server::service("engine", &config);
    let _saga = Server::service("saga", &config);
    let _projector = Server::service("projector", &config);
    let api_server = Server::service("api", &config);
    let api = api_server.api();

    runs_complete_with_retries_and_checkpoints(&api, &prefix).await;
    a_dead_workers_task_goes_to_another(&api, &prefix).await;
}

async fn runs_complete_with_retries_and_checkpoints(api: &Api, prefix: &str) {
    let yaml = r#"
name: kafka-sdk
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms}
steps:
  - {id: fetch, task: fetch, queue: kafka-sdk}
  - {id: crunch, task: crunch, queue: kafka-sdk, heartbeat_timeout: 10s, input: '.steps.fetch.output'}
output: '.steps.crunch.output'
"#;
    let (code, body) = api.register_yaml(yaml).await;
    assert_eq!(code, 201, "{body}");

    // Two workers, each with its own source (as two processes would have): one group.
    let mut workers = Vec::new();
    for i in 0..2 {
        let worker = Worker::with_source(source(prefix).await, "kafka-sdk")
            .worker_id(format!("kafka-worker-{i}"))
            .concurrency(8)
            .handler("fetch", |ctx| async move {
                // Every first attempt fails retryably; the engine retries it.
                if ctx.attempt == 1 {
                    return Err(TaskError::retryable("upstream_503", "try again"));
                }
                Ok(json!({"n": ctx.input["n"], "attempt": ctx.attempt}))
            })
            .handler("crunch", |ctx| async move {
                let n = ctx.input["n"].as_i64().unwrap_or_default();
                if !ctx.heartbeat(Some(json!({"progress": n}))).await {
                    return Err(TaskError::retryable("superseded", "attempt is stale"));
                }
                Ok(json!({"sum": n * 2, "from_attempt": ctx.input["attempt"]}))
            })
            .spawn()
            .expect("worker");
        workers.push(worker);
    }

    // The first run makes the engine create the queue's topic, which the workers wait for.
    // By the time it is done both have joined the group (they look for the topic every
    // second), so the runs below find its partitions shared out.
    let first = api.start("kafka-sdk", json!({"n": 0})).await;
    wait_status(api, &first, "completed", Duration::from_secs(120)).await;

    let mut ids = Vec::new();
    for n in 0..RUNS {
        ids.push(api.start("kafka-sdk", json!({"n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let run = wait_status(api, id, "completed", Duration::from_secs(120)).await;
        let n = n as i64;
        assert_eq!(
            run["output"],
            json!({"sum": n * 2, "from_attempt": 2}),
            "run {id}"
        );
        let tasks = run["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 2, "run {id}: {run}");
        assert_eq!(tasks[0]["attempt"], 2, "fetch retried once in {id}");
        assert_eq!(tasks[1]["attempt"], 1, "crunch ran once in {id}");
    }

    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        for e in history(api, id).await {
            if e["type"] == "task_started" {
                *by_worker
                    .entry(e["worker_id"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
        }
    }
    eprintln!("attempts started per worker: {by_worker:?}");
    assert_eq!(
        by_worker.len(),
        2,
        "the queue's group spreads the partitions over both workers: {by_worker:?}"
    );

    let events = history(api, &ids[RUNS as usize - 1]).await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "task_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one failed attempt: {events:?}");
    assert_eq!(failed[0]["error"]["type"], "upstream_503");
    let started: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "task_started")
        .collect();
    assert_eq!(started.len(), 3, "a start per attempt: {events:?}");
    assert!(
        started.iter().all(|e| e["worker_id"]
            .as_str()
            .is_some_and(|w| w.starts_with("kafka-worker-"))),
        "started for the SDK workers: {started:?}"
    );
    let checkpoint = events
        .iter()
        .find(|e| e["type"] == "task_heartbeat")
        .map(|e| e["checkpoint"].clone());
    assert_eq!(
        checkpoint,
        Some(json!({"progress": RUNS - 1})),
        "the heartbeat's checkpoint is an event"
    );

    for worker in workers {
        worker.shutdown().await;
    }
}

async fn a_dead_workers_task_goes_to_another(api: &Api, prefix: &str) {
    let yaml = r#"
name: kafka-crash
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms}
steps:
  - {id: slow, task: slow, queue: kafka-crash, heartbeat_timeout: 2s}
output: '.steps.slow.output'
"#;
    let (code, body) = api.register_yaml(yaml).await;
    assert_eq!(code, 201, "{body}");
    let id = api.start("kafka-crash", json!({})).await;

    // Worker A gets the task and hangs in it, heartbeating, until its runtime is torn down.
    let source_a = source(prefix).await;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<u32>();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let worker_a = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime of worker A");
        runtime.spawn(async move {
            let worker = Worker::with_source(source_a, "kafka-crash")
                .worker_id("doomed")
                .handler("slow", move |ctx| {
                    let started_tx = started_tx.clone();
                    async move {
                        let _ = started_tx.send(ctx.attempt);
                        std::future::pending::<()>().await;
                        Ok(json!("never"))
                    }
                })
                .build()
                .expect("worker A");
            worker.run(std::future::pending()).await;
        });
        let _ = kill_rx.recv();
        runtime.shutdown_timeout(Duration::from_secs(10));
    });
    let attempt =
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join")
            .expect("worker A never got the task");
    assert_eq!(attempt, 1);
    kill_tx.send(()).expect("worker A alive");
    tokio::task::spawn_blocking(move || worker_a.join())
        .await
        .expect("join")
        .expect("worker A's thread");

    // Worker B joins the group after A left: attempt 1 times out (heartbeat_timeout) and B
    // runs attempt 2. A's record of attempt 1 reaches B too, whose start is refused.
    let worker_b = Worker::with_source(source(prefix).await, "kafka-crash")
        .worker_id("survivor")
        .handler(
            "slow",
            |ctx| async move { Ok(json!({"attempt": ctx.attempt})) },
        )
        .spawn()
        .expect("worker B");
    let run = wait_status(api, &id, "completed", Duration::from_secs(120)).await;
    worker_b.shutdown().await;

    assert_eq!(run["output"], json!({"attempt": 2}), "{run}");
    let events = history(api, &id).await;
    let starts: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["type"] == "task_started")
        .map(|e| {
            (
                e["attempt"].as_u64().unwrap_or_default(),
                e["worker_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        starts,
        vec![(1, "doomed".to_owned()), (2, "survivor".to_owned())],
        "{events:?}"
    );
    let failure = events
        .iter()
        .find(|e| e["type"] == "task_failed")
        .unwrap_or_else(|| panic!("attempt 1 timed out: {events:?}"));
    assert_eq!(failure["attempt"], 1, "{failure}");
    let completions: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "task_completed")
        .collect();
    assert_eq!(completions.len(), 1, "{events:?}");
}
