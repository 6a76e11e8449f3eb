//! Durability: SIGKILL `distorch standalone` while workers are completing tasks, restart it
//! on the same data dir, and check that every accepted run completes (attempts lost in the
//! crash are reassigned after their timeout), and that no task is handed to a worker again
//! once its completion was acknowledged.

mod common;

use common::{Server, metric_value, tempdir};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const RUNS: usize = 200;
const STEPS: usize = 5;

#[derive(Default)]
struct Ledger {
    /// Tasks whose completion the server acknowledged with 200.
    completed: HashSet<String>,
    /// Tasks handed out again after that acknowledgement.
    violations: Vec<String>,
}

async fn worker(
    base: Arc<RwLock<String>>,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while !done.load(Ordering::Relaxed) {
        let url = base.read().unwrap().clone();
        for task in common::poll_once(&http, &url, "crash", "crash-test", 10, 300).await {
            let id = task["task_id"].as_str().unwrap().to_string();
            {
                let mut l = ledger.lock().unwrap();
                if l.completed.contains(&id) {
                    l.violations.push(id.clone());
                }
            }
            // Like the SDK: a completion is retried while the server is unreachable.
            let url = || base.read().unwrap().clone();
            let output = json!({"by": "crash-test"});
            let pause = Duration::from_millis(100);
            if common::complete_until_answered(&http, url, &task, output, pause).await {
                ledger.lock().unwrap().completed.insert(id.clone());
                acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Frequent snapshots, so that the restart restores runs from one and replays the rest.
const SNAPSHOTS: &str = "[engine]\nsnapshot_every = 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_run_and_redispatches_no_completed_task() {
    kill_9_under_load(SNAPSHOTS, "log.journal").await;
}

/// The same on a data dir created with the SQLite log; the restart does not say `sqlite`
/// again: a data dir keeps the log storage it was created with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_the_sqlite_log() {
    let config = format!("{SNAPSHOTS}[standalone]\nlog = \"sqlite\"\n");
    kill_9_under_load(&config, "log.db").await;
}

/// Runs work, SIGKILLs the server started with `config` a third of the way through,
/// restarts it with [`SNAPSHOTS`] only, and checks every run and task; the data dir's event
/// log must be `log_file`.
async fn kill_9_under_load(config: &str, log_file: &str) {
    let dir = tempdir();
    let mut server = Server::start_with_config(dir.path(), config);
    let api = server.api();
    let steps: Vec<Value> = (0..STEPS)
        .map(|i| json!({"id": format!("s{i}"), "task": "work", "queue": "crash", "timeout": "2s"}))
        .collect();
    let (status, body) = api
        .post("/definitions", json!({"name": "crash", "steps": steps}))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(api.start("crash", json!({})).await);
    }

    let base = Arc::new(RwLock::new(server.url.clone()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let done = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(worker(
                base.clone(),
                ledger.clone(),
                done.clone(),
                acks.clone(),
            ))
        })
        .collect();

    // Let a good share of the work happen, then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.load(Ordering::Relaxed) < RUNS * STEPS / 3 {
        assert!(Instant::now() < deadline, "workers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let server = Server::start_with_config(dir.path(), SNAPSHOTS);
    *base.write().unwrap() = server.url.clone();
    let api = server.api();

    for id in &ids {
        let run = api.wait_status(id, "completed").await;
        let tasks = run["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), STEPS, "run {id}");
        assert!(
            tasks.iter().all(|t| t["status"] == "completed"),
            "run {id}: {run}"
        );
        // The projector was killed mid-stream too: it caught up without a duplicate or a gap.
        let (status, history) = api.get(&format!("/workflows/{id}/history")).await;
        assert_eq!(status, 200, "{history}");
        let seqs: Vec<u64> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "run {id}: history has duplicates or gaps");
    }
    let restored = metric_value(
        &server.metrics().await,
        "distorch_engine_runs_restored_total",
    );
    assert!(
        restored.unwrap_or(0.0) > 0.0,
        "the restart did not restore any run from a snapshot"
    );
    let logs: Vec<bool> = ["log.journal", "log.db"]
        .iter()
        .map(|f| dir.path().join(f).exists())
        .collect();
    assert_eq!(
        logs,
        ["log.journal", "log.db"].map(|f| f == log_file),
        "the data dir's event log is {log_file} alone"
    );
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.violations.is_empty(),
        "tasks dispatched after their completion was acknowledged: {:?}",
        ledger.violations
    );
    // A completion that became durable just before the kill may have lost its answer; the
    // worker's retry then gets 409. At most the completions in flight at the kill (4 workers
    // x 10 tasks) can be in that state; everything else was acknowledged.
    assert!(
        ledger.completed.len() + 40 >= RUNS * STEPS,
        "only {} completions acknowledged",
        ledger.completed.len()
    );
}
