//! A command published under a key other than its run's (a producer outside DisTorch keyed
//! it by something else) lands on the wrong partition. The engine must forward it to the
//! run's partition and apply it there: forwarded, never dropped.

mod support;

use distorch_domain::WorkflowId;
use distorch_domain::event::Event;
use distorch_domain::topics::Topics;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, partition_for};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{register, start, start_engine, wait_for_event};

const PARTITIONS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_the_wrong_partition_is_forwarded_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let topics = Topics::default();
    let engine = start_engine(log.clone(), PARTITIONS).await;

    let run = WorkflowId::from_idempotency_key("fwd", "1");
    let home = partition_for(&run.to_string(), PARTITIONS);
    let wrong_key = (0..)
        .map(|i| format!("order-{i}"))
        .find(|k| partition_for(k, PARTITIONS) != home)
        .unwrap();
    let definition = json!({"name": "fwd", "steps": [{"id": "a", "task": "t"}]});
    log.append(vec![
        register(definition),
        start(&wrong_key, run, "fwd", json!({"order": 7})),
    ])
    .await
    .unwrap();

    wait_for_event(log.as_ref(), PARTITIONS, run, "the misplaced start", |e| {
        matches!(e, Event::WorkflowStarted { .. })
    })
    .await;
    engine.stop().await;

    // The forwarded copy carries where it came from.
    let commands = log
        .read(&topics.commands(), home, 0, 100, Duration::ZERO)
        .await
        .unwrap();
    let forwarded = commands
        .iter()
        .find(|r| r.key == run.to_string())
        .expect("the command was re-published under the run's key");
    assert!(
        forwarded.headers.iter().any(|(k, _)| k == "forwarded-from"),
        "{:?}",
        forwarded.headers
    );
}
