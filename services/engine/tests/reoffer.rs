//! On Kafka the engine appends an attempt's `TaskScheduled` event and its `tasks.<queue>`
//! offer in two produce requests. An engine killed between them leaves a log with the event
//! and without the offer, and no worker would ever see the attempt. The engine that takes
//! the partition over must offer every waiting attempt again.
//!
//! The test builds exactly that log: it runs an engine until the offer exists, then copies
//! every topic but `tasks.*` into a fresh log and starts a second engine on it.

use distorch_domain::command::{Command, CommandEnvelope};
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::{CommandId, WorkflowId};
use distorch_engine::{Engine, EngineConfig, Metrics};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord, partition_for};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 2;

fn command(key: &str, command: Command) -> NewRecord {
    let env = CommandEnvelope {
        id: CommandId::derived(key),
        reply_to: None,
        command,
    };
    NewRecord::new(
        Topics::default().commands(),
        key,
        serde_json::to_vec(&env).unwrap(),
    )
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), distorch_engine::EngineError>>,
}

async fn start_engine(log: Arc<dyn EventLog>) -> Running {
    let config = EngineConfig {
        partitions: PARTITIONS,
        ..EngineConfig::default()
    };
    let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
    let engine = Engine::new(log, Topics::default(), config, metrics);
    engine.ensure_topics().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Every offer on `tasks.<queue>` of the run's partition.
async fn offers(log: &dyn EventLog, queue: &str, run: WorkflowId) -> Vec<TaskDispatch> {
    let topic = Topics::default().tasks(queue);
    let p = partition_for(&run.to_string(), PARTITIONS);
    match log.read(&topic, p, 0, 1_000, Duration::ZERO).await {
        Ok(records) => records
            .iter()
            .map(|r| serde_json::from_slice::<TaskDispatch>(&r.payload).unwrap())
            .filter(|d| d.workflow_id == run)
            .collect(),
        Err(_) => Vec::new(), // the queue's topic does not exist yet
    }
}

async fn wait_for_offer(log: &dyn EventLog, queue: &str, run: WorkflowId) -> Vec<TaskDispatch> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = offers(log, queue, run).await;
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no offer for {run} on tasks.{queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies every record of `topic` from `from` to `to`, partition by partition, in order.
async fn copy_topic(from: &dyn EventLog, to: &dyn EventLog, topic: &str) -> usize {
    let mut copied = 0;
    for p in 0..from.partitions(topic).await.unwrap() {
        let records = from
            .read(topic, p, 0, 10_000, Duration::ZERO)
            .await
            .unwrap();
        copied += records.len();
        let batch = records
            .into_iter()
            .map(|r| NewRecord {
                topic: topic.to_string(),
                key: r.key,
                headers: r.headers,
                payload: r.payload,
            })
            .collect::<Vec<_>>();
        if !batch.is_empty() {
            to.append(batch).await.unwrap();
        }
    }
    copied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_offer_was_lost_is_offered_again_by_the_next_engine() {
    let dir = tempfile::tempdir().unwrap();
    let first: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("a.db")).unwrap());
    let topics = Topics::default();

    let run = WorkflowId::from_idempotency_key("reoffer", "1");
    let definition = json!({
        "name": "reoffer",
        "steps": [{"id": "charge", "task": "charge", "queue": "payments", "input": ".input"}]
    });
    let engine = start_engine(first.clone()).await;
    first
        .append(vec![
            command(
                "definition/reoffer",
                Command::RegisterDefinition { source: definition },
            ),
            command(
                &run.to_string(),
                Command::StartWorkflow {
                    workflow_id: run,
                    definition: "reoffer".into(),
                    version: None,
                    input: json!({"order": 7}),
                    idempotency_key: None,
                    parent: None,
                },
            ),
        ])
        .await
        .unwrap();
    let original = wait_for_offer(first.as_ref(), "payments", run).await;
    engine.stop().await;
    assert_eq!(original.len(), 1);

    // The log as a crash between the two produce requests leaves it: events, no offer.
    let second: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("b.db")).unwrap());
    distorch_engine::ensure_topics(second.as_ref(), &topics, PARTITIONS)
        .await
        .unwrap();
    for topic in [topics.definitions(), topics.commands(), topics.events()] {
        copy_topic(first.as_ref(), second.as_ref(), &topic).await;
    }
    assert!(offers(second.as_ref(), "payments", run).await.is_empty());

    let engine = start_engine(second.clone()).await;
    let again = wait_for_offer(second.as_ref(), "payments", run).await;
    engine.stop().await;
    assert_eq!(
        again, original,
        "the new offer is the attempt the lost one described"
    );
}
