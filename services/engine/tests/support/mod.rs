//! An engine on the embedded log, driven by appending commands and watched through its
//! topics: what the engine's integration tests share.

#![allow(dead_code)] // each test binary uses its own part

use distorch_domain::command::{Command, CommandEnvelope};
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::{CommandId, WorkflowId};
use distorch_engine::{Engine, EngineConfig, EngineError, Metrics};
use distorch_eventlog::{EventLog, NewRecord, partition_for};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for something the engine should do.
const PATIENCE: Duration = Duration::from_secs(20);

/// A command record keyed by `key`; `seed` makes its id (commands with one seed are one
/// command to the engine).
pub fn command(key: &str, seed: &str, command: Command) -> NewRecord {
    let env = CommandEnvelope {
        id: CommandId::derived(seed),
        reply_to: None,
        command,
    };
    NewRecord::new(
        Topics::default().commands(),
        key,
        serde_json::to_vec(&env).unwrap(),
    )
}

/// Registers `source` (a definition as JSON) under its `name`.
pub fn register(source: serde_json::Value) -> NewRecord {
    let name = source["name"]
        .as_str()
        .expect("a definition has a name")
        .to_owned();
    command(
        &format!("definition/{name}"),
        &format!("register/{name}"),
        Command::RegisterDefinition { source },
    )
}

/// Starts run `run` of the latest version of `definition`, published under `key` (the run's
/// id, unless a test wants it elsewhere).
pub fn start(key: &str, run: WorkflowId, definition: &str, input: serde_json::Value) -> NewRecord {
    command(
        key,
        &format!("start/{run}"),
        Command::StartWorkflow {
            workflow_id: run,
            definition: definition.into(),
            version: None,
            input,
            idempotency_key: None,
            parent: None,
        },
    )
}

pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), EngineError>>,
}

/// Starts an engine with `partitions` command partitions on `log` (creating the topics).
pub async fn start_engine(log: Arc<dyn EventLog>, partitions: u32) -> Running {
    let config = EngineConfig {
        partitions,
        ..EngineConfig::default()
    };
    let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
    let engine = Engine::new(
        distorch_engine::fenced(log, &Topics::default()),
        Topics::default(),
        config,
        metrics,
    );
    engine.ensure_topics().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Every offer of `run` on `tasks.<queue>`.
pub async fn offers(
    log: &dyn EventLog,
    partitions: u32,
    queue: &str,
    run: WorkflowId,
) -> Vec<TaskDispatch> {
    let topic = Topics::default().tasks(queue);
    let p = partition_for(&run.to_string(), partitions);
    match log.read(&topic, p, 0, 10_000, Duration::ZERO).await {
        Ok(records) => records
            .iter()
            .map(|r| serde_json::from_slice::<TaskDispatch>(&r.payload).unwrap())
            .filter(|d| d.workflow_id == run)
            .collect(),
        Err(_) => Vec::new(), // the queue's topic does not exist yet
    }
}

/// Waits until an offer of `run` on `tasks.<queue>` satisfies `pred`, and returns it.
pub async fn wait_for_offer(
    log: &dyn EventLog,
    partitions: u32,
    queue: &str,
    run: WorkflowId,
    what: &str,
    pred: impl Fn(&TaskDispatch) -> bool,
) -> TaskDispatch {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(d) = offers(log, partitions, queue, run)
            .await
            .into_iter()
            .find(&pred)
        {
            return d;
        }
        assert!(Instant::now() < deadline, "no offer of {what} for {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of `run` recorded so far, in order.
pub async fn events(log: &dyn EventLog, partitions: u32, run: WorkflowId) -> Vec<Event> {
    let p = partition_for(&run.to_string(), partitions);
    log.read(&Topics::default().events(), p, 0, 10_000, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice::<EventEnvelope>(&r.payload).ok())
        .filter(|e| e.workflow_id == run)
        .map(|e| e.event)
        .collect()
}

/// Waits until some event of `run` satisfies `pred`, and returns it.
pub async fn wait_for_event(
    log: &dyn EventLog,
    partitions: u32,
    run: WorkflowId,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(e) = events(log, partitions, run).await.into_iter().find(&pred) {
            return e;
        }
        assert!(Instant::now() < deadline, "{run} never recorded {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
