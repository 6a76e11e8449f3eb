//! The live feed on its own, over the SQLite log and store: a subscriber that falls far
//! behind the shared tail still gets every event once, in order; a run's stream joins the
//! stored history to the log without a gap; a global stream resumes from its position.

use distorch_api::feed::{Feed, Position};
use distorch_domain::WorkflowId;
use distorch_domain::event::{Event, EventEnvelope};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_store::ReadStore;
use distorch_store::sqlite::SqliteStore;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "distorch.events";
/// Guard against a hung feed; nothing here depends on timing.
const PATIENCE: Duration = Duration::from_secs(30);

fn envelope(wf: WorkflowId, seq: u64) -> EventEnvelope {
    let event = if seq == 1 {
        Event::WorkflowStarted {
            definition: "d".into(),
            version: 1,
            input: json!({}),
            idempotency_key: None,
            parent: None,
        }
    } else {
        Event::SignalReceived {
            name: "tick".into(),
            payload: json!(seq),
        }
    };
    EventEnvelope {
        workflow_id: wf,
        seq,
        at_ms: 1_700_000_000_000,
        command_id: None,
        v: 1,
        event,
    }
}

fn record(e: &EventEnvelope) -> NewRecord {
    NewRecord::new(
        TOPIC,
        e.workflow_id.to_string(),
        serde_json::to_vec(e).unwrap(),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    log: Arc<dyn EventLog>,
    store: Arc<dyn ReadStore>,
    feed: Feed,
}

async fn fixture(partitions: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let store: Arc<dyn ReadStore> = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let feed = Feed::start(
        log.clone(),
        store.clone(),
        TOPIC.into(),
        partitions,
        "projector".into(),
    )
    .await
    .unwrap();
    Fixture {
        _dir: dir,
        log,
        store,
        feed,
    }
}

async fn next<T>(stream: &mut distorch_api::feed::EventStream<T>) -> T {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_far_behind_the_tail_still_gets_every_event_in_order() {
    let f = fixture(1).await;
    let wf = WorkflowId(uuid::Uuid::from_u128(1));
    let mut stream = f.feed.all_events(None).await.unwrap();
    // One append per event: far more tail batches than the channel keeps, while the
    // subscriber reads nothing.
    for seq in 1..=500 {
        f.log
            .append(vec![record(&envelope(wf, seq))])
            .await
            .unwrap();
    }
    for seq in 1..=500 {
        let (position, event) = next(&mut stream).await;
        assert_eq!(event.envelope.seq, seq);
        assert_eq!(position, Position(vec![event.offset + 1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stream_joins_the_stored_history_to_the_log_after_the_seq_asked_for() {
    let f = fixture(2).await;
    let wf = WorkflowId(uuid::Uuid::from_u128(2));
    let events: Vec<EventEnvelope> = (1..=6).map(|seq| envelope(wf, seq)).collect();
    // 1..=4 are in the log and the store (no projector offsets committed: the feed reads
    // the partition from its start and drops what the store already gave); 5 and 6 come later.
    f.log
        .append(events[..4].iter().map(record).collect())
        .await
        .unwrap();
    f.store.apply(&events[..4]).await.unwrap();

    let mut stream = f.feed.run_events(wf, 2).await.unwrap();
    f.log
        .append(events[4..].iter().map(record).collect())
        .await
        .unwrap();
    let seqs = [
        next(&mut stream).await.seq,
        next(&mut stream).await.seq,
        next(&mut stream).await.seq,
        next(&mut stream).await.seq,
    ];
    assert_eq!(seqs, [3, 4, 5, 6], "after seq 2, each once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_stream_resumes_from_the_position_of_its_last_event() {
    let f = fixture(4).await;
    let runs: Vec<WorkflowId> = (10..14)
        .map(|n| WorkflowId(uuid::Uuid::from_u128(n)))
        .collect();
    let mut stream = f.feed.all_events(None).await.unwrap();
    for seq in 1..=3 {
        let batch = runs.iter().map(|wf| record(&envelope(*wf, seq))).collect();
        f.log.append(batch).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let (position, event) = next(&mut stream).await;
        seen.push((event.envelope.workflow_id, event.envelope.seq));
        last = Some(position);
    }
    drop(stream);

    let mut resumed = f.feed.all_events(last).await.unwrap();
    for _ in 5..12 {
        let (_, event) = next(&mut resumed).await;
        seen.push((event.envelope.workflow_id, event.envelope.seq));
    }
    seen.sort();
    let mut all: Vec<_> = runs
        .iter()
        .flat_map(|wf| (1..=3).map(move |seq| (*wf, seq)))
        .collect();
    all.sort();
    assert_eq!(seen, all, "every event once across the resume");
}

#[tokio::test]
async fn a_run_the_store_does_not_know_is_not_found() {
    let f = fixture(1).await;
    let err = match f
        .feed
        .run_events(WorkflowId(uuid::Uuid::from_u128(9)), 0)
        .await
    {
        Ok(_) => panic!("a stream for an unknown run"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("no workflow run"), "{err}");
}
