//! DisTorch as separate processes on a real Kafka-compatible broker: two engines sharing the
//! command partitions, the saga processor, the projector and the API, all with the default
//! configuration (steps keep their default 300 s timeout, the engines their default group
//! watchdog).
//!
//! - One engine is SIGKILLed with 200 ten-step runs in flight; the other takes over its
//!   partitions (from their snapshots), and every run completes long before any attempt's
//!   timeout could have rescued it: a start whose answer the dead engine never gave is asked
//!   again of the new owner. No task is handed out again after its completion was
//!   acknowledged, no accepted start is lost, and starts made during the failover are safe
//!   to retry with the `workflow_id` their 503 names.
//! - One engine is frozen with SIGSTOP past the group's session timeout while it holds a
//!   batch it has not sent yet; the other claims its partitions and runs on; the frozen one
//!   is resumed with SIGCONT and appends its batch after the claim. Nothing of that batch is
//!   served: every run completes with one line of events, each step completed once, and the
//!   paused engine lets its partitions go and rejoins.
//!
//! Needs `DISTORCH_TEST_KAFKA` (host:port); `bash scripts/test.sh` starts a broker and sets it.

mod common;

use common::{Server, metric_value, tempdir};
use distorch_eventlog::kafka::KafkaLog;
use distorch_eventlog::{EventLog, partition_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RUNS: usize = 200;
const STEPS: usize = 10;
/// Runs started while the killed engine's partitions have no owner.
const STARTS_DURING_FAILOVER: usize = 10;
const PARTITIONS: u32 = 8;
const QUEUE: &str = "failover";

/// One configuration for every process of the cluster, on topics no other test uses. Only
/// the snapshot interval differs from the defaults, so that takeovers restore from snapshots.
fn cluster_config(dir: &Path) -> PathBuf {
    config_with(dir, &common::kafka::unique_prefix("failover"), "")
}

/// The cluster's configuration for topics under `prefix`, plus `extra` TOML.
fn config_with(dir: &Path, prefix: &str, extra: &str) -> PathBuf {
    let extra = format!("[engine]\nsnapshot_every = 100\n{extra}");
    common::kafka::cluster_config(dir, prefix, &extra)
}

#[derive(Default)]
struct Ledger {
    completed: HashSet<String>,
    /// Each acknowledged completion: when it was sent, when its answer came, and its run.
    acks: Vec<(Instant, Instant, String)>,
    violations: Vec<String>,
}

async fn worker(
    api: String,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    while !done.load(Ordering::Relaxed) {
        let polled = http
            .post(format!("{api}/queues/{QUEUE}/poll"))
            .json(&json!({"worker_id": "failover-test", "max_tasks": 10, "wait_ms": 300}))
            .send()
            .await;
        let Ok(resp) = polled else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(body) = resp.json::<Value>().await else {
            continue;
        };
        for task in body["tasks"].as_array().cloned().unwrap_or_default() {
            let id = task["task_id"].as_str().unwrap().to_string();
            let run = task["workflow_id"].as_str().unwrap().to_string();
            {
                let mut l = ledger.lock().unwrap();
                if l.completed.contains(&id) {
                    l.violations.push(id.clone());
                }
            }
            // Like the SDK: a completion is retried until the API answers it.
            for _ in 0..100 {
                let sent = Instant::now();
                let resp = http
                    .post(format!("{api}/tasks/{id}/complete"))
                    .json(&json!({"attempt": task["attempt"], "output": {"step": task["step_id"]}}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let mut l = ledger.lock().unwrap();
                        l.completed.insert(id.clone());
                        l.acks.push((sent, Instant::now(), run.clone()));
                        acks.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(r) if r.status().is_client_error() => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
}

/// The cluster's processes: engine A (with its own configuration), engine B, and the saga,
/// projector and API, which live as long as the value.
struct Cluster {
    engine_a: Server,
    engine_b: Server,
    others: Vec<Server>,
    api: common::Api,
}

impl Cluster {
    fn start(config_a: &Path, config: &Path) -> Self {
        let engine_a = Server::service("engine", config_a);
        let engine_b = Server::service("engine", config);
        let api_server = Server::service("api", config);
        let api = api_server.api();
        let others = vec![
            Server::service("saga", config),
            Server::service("projector", config),
            api_server,
        ];
        Self {
            engine_a,
            engine_b,
            others,
            api,
        }
    }
}

/// Waits until both engines own a share of the partitions and together own them all.
async fn until_shared(a: &Server, b: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (pa, pb) = (owned_partitions(a).await, owned_partitions(b).await);
        if !pa.is_empty()
            && !pb.is_empty()
            && pa.is_disjoint(&pb)
            && pa.len() + pb.len() == PARTITIONS as usize
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "engines never shared the partitions: {pa:?} and {pb:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers the ten-step definition (default step timeouts: a start lost with an engine
/// would wait 300 s) and starts [`RUNS`] runs of it.
async fn start_runs(api: &common::Api) -> Vec<String> {
    let steps: Vec<Value> = (0..STEPS)
        .map(|i| json!({"id": format!("s{i}"), "task": "work", "queue": QUEUE}))
        .collect();
    let (status, body) = api
        .post("/definitions", json!({"name": "failover", "steps": steps}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Started at once, as a careful client does: a start the engines are too busy to confirm
    // within the API's wait (503) is retried with the run id it names.
    let ids: Vec<String> = (0..RUNS)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    futures::future::join_all(
        ids.iter()
            .map(|id| start_until_answered(api.base.clone(), id.clone())),
    )
    .await;
    ids
}

/// Polls until every run has completed, panicking with the stuck run's history at `deadline`.
async fn until_all_completed(api: &common::Api, ids: &[String], deadline: Instant) {
    for id in ids {
        let run = loop {
            let (status, run) = api.get(&format!("/workflows/{id}")).await;
            if status == 200 && run["status"] == "completed" {
                break run;
            }
            if Instant::now() >= deadline {
                let (_, history) = api.get(&format!("/workflows/{id}/history")).await;
                panic!("run {id} did not complete: {run}\nhistory: {history}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let tasks = run["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), STEPS, "run {id}");
        assert!(
            tasks.iter().all(|t| t["status"] == "completed"),
            "run {id}: {run}"
        );
    }
}

/// HTTP workers completing every task of the queue, and what they saw.
struct Workers {
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn spawn(api: &str, count: usize) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let done = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let tasks = (0..count)
            .map(|_| {
                tokio::spawn(worker(
                    api.to_string(),
                    ledger.clone(),
                    done.clone(),
                    acks.clone(),
                ))
            })
            .collect();
        Self {
            ledger,
            done,
            acks,
            tasks,
        }
    }

    /// Waits until `n` completions were acknowledged.
    async fn until_acked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acks.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "workers made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the workers and returns their ledger.
    async fn stop(self) -> Ledger {
        self.done.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

async fn partitions_owned(engine: &Server) -> f64 {
    metric_value(&engine.metrics().await, "distorch_engine_partitions_owned").unwrap_or(0.0)
}

/// The commands partitions an engine owns, from `distorch_engine_partition_owned`.
async fn owned_partitions(engine: &Server) -> BTreeSet<u32> {
    engine
        .metrics()
        .await
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("distorch_engine_partition_owned{partition=\"")?;
            let (partition, value) = rest.split_once("\"} ")?;
            (value.trim() == "1").then(|| partition.parse().ok())?
        })
        .collect()
}

/// Starts a run under a chosen id as a careful client does during a failover: a 503 names
/// the run it will create, and the start is retried with that id until it is answered.
/// Returns the number of 503s seen.
async fn start_until_answered(api: String, workflow_id: String) -> usize {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut unavailable = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "start of {workflow_id} never answered"
        );
        let resp = http
            .post(format!("{api}/workflows"))
            .json(&json!({"definition": "failover", "input": {}, "workflow_id": workflow_id}))
            .send()
            .await
            .expect("the API answers");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON body");
        match status {
            200 | 201 => {
                assert_eq!(body["workflow_id"], workflow_id.as_str(), "{body}");
                return unavailable;
            }
            503 => {
                unavailable += 1;
                assert_eq!(
                    body["workflow_id"],
                    workflow_id.as_str(),
                    "a 503 to a start names the run to retry with: {body}"
                );
                let detail = body["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("Retry with"), "{detail}");
            }
            other => panic!("start of {workflow_id}: {other} {body}"),
        }
    }
}

// tansu 0.6.0 does not rebalance a group when a member dies without leaving: the engine's
// orphan watchdog (default 15 s) makes the survivor rejoin, which hands it the dead engine's
// partitions. If this fails, the panic message carries the stuck run's events.
// scripts/nextest.toml runs this test alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_way_loses_no_run_and_redispatches_no_completed_task() {
    let dir = tempdir();
    let config = cluster_config(dir.path());
    let Cluster {
        mut engine_a,
        engine_b,
        others: _others,
        api,
    } = Cluster::start(&config, &config);

    // Both engines hold a share of the partitions before the test starts, so the kill
    // takes runs away from a live owner.
    until_shared(&engine_a, &engine_b, Duration::from_secs(60)).await;
    let mut ids = start_runs(&api).await;

    let workers = Workers::spawn(&api.base, 4);
    workers.until_acked(RUNS * STEPS / 3).await;
    let orphaned = owned_partitions(&engine_a).await;
    assert!(!orphaned.is_empty(), "engine A owns partitions");
    engine_a.kill9();
    let killed = Instant::now();

    // Starts while nobody owns the dead engine's partitions: safe to retry with their id.
    // Their ids land on the dead engine's partitions, so each waits for the takeover.
    let failover_ids: Vec<String> = std::iter::repeat_with(|| uuid::Uuid::now_v7().to_string())
        .filter(|id| orphaned.contains(&partition_for(id, PARTITIONS)))
        .take(STARTS_DURING_FAILOVER)
        .collect();
    let starts: Vec<_> = failover_ids
        .iter()
        .map(|id| tokio::spawn(start_until_answered(api.base.clone(), id.clone())))
        .collect();
    let mut unavailable = 0;
    for start in starts {
        unavailable += start.await.unwrap();
    }
    assert!(
        unavailable > 0,
        "no start waited for the takeover: the retry path was not exercised"
    );
    ids.extend(failover_ids.iter().cloned());

    // Every run completes well inside the 300 s an attempt's timeout would take.
    until_all_completed(&api, &ids, killed + Duration::from_secs(200)).await;
    let ledger = workers.stop().await;
    assert_eq!(
        partitions_owned(&engine_b).await,
        f64::from(PARTITIONS),
        "the survivor owns every partition"
    );

    // A retried start never made a second run: the definition has exactly the runs started.
    let mut listed = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => format!("/workflows?definition=failover&limit=500&cursor={c}"),
            None => "/workflows?definition=failover&limit=500".to_string(),
        };
        let (status, body) = api.get(&page).await;
        assert_eq!(status, 200, "{body}");
        for row in body["items"].as_array().expect("items") {
            listed.insert(row["workflow_id"].as_str().unwrap().to_string());
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let expected: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        listed, expected,
        "runs of the definition are exactly those started"
    );

    assert!(
        ledger.violations.is_empty(),
        "tasks dispatched after their completion was acknowledged: {:?}",
        ledger.violations
    );
    // Completions in flight at the kill (4 workers x 10 tasks) may have lost their answer.
    assert!(
        ledger.completed.len() + 40 >= (RUNS + STARTS_DURING_FAILOVER) * STEPS,
        "only {} completions acknowledged",
        ledger.completed.len()
    );
    // What docs/benchmarks.md reports: SIGKILL to the first step completed on a run of the
    // dead engine's partitions (a completion sent after the kill: only the new owner can
    // answer it).
    let first = ledger
        .acks
        .iter()
        .filter(|(sent, _, run)| {
            *sent > killed && orphaned.contains(&partition_for(run, PARTITIONS))
        })
        .map(|(_, acked, _)| acked.duration_since(killed))
        .min()
        .expect("steps completed on the dead engine's runs");
    eprintln!(
        "failover: first step on the killed engine's partitions {orphaned:?} completed {:.1} s \
         after SIGKILL; {unavailable} start(s) answered 503 and were retried",
        first.as_secs_f64()
    );
}

/// An event record of the raw events topic, as the test reads it without DisTorch's
/// fencing: its run, its envelope, and whether it is stale.
struct RawEvent {
    workflow_id: String,
    seq: u64,
    envelope: Value,
    stale: bool,
}

/// Every event of the cluster's events topic, judged by the rule of docs/adr/0037 written
/// out independently: a record stamped with an epoch older than a marker before it in its
/// partition is stale; markers are left out.
async fn raw_events(prefix: &str) -> Vec<RawEvent> {
    fn epoch(value: &str) -> (u64, String) {
        let (n, owner) = value.split_once(':').expect("an epoch is <n>:<owner>");
        (n.parse().expect("epoch number"), owner.to_string())
    }
    let log = KafkaLog::connect_url(&format!("kafka://{}", common::kafka::broker()))
        .await
        .expect("connect to the broker");
    let topic = format!("{prefix}.events");
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let end = log.end_offset(&topic, p).await.expect("end offset");
        let mut next = 0;
        let mut in_force: Option<(u64, String)> = None;
        while next < end {
            let batch = log
                .read(&topic, p, next, 1000, Duration::from_secs(1))
                .await
                .expect("read");
            next = batch.last().map_or(next, |r| r.offset + 1);
            for rec in batch {
                let header = |name: &str| {
                    rec.headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| epoch(v))
                };
                if let Some(marker) = header("distorch-fence") {
                    in_force = in_force.max(Some(marker));
                    continue;
                }
                let stale = matches!(
                    (header("distorch-epoch"), &in_force),
                    (Some(mine), Some(current)) if mine < *current
                );
                let envelope: Value = serde_json::from_slice(&rec.payload).expect("an event");
                out.push(RawEvent {
                    workflow_id: envelope["workflow_id"].as_str().unwrap().to_string(),
                    seq: envelope["seq"].as_u64().unwrap(),
                    envelope,
                    stale,
                });
            }
        }
    }
    out
}

fn signal(server: &Server, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} failed");
}

// The paused engine lingers a second before it sends what it appends (librdkafka
// `linger.ms`, a real producer setting), so a SIGSTOP almost always freezes it holding a
// batch that it sends, stale, after SIGCONT. tansu 0.6.0 keeps a frozen member in the group
// past its session timeout; the survivor's orphan watchdog (15 s) takes the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_paused_past_its_session_is_fenced_and_nothing_it_writes_late_is_served() {
    let prefix = common::kafka::unique_prefix("fencing");
    let (dir, dir_a) = (tempdir(), tempdir());
    let config = config_with(dir.path(), &prefix, "");
    let config_a = config_with(
        dir_a.path(),
        &prefix,
        "[kafka]\nproperties = { \"linger.ms\" = \"1000\" }\n",
    );
    let Cluster {
        engine_a,
        engine_b,
        others: _others,
        api,
    } = Cluster::start(&config_a, &config);
    until_shared(&engine_a, &engine_b, Duration::from_secs(60)).await;
    let ids = start_runs(&api).await;

    // Each completion of the lingering engine's tasks waits for its linger: more workers.
    let workers = Workers::spawn(&api.base, 16);
    workers.until_acked(RUNS * STEPS / 5).await;

    // Freeze A until B has claimed everything, then let A go on. A freeze that happens to
    // catch A idle leaves nothing stale; freeze again while there is load.
    let mut stale = 0;
    let mut takeovers = Vec::new();
    for _ in 0..3 {
        until_shared(&engine_a, &engine_b, Duration::from_secs(90)).await;
        signal(&engine_a, "-STOP");
        let frozen = Instant::now();
        let deadline = frozen + Duration::from_secs(90);
        while owned_partitions(&engine_b).await.len() < PARTITIONS as usize {
            assert!(
                Instant::now() < deadline,
                "the running engine never took the paused one's partitions"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        takeovers.push(frozen.elapsed().as_secs_f64());
        // B has claimed every partition and handles commands under its epochs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(&engine_a, "-CONT");
        // The paused engine notices it lost its partitions and rejoins the group.
        until_shared(&engine_a, &engine_b, Duration::from_secs(90)).await;
        stale = raw_events(&prefix).await.iter().filter(|e| e.stale).count();
        if stale > 0 || workers.acks.load(Ordering::Relaxed) > RUNS * STEPS * 3 / 4 {
            break;
        }
    }
    assert!(
        stale > 0,
        "the paused engine never appended after the other one claimed its partitions: \
         the case this test is about did not happen"
    );

    until_all_completed(&api, &ids, Instant::now() + Duration::from_secs(400)).await;
    let ledger = workers.stop().await;

    // What the API serves (the projector's fold) is one line per run: consecutive sequence
    // numbers, each step completed once, and none of the stale events.
    let raw = raw_events(&prefix).await;
    let mut stale_by_run: BTreeMap<&str, Vec<&RawEvent>> = BTreeMap::new();
    for e in raw.iter().filter(|e| e.stale) {
        stale_by_run.entry(&e.workflow_id).or_default().push(e);
    }
    for id in &ids {
        let (status, history) = api.get(&format!("/workflows/{id}/history")).await;
        assert_eq!(status, 200, "{history}");
        let events = history["events"].as_array().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "run {id}: history has duplicates or gaps");
        let mut completed: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["type"] == "task_completed") {
            *completed
                .entry(e["task_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(completed.len(), STEPS, "run {id}: {completed:?}");
        assert!(
            completed.values().all(|n| *n == 1),
            "run {id}: a step completed twice: {completed:?}"
        );
        for stale in stale_by_run.get(id.as_str()).into_iter().flatten() {
            let served = &events[stale.seq as usize - 1];
            let valid = raw
                .iter()
                .any(|e| !e.stale && e.workflow_id == *id && e.envelope == stale.envelope);
            assert!(
                valid || *served != stale.envelope,
                "run {id}: the API serves an event the fenced engine wrote: {served}"
            );
        }
    }

    assert!(
        ledger.violations.is_empty(),
        "tasks dispatched after their completion was acknowledged: {:?}",
        ledger.violations
    );
    eprintln!(
        "fencing: the running engine owned every partition {takeovers:.1?} s after SIGSTOP; \
         {stale} stale event(s) appended by the paused engine, none served; {} runs with one \
         line of events",
        ids.len()
    );
}
