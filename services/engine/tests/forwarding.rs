//! A command published under a key other than its run's (a producer outside DisTorch keyed
//! it by something else) lands on the wrong partition. The engine must forward it to the
//! run's partition and apply it there: forwarded, never dropped.

use distorch_domain::command::{Command, CommandEnvelope};
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::topics::Topics;
use distorch_domain::{CommandId, WorkflowId};
use distorch_engine::{Engine, EngineConfig, Metrics};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord, partition_for};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 4;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_on_the_wrong_partition_is_forwarded_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let topics = Topics::default();
    let config = EngineConfig {
        partitions: PARTITIONS,
        ..EngineConfig::default()
    };
    let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
    let engine = Engine::new(log.clone(), topics.clone(), config, metrics);
    engine.ensure_topics().await.unwrap();

    let run = WorkflowId::from_idempotency_key("fwd", "1");
    let home = partition_for(&run.to_string(), PARTITIONS);
    let wrong_key = (0..)
        .map(|i| format!("order-{i}"))
        .find(|k| partition_for(k, PARTITIONS) != home)
        .unwrap();
    let definition = json!({"name": "fwd", "steps": [{"id": "a", "task": "t"}]});
    log.append(vec![
        command(
            "definition/fwd",
            Command::RegisterDefinition { source: definition },
        ),
        command(
            &wrong_key,
            Command::StartWorkflow {
                workflow_id: run,
                definition: "fwd".into(),
                version: None,
                input: json!({"order": 7}),
                idempotency_key: None,
                parent: None,
            },
        ),
    ])
    .await
    .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(engine.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let events = log
            .read(&topics.events(), home, 0, 100, Duration::from_millis(200))
            .await
            .unwrap();
        let found = events.iter().find_map(|r| {
            let env: EventEnvelope = serde_json::from_slice(&r.payload).ok()?;
            (env.workflow_id == run && matches!(env.event, Event::WorkflowStarted { .. }))
                .then_some(env)
        });
        if let Some(env) = found {
            break env;
        }
        assert!(
            Instant::now() < deadline,
            "the misplaced start was never applied"
        );
    };
    assert_eq!(started.seq, 1);
    let _ = stop.send(());
    running.await.unwrap().unwrap();

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
