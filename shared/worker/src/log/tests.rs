//! The log source against a fake engine on the embedded log: the protocol (StartTask before
//! the handler, results as commands, replies), the offsets, and redelivery. The real engine
//! on a real broker is `services/distorch/tests/kafka_worker_e2e.rs`.

use super::*;
use crate::{TaskError, Worker};
use distorch_domain::WorkflowId;
use distorch_domain::command::{Answer, CommandEnvelope, Reply};
use distorch_domain::topics::TaskDispatch;
use distorch_eventlog::sqlite::SqliteLog;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PREFIX: &str = "t";
const QUEUE: &str = "q";
const PARTITIONS: u32 = 2;

type Attempt = (String, u32);

/// What the fake engine was told, and how it should answer.
#[derive(Default)]
struct Engine {
    /// Attempts a `StartTask` is rejected for (superseded).
    stale: HashSet<Attempt>,
    running: HashSet<Attempt>,
    /// Command ids applied, with their answer: a duplicate is answered again.
    applied: HashMap<String, Outcome>,
    /// Replies to swallow (the command is applied, the answer lost).
    lose_replies: usize,
    starts: Vec<(Attempt, String)>,
    completed: Vec<(Attempt, Value)>,
    failed: Vec<(Attempt, ErrorInfo)>,
    checkpoints: Vec<(Attempt, Option<Value>)>,
}

impl Engine {
    fn decide(&mut self, command: &Command) -> Outcome {
        let conflict = |why: &str| Outcome::Rejected {
            rejection: Rejection::Conflict(why.to_owned()),
        };
        let ok = || Outcome::Accepted {
            seq: 1,
            result: Answer::Noted,
        };
        match command {
            Command::StartTask {
                task_id,
                attempt,
                worker_id,
                ..
            } => {
                let key = (task_id.0.clone(), *attempt);
                if self.stale.contains(&key) {
                    return conflict("superseded");
                }
                if !self.running.insert(key.clone()) {
                    return conflict("already running");
                }
                self.starts.push((key, worker_id.clone()));
                ok()
            }
            Command::Heartbeat {
                task_id,
                attempt,
                checkpoint,
            } => {
                let key = (task_id.0.clone(), *attempt);
                if self.stale.contains(&key) || !self.running.contains(&key) {
                    return conflict("superseded");
                }
                self.checkpoints.push((key, checkpoint.clone()));
                ok()
            }
            Command::CompleteTask {
                task_id,
                attempt,
                output,
                ..
            } => {
                let key = (task_id.0.clone(), *attempt);
                if !self.running.remove(&key) {
                    return conflict("not running");
                }
                self.completed.push((key, output.clone()));
                ok()
            }
            Command::FailTask {
                task_id,
                attempt,
                error,
                ..
            } => {
                let key = (task_id.0.clone(), *attempt);
                if !self.running.remove(&key) {
                    return conflict("not running");
                }
                self.failed.push((key, error.clone()));
                ok()
            }
            other => Outcome::Rejected {
                rejection: Rejection::Invalid(format!("unexpected {}", other.name())),
            },
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    topics: Topics,
    engine: Arc<Mutex<Engine>>,
    engine_task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.engine_task.abort();
    }
}

impl Harness {
    async fn new() -> Self {
        let h = Self::without_task_topic().await;
        h.log
            .create_topic(&h.topics.tasks(QUEUE), PARTITIONS)
            .await
            .unwrap();
        h
    }

    /// As the services leave it before the first task of the queue.
    async fn without_task_topic() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
        let topics = Topics::with_prefix(PREFIX);
        for topic in [topics.commands(), topics.replies()] {
            log.create_topic(&topic, PARTITIONS).await.unwrap();
        }
        let engine = Arc::new(Mutex::new(Engine::default()));
        let engine_task = tokio::spawn(run_engine(log.clone(), topics.clone(), engine.clone()));
        Self {
            _dir: dir,
            log,
            topics,
            engine,
            engine_task,
        }
    }

    async fn source(&self) -> LogSource {
        LogSource::builder()
            .topic_prefix(PREFIX)
            .reply_timeout(Duration::from_millis(300))
            .open(self.log.clone())
            .await
            .unwrap()
    }

    /// Dispatches attempt `attempt` of a new task with `input`; returns its task id.
    async fn dispatch(&self, attempt: u32, input: Value) -> String {
        let workflow = WorkflowId::new_random(uuid::Uuid::new_v4());
        let dispatch = TaskDispatch {
            task_id: TaskId::new(workflow, 1),
            workflow_id: workflow,
            step_id: "s".into(),
            task: "double".into(),
            queue: QUEUE.into(),
            attempt,
            input,
            checkpoint: None,
            heartbeat_timeout_ms: Some(600),
        };
        let record = NewRecord::new(
            self.topics.tasks(QUEUE),
            workflow.to_string(),
            serde_json::to_vec(&dispatch).unwrap(),
        );
        self.log.append(vec![record]).await.unwrap();
        dispatch.task_id.0
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap()
    }

    async fn until(&self, what: &str, done: impl Fn(&Engine) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.engine()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the workers' group has committed every record of the queue.
    async fn all_committed(&self) -> bool {
        let topic = self.topics.tasks(QUEUE);
        for p in 0..PARTITIONS {
            let end = self.log.end_offset(&topic, p).await.unwrap();
            let committed = self
                .log
                .committed(&format!("workers.{QUEUE}"), &topic, p)
                .await
                .unwrap()
                .unwrap_or(0);
            if committed != end {
                return false;
            }
        }
        true
    }
}

/// Reads every commands partition and answers as the engine would.
async fn run_engine(log: Arc<dyn EventLog>, topics: Topics, engine: Arc<Mutex<Engine>>) {
    let mut next = vec![0u64; PARTITIONS as usize];
    loop {
        let mut idle = true;
        for p in 0..PARTITIONS {
            let records = log
                .read(&topics.commands(), p, next[p as usize], 100, Duration::ZERO)
                .await
                .unwrap();
            let mut replies = Vec::new();
            for record in records {
                idle = false;
                next[p as usize] = record.offset + 1;
                let envelope: CommandEnvelope = serde_json::from_slice(&record.payload).unwrap();
                let mut engine = engine.lock().unwrap();
                let outcome = match engine.applied.get(&envelope.id.0) {
                    Some(outcome) => outcome.clone(),
                    None => {
                        let outcome = engine.decide(&envelope.command);
                        engine
                            .applied
                            .insert(envelope.id.0.clone(), outcome.clone());
                        outcome
                    }
                };
                if engine.lose_replies > 0 {
                    engine.lose_replies -= 1;
                    continue;
                }
                if let Some(to) = envelope.reply_to {
                    let reply = Reply {
                        command_id: envelope.id,
                        outcome,
                    };
                    replies.push(NewRecord::new(
                        topics.replies(),
                        to,
                        serde_json::to_vec(&reply).unwrap(),
                    ));
                }
            }
            if !replies.is_empty() {
                log.append(replies).await.unwrap();
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn doubling_worker(source: LogSource, calls: Arc<AtomicU32>) -> crate::WorkerHandle {
    Worker::with_source(source, QUEUE)
        .worker_id("w1")
        .concurrency(4)
        .handler("double", move |ctx| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let n = ctx.input["n"].as_i64().unwrap_or_default();
                if n < 0 {
                    return Err(TaskError::fatal("negative", "n must not be negative"));
                }
                Ok(json!({ "doubled": n * 2 }))
            }
        })
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_only_after_an_accepted_start_and_their_offsets_are_committed() {
    let h = Harness::new().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(h.dispatch(1, json!({ "n": n })).await);
    }
    let failing = h.dispatch(1, json!({ "n": -1 })).await;
    let stale = h.dispatch(3, json!({ "n": 100 })).await;
    h.engine().stale.insert((stale.clone(), 3));

    let calls = Arc::new(AtomicU32::new(0));
    let worker = doubling_worker(h.source().await, calls.clone());
    h.until("six completions and one failure", |e| {
        e.completed.len() == 6 && e.failed.len() == 1
    })
    .await;
    worker.shutdown().await;
    assert!(h.all_committed().await, "settled records are committed");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        7,
        "one call per accepted attempt"
    );

    let engine = h.engine();
    for (n, id) in ids.iter().enumerate() {
        let output = engine
            .completed
            .iter()
            .find(|((task, _), _)| task == id)
            .map(|(_, output)| output.clone());
        assert_eq!(
            output,
            Some(json!({ "doubled": n as i64 * 2 })),
            "task {id}"
        );
    }
    let ((task, attempt), error) = &engine.failed[0];
    assert_eq!((task, *attempt), (&failing, 1));
    assert_eq!((error.kind.as_str(), error.retryable), ("negative", false));
    assert!(
        engine.starts.iter().all(|(_, worker)| worker == "w1"),
        "started for the worker's id"
    );
    assert!(
        !engine.starts.iter().any(|((task, _), _)| *task == stale),
        "a rejected start never runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_reply_is_lost_is_asked_again_and_applied_once() {
    let h = Harness::new().await;
    h.engine().lose_replies = 1;
    let id = h.dispatch(1, json!({ "n": 21 })).await;
    let calls = Arc::new(AtomicU32::new(0));
    let worker = doubling_worker(h.source().await, calls.clone());
    h.until("the completion", |e| e.completed.len() == 1).await;
    worker.shutdown().await;
    assert!(h.all_committed().await);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let engine = h.engine();
    assert_eq!(engine.starts.len(), 1, "the retry reused the command id");
    assert_eq!(engine.completed[0], ((id, 1), json!({ "doubled": 42 })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_checkpoints_and_a_superseded_attempt_is_dropped() {
    let h = Harness::new().await;
    let id = h.dispatch(1, json!({})).await;
    let (beat_tx, mut beat_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::with_source(h.source().await, QUEUE)
        .handler("double", move |ctx| {
            let beat_tx = beat_tx.clone();
            async move {
                let current = ctx.heartbeat(Some(json!({ "progress": 1 }))).await;
                let _ = beat_tx.send(current);
                // Keeps working until told the attempt is stale.
                while ctx.heartbeat(None).await {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = beat_tx.send(false);
                std::future::pending::<()>().await;
                Ok(json!("unreachable"))
            }
        })
        .spawn()
        .unwrap();
    assert_eq!(
        beat_rx.recv().await,
        Some(true),
        "the first heartbeat is current"
    );
    h.engine().stale.insert((id.clone(), 1));
    assert_eq!(
        beat_rx.recv().await,
        Some(false),
        "a stale heartbeat says stop"
    );
    // The superseded attempt is settled, so its offset gets committed while the worker runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.all_committed().await {
        assert!(
            Instant::now() < deadline,
            "the stale attempt was never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    let engine = h.engine();
    assert_eq!(
        engine.checkpoints.first(),
        Some(&((id, 1), Some(json!({ "progress": 1 }))))
    );
    assert!(engine.completed.is_empty() && engine.failed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gone_mid_task_leaves_its_record_to_the_next_one() {
    let h = Harness::new().await;
    let id = h.dispatch(1, json!({ "n": 1 })).await;

    // Worker A runs in its own runtime, which is shut down mid-task like a crashed process.
    let source = h.source().await;
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let crashed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let worker = Worker::with_source(source, QUEUE)
                .handler("double", move |_ctx| {
                    let started_tx = started_tx.clone();
                    async move {
                        let _ = started_tx.send(());
                        std::future::pending::<()>().await;
                        Ok(json!("never"))
                    }
                })
                .build()
                .unwrap();
            worker.run(std::future::pending()).await;
        });
        let _ = kill_rx.recv();
        rt.shutdown_timeout(Duration::from_secs(5));
    });
    tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("worker A started the task");
    kill_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || crashed.join())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !h.all_committed().await,
        "the running attempt's record is not committed"
    );

    // Worker B gets the record again; the engine refuses the second start (the attempt is
    // running, and times out on a real engine), so B settles it without running it.
    let calls = Arc::new(AtomicU32::new(0));
    let worker = doubling_worker(h.source().await, calls.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.all_committed().await {
        assert!(
            Instant::now() < deadline,
            "worker B never settled the record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let engine = h.engine();
    assert_eq!(engine.starts.len(), 1);
    assert_eq!(engine.starts[0].0, (id, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_its_task_topic_and_never_creates_topics() {
    let h = Harness::without_task_topic().await;
    let calls = Arc::new(AtomicU32::new(0));
    let worker = doubling_worker(h.source().await, calls.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(
            h.log.partitions(&h.topics.tasks(QUEUE)).await,
            Err(LogError::UnknownTopic(_))
        ),
        "the worker left the topic to the engine"
    );
    // The engine creates it with the first task of the queue.
    h.log
        .create_topic(&h.topics.tasks(QUEUE), PARTITIONS)
        .await
        .unwrap();
    let id = h.dispatch(1, json!({ "n": 4 })).await;
    h.until("the completion", |e| e.completed.len() == 1).await;
    worker.shutdown().await;
    assert_eq!(h.engine().completed[0], ((id, 1), json!({ "doubled": 8 })));
}

#[tokio::test]
async fn a_source_needs_the_services_topics() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let err = LogSource::builder()
        .topic_prefix("nowhere")
        .open(log.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"nowhere.commands\" does not exist"),
        "{err}"
    );
    assert!(matches!(
        log.partitions("nowhere.commands").await,
        Err(LogError::UnknownTopic(_))
    ));
    let err = LogSource::builder()
        .topic_prefix("")
        .open(log)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
