//! The saga processor over the real embedded log: an event that calls for a command gets it,
//! and a stop commits every event handled, so a restart does not deliver them again.

use distorch_domain::WorkflowId;
use distorch_domain::command::{Command, CommandEnvelope};
use distorch_domain::event::{Event, EventEnvelope};
use distorch_domain::topics::Topics;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_saga::{Saga, SagaConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 2;

fn event(id: WorkflowId, seq: u64, event: Event) -> NewRecord {
    let env = EventEnvelope {
        workflow_id: id,
        seq,
        at_ms: 1_700_000_000_000,
        command_id: None,
        v: 1,
        event,
    };
    NewRecord::new(
        Topics::default().events(),
        id.to_string(),
        serde_json::to_vec(&env).expect("encode"),
    )
}

/// Every command on the commands topic so far.
async fn commands(log: &SqliteLog) -> Vec<CommandEnvelope> {
    let topic = Topics::default().commands();
    let mut all = Vec::new();
    for p in 0..PARTITIONS {
        for r in log
            .read(&topic, p, 0, 1000, Duration::ZERO)
            .await
            .expect("read")
        {
            all.push(serde_json::from_slice(&r.payload).expect("a command"));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_saga_has_committed_every_event_it_handled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let topics = Topics::default();
    for topic in [topics.events(), topics.commands()] {
        log.create_topic(&topic, PARTITIONS).await.expect("topic");
    }
    let parent = WorkflowId(uuid::Uuid::new_v4());
    let child = WorkflowId(uuid::Uuid::new_v4());
    log.append(vec![
        event(parent, 1, Event::WorkflowPaused),
        event(
            parent,
            2,
            Event::ChildWorkflowRequested {
                step_key: "invoice".into(),
                child_id: child,
                definition: "invoicing".into(),
                version: None,
                input: json!({"order": 7}),
            },
        ),
        event(parent, 3, Event::WorkflowResumed),
    ])
    .await
    .expect("append");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let saga = Saga::new(log.clone(), topics.clone(), SagaConfig::default());
    let running = tokio::spawn(saga.run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    while commands(&log).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the saga never asked for the child"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // This normally stops the saga inside its first 250 ms commit interval, so what is
    // committed below is the commit at shutdown (without it the test fails).
    stop.send(()).expect("saga running");
    running.await.expect("saga task").expect("saga");

    let sent = commands(&log).await;
    assert_eq!(sent.len(), 1, "one command for one request: {sent:?}");
    match &sent[0].command {
        Command::StartWorkflow {
            workflow_id,
            parent: Some(p),
            ..
        } => {
            assert_eq!(*workflow_id, child);
            assert_eq!(p.workflow_id, parent);
        }
        other => panic!("expected the child's start, got {other:?}"),
    }
    for p in 0..PARTITIONS {
        let end = log.end_offset(&topics.events(), p).await.expect("end");
        let committed = log
            .committed("saga", &topics.events(), p)
            .await
            .expect("committed");
        assert_eq!(committed.unwrap_or(0), end, "partition {p}");
    }
}
