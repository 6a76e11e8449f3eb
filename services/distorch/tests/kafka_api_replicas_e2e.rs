//! Three `distorch api` replicas on a real Kafka-compatible broker, behind a round-robin TCP
//! proxy the test runs, with one engine, the saga processor and the projector, all with the
//! default configuration.
//!
//! - A worker that only ever talks to one replica gets every task of the queue: the
//!   replicas share the queue's partitions, and a poll its replica cannot fill is served by
//!   the others.
//! - Workers polling through the proxy keep going while one replica is SIGKILLed mid-load:
//!   every run completes (long before an attempt's 300 s timeout could have rescued a task
//!   the dead replica held), no task is handed out again after its completion was
//!   acknowledged, and event streams that reconnect through the proxy with `Last-Event-ID`
//!   resume with no gap and no repeat.
//!
//! Needs `DISTORCH_TEST_KAFKA` (host:port); `bash scripts/test.sh` starts a broker and sets it.

mod common;

use common::{Server, metric_value, tempdir};
use distorch_eventlog::partition_for;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

const QUEUE: &str = "replicated";
const STEPS: usize = 5;
const PARTITIONS: u32 = 8;
/// Runs the pinned worker completes alone.
const PINNED_RUNS: usize = 40;
/// Runs started for the phase in which a replica dies.
const RUNS: usize = 150;

/// A round-robin TCP proxy: each connection goes to the next backend that accepts it.
struct Proxy {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(backends: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let backends = backends.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    for _ in 0..backends.len() {
                        let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                        if let Ok(mut server) = TcpStream::connect(&backends[i]).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

#[derive(Default)]
struct Ledger {
    completed: HashSet<String>,
    violations: Vec<String>,
    /// Partitions (of the queue's topic) of the tasks each worker received.
    partitions: BTreeMap<String, BTreeSet<u32>>,
}

/// Polls `api` and completes every task, until `done`. `fresh_connections`: a new TCP
/// connection per request (so the proxy spreads them); otherwise one kept-alive connection.
async fn worker(
    name: String,
    api: String,
    fresh_connections: bool,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
) {
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if fresh_connections {
        http = http.pool_max_idle_per_host(0);
    }
    let http = http.build().unwrap();
    while !done.load(Ordering::Relaxed) {
        for task in common::poll_once(&http, &api, QUEUE, &name, 5, 500).await {
            let id = task["task_id"].as_str().unwrap().to_string();
            let run = task["workflow_id"].as_str().unwrap();
            {
                let mut l = ledger.lock().unwrap();
                if l.completed.contains(&id) {
                    l.violations.push(id.clone());
                }
                l.partitions
                    .entry(name.clone())
                    .or_default()
                    .insert(partition_for(run, PARTITIONS));
            }
            // Like the SDKs: a completion is retried until it is answered.
            let output = json!({"by": name});
            let pause = Duration::from_millis(200);
            if common::complete_until_answered(&http, || api.clone(), &task, output, pause).await {
                ledger.lock().unwrap().completed.insert(id);
            }
        }
    }
}

struct Workers {
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn new() -> Self {
        Self {
            ledger: Arc::default(),
            done: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn spawn(&mut self, name: &str, api: &str, fresh_connections: bool) {
        self.tasks.push(tokio::spawn(worker(
            name.to_string(),
            api.to_string(),
            fresh_connections,
            self.ledger.clone(),
            self.done.clone(),
        )));
    }

    async fn stop(self) -> Ledger {
        self.done.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

/// Starts `n` runs through `api`, retrying a 503 with the run id it names.
async fn start_runs(api: &common::Api, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        loop {
            let (status, body) = api
                .post(
                    "/workflows",
                    json!({"definition": "replicated", "input": {}, "workflow_id": id}),
                )
                .await;
            match status {
                200 | 201 => break,
                503 => tokio::time::sleep(Duration::from_millis(200)).await,
                other => panic!("start: {other} {body}"),
            }
        }
        ids.push(id);
    }
    ids
}

async fn until_all_completed(api: &common::Api, ids: &[String], deadline: Instant) {
    for id in ids {
        loop {
            let (status, run) = api.get(&format!("/workflows/{id}")).await;
            if status == 200 && run["status"] == "completed" {
                break;
            }
            if Instant::now() >= deadline {
                let (_, history) = api.get(&format!("/workflows/{id}/history")).await;
                panic!("run {id} did not complete: {run}\nhistory: {history}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until every replica counts `n` live replicas and every partition of the queue is
/// held by exactly one of them.
async fn until_replicas_share(replicas: &[&Server], n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut counts = Vec::new();
        for r in replicas {
            counts.push(metric_value(&r.metrics().await, "distorch_api_replicas").unwrap_or(0.0));
        }
        if counts.iter().all(|c| *c == n as f64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never saw each other: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One SSE event of the global stream: its id (a position) and the event.
struct SseEvent {
    id: String,
    data: Value,
}

/// Reads `/api/v1/events/stream` through `proxy` until `done`, reconnecting with
/// `Last-Event-ID` whenever the connection breaks. Returns the events and the number of
/// reconnections.
async fn follow_events(
    proxy: String,
    done: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> (Vec<SseEvent>, usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut events = Vec::new();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0;
    let mut first = true;
    while !done.load(Ordering::Relaxed) {
        let mut req = http.get(format!("{proxy}/api/v1/events/stream"));
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let Ok(mut resp) = req.send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if resp.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if first {
            opened.fetch_add(1, Ordering::Relaxed);
            first = false;
        } else {
            reconnects += 1;
        }
        let mut buf = String::new();
        let (mut id, mut data) = (None::<String>, String::new());
        loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if done.load(Ordering::Relaxed) { break } else { continue }
                }
            };
            let Ok(Some(chunk)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find('\n') {
                let line: String = buf.drain(..=end).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if let (Some(i), false) = (id.take(), data.is_empty()) {
                        let value: Value = serde_json::from_str(&data).expect("event data");
                        last_id = Some(i.clone());
                        events.push(SseEvent { id: i, data: value });
                    }
                    data.clear();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
        }
    }
    (events, reconnects)
}

// scripts/nextest.toml runs this test alone (six DisTorch processes on a 2-core machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_get_every_task_from_any_replica_and_a_killed_replica_loses_nothing() {
    let dir = tempdir();
    let config =
        common::kafka::cluster_config(dir.path(), &common::kafka::unique_prefix("replicas"), "");
    let _engine = Server::service("engine", &config);
    let _saga = Server::service("saga", &config);
    let _projector = Server::service("projector", &config);
    let mut replicas: Vec<Server> = (0..3).map(|_| Server::service("api", &config)).collect();
    let proxy = Proxy::start(replicas.iter().map(|r| host_port(&r.url)).collect()).await;
    let api = common::Api {
        base: format!("{}/api/v1", proxy.url),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
    };

    let steps: Vec<Value> = (0..STEPS)
        .map(|i| json!({"id": format!("s{i}"), "task": "work", "queue": QUEUE}))
        .collect();
    let (status, body) = api
        .post(
            "/definitions",
            json!({"name": "replicated", "steps": steps}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Every replica polls the queue once, so each joins its group and holds a share.
    for _ in 0..3 {
        let tasks = api.poll(QUEUE, 1, 0).await;
        assert!(tasks.is_empty(), "no run yet: {tasks:?}");
    }
    until_replicas_share(
        &replicas.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(60),
    )
    .await;

    // A worker pinned to replica 0 alone completes runs whose tasks lie on every partition.
    let mut workers = Workers::new();
    workers.spawn("pinned", &replicas[0].url, false);
    let pinned_ids = start_runs(&api, PINNED_RUNS).await;
    until_all_completed(&api, &pinned_ids, Instant::now() + Duration::from_secs(120)).await;
    let seen_by_pinned: BTreeSet<u32> = {
        let l = workers.ledger.lock().unwrap();
        l.partitions["pinned"].clone()
    };
    let all_partitions: BTreeSet<u32> = pinned_ids
        .iter()
        .map(|id| partition_for(id, PARTITIONS))
        .collect();
    assert_eq!(
        seen_by_pinned, all_partitions,
        "the pinned worker received the tasks of every partition the runs used"
    );
    let exposition = replicas[0].metrics().await;
    let forwarded: f64 = exposition
        .lines()
        .filter(|l| l.starts_with("distorch_api_poll_forwarded_tasks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        forwarded > 0.0,
        "replica 0 holds a share of the partitions only: the other replicas' tasks reached          its worker through forwarded takes"
    );

    // Streams through the proxy: three connections, one per replica in the rotation.
    let streams_done = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for _ in 0..3 {
        let before = opened.load(Ordering::Relaxed);
        streams.push(tokio::spawn(follow_events(
            proxy.url.clone(),
            streams_done.clone(),
            opened.clone(),
        )));
        while opened.load(Ordering::Relaxed) == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Load through the proxy; replica 2 dies in the middle of it.
    for i in 0..4 {
        workers.spawn(&format!("round-robin-{i}"), &proxy.url, true);
    }
    let ids = start_runs(&api, RUNS).await;
    let killed_after = RUNS * STEPS / 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while workers.ledger.lock().unwrap().completed.len() < PINNED_RUNS * STEPS + killed_after {
        assert!(Instant::now() < deadline, "workers made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replicas[2].kill9();
    let killed = Instant::now();

    // Every run completes well inside the 300 s a lost attempt's timeout would take.
    until_all_completed(&api, &ids, killed + Duration::from_secs(120)).await;
    let ledger = workers.stop().await;
    assert!(
        ledger.violations.is_empty(),
        "tasks handed out after their completion was acknowledged: {:?}",
        ledger.violations
    );
    assert_eq!(
        metric_value(&replicas[0].metrics().await, "distorch_api_replicas"),
        Some(2.0),
        "the survivors know the killed replica is gone"
    );

    // The streams saw every event of every run once, in order, across reconnections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    streams_done.store(true, Ordering::Relaxed);
    let mut reconnected = 0;
    for stream in streams {
        let (events, reconnects) = stream.await.unwrap();
        reconnected += reconnects;
        let mut by_run: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for e in &events {
            let run = e.data["workflow_id"].as_str().unwrap().to_string();
            let kind = e.data["type"].as_str().unwrap().to_string();
            by_run
                .entry(run)
                .or_default()
                .push((e.data["seq"].as_u64().unwrap(), kind));
        }
        let ids_seen: HashSet<&String> = events.iter().map(|e| &e.id).collect();
        assert_eq!(ids_seen.len(), events.len(), "an event id was repeated");
        for id in &ids {
            let seen = by_run
                .get(id)
                .unwrap_or_else(|| panic!("run {id} not streamed"));
            let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "run {id}: the stream has gaps or repeats");
            assert_eq!(
                seen.last().unwrap().1,
                "workflow_completed",
                "run {id}: the stream ends with the run's completion"
            );
        }
    }
    assert!(
        reconnected > 0,
        "no stream was cut by the kill: the reconnection was not exercised"
    );
    eprintln!(
        "replicas: {} runs completed {:.1} s after one of three replicas was SIGKILLed; \
         {reconnected} stream reconnection(s)",
        ids.len(),
        killed.elapsed().as_secs_f64()
    );
}
