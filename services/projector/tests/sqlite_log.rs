//! The projector over the real embedded log and store: records in, read models out,
//! offsets committed, bad records skipped, restarts resume where the last commit left off.

use distorch_domain::WorkflowId;
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope};
use distorch_domain::topics::Topics;
use distorch_domain::view::WorkflowView;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_projector::{Projector, ProjectorConfig, ProjectorStats};
use distorch_store::ReadStore;
use distorch_store::sqlite::SqliteStore;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

fn run_events(id: WorkflowId, from_seq: u64, to_seq: u64) -> Vec<EventEnvelope> {
    (from_seq..=to_seq)
        .map(|seq| EventEnvelope {
            workflow_id: id,
            seq,
            at_ms: 1_700_000_000_000 + seq as i64,
            command_id: None,
            v: 1,
            event: match seq {
                1 => Event::WorkflowStarted {
                    definition: "orders".into(),
                    version: 1,
                    input: json!({"id": id.to_string()}),
                    idempotency_key: None,
                    parent: None,
                },
                s if s % 2 == 0 => Event::WorkflowPaused,
                _ => Event::WorkflowResumed,
            },
        })
        .collect()
}

fn record(topics: &Topics, e: &EventEnvelope) -> NewRecord {
    NewRecord::new(
        topics.events(),
        e.workflow_id.to_string(),
        serde_json::to_vec(e).expect("encode"),
    )
}

fn fold(events: &[EventEnvelope]) -> WorkflowView {
    let mut view = WorkflowView::start(&events[0]).expect("start");
    events[1..].iter().for_each(|e| view.apply(e));
    view
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), distorch_projector::ProjectorError>>,
    stats: ProjectorStats,
}

fn spawn(log: &Arc<SqliteLog>, store: &Arc<SqliteStore>, topics: &Topics) -> Running {
    let projector = Projector::new(
        log.clone(),
        store.clone(),
        topics.clone(),
        ProjectorConfig {
            batch: 7,
            ..ProjectorConfig::default()
        },
    );
    let stats = projector.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, task, stats }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("join")
            .expect("projector ran cleanly");
    }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_the_log_into_the_store_and_resumes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let store = Arc::new(SqliteStore::open(dir.path().join("read.db")).expect("store"));
    let topics = Topics::default();

    // Started before the topics exist: it must wait for them, not fail.
    let projector = spawn(&log, &store, &topics);
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.create_topic(&topics.events(), 4)
        .await
        .expect("events topic");
    log.create_topic(&topics.definitions(), 1)
        .await
        .expect("definitions topic");

    let a = WorkflowId(uuid::Uuid::new_v4());
    let b = WorkflowId(uuid::Uuid::new_v4());
    let (a_events, b_events) = (run_events(a, 1, 10), run_events(b, 1, 5));
    let definition = DefinitionRegistered {
        name: "orders".into(),
        command_id: None,
        version: 1,
        at_ms: 1,
        source: json!({"name": "orders", "description": "take orders"}),
        v: 1,
    };
    let mut records: Vec<NewRecord> = Vec::new();
    records.push(NewRecord::new(
        topics.definitions(),
        "orders",
        serde_json::to_vec(&definition).expect("encode"),
    ));
    records.extend(a_events.iter().chain(&b_events).map(|e| record(&topics, e)));
    // A broken record in the middle of run a's partition must not stall it.
    records.insert(
        4,
        NewRecord::new(topics.events(), a.to_string(), b"{not json".to_vec()),
    );
    log.append(records).await.expect("append");

    assert!(store.wait_for_seq(a, 10, WAIT).await.expect("wait a"));
    assert!(store.wait_for_seq(b, 5, WAIT).await.expect("wait b"));
    assert!(
        store
            .wait_for_definition("orders", 1, WAIT)
            .await
            .expect("wait def")
    );
    assert_eq!(store.workflow(a).await.expect("a"), Some(fold(&a_events)));
    assert_eq!(store.workflow(b).await.expect("b"), Some(fold(&b_events)));
    assert_eq!(store.history(a).await.expect("history"), a_events);

    let stats = projector.stats.clone();
    eventually("the undecodable record to be counted", || {
        stats.undecodable_records() == 1
    })
    .await;
    assert_eq!(stats.applied_events(), 15);
    assert_eq!(stats.applied_definitions(), 1);
    eventually("lag to drain", || stats.events_behind() == 0).await;
    assert_eq!(stats.seconds_behind(), 0.0);
    projector.stop().await;

    // Everything applied is committed: a restarted projector only sees the new records.
    for p in 0..4 {
        let end = log.end_offset(&topics.events(), p).await.expect("end");
        let committed = log
            .committed("projector", &topics.events(), p)
            .await
            .expect("committed");
        assert_eq!(committed.unwrap_or(0), end, "partition {p}");
    }
    let more = run_events(b, 6, 8);
    log.append(more.iter().map(|e| record(&topics, e)).collect())
        .await
        .expect("append");
    let projector = spawn(&log, &store, &topics);
    assert!(store.wait_for_seq(b, 8, WAIT).await.expect("wait b"));
    let stats = projector.stats.clone();
    eventually("the new events to be counted", || {
        stats.applied_events() == 3
    })
    .await;
    assert_eq!(stats.undecodable_records(), 0);
    let all_b: Vec<_> = b_events.iter().chain(&more).cloned().collect();
    assert_eq!(store.workflow(b).await.expect("b"), Some(fold(&all_b)));
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_promptly_when_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let store = Arc::new(SqliteStore::open(dir.path().join("read.db")).expect("store"));
    let topics = Topics::default();
    log.create_topic(&topics.events(), 2)
        .await
        .expect("events topic");
    log.create_topic(&topics.definitions(), 1)
        .await
        .expect("definitions topic");
    let projector = spawn(&log, &store, &topics);
    let stats = projector.stats.clone();
    eventually("a lag measurement", || stats.events_behind() == 0).await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_replays_the_whole_log_into_a_reset_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let store = Arc::new(SqliteStore::open(dir.path().join("read.db")).expect("store"));
    let topics = Topics::default();
    log.create_topic(&topics.events(), 3).await.expect("events");
    log.create_topic(&topics.definitions(), 1)
        .await
        .expect("definitions");
    let runs: Vec<WorkflowId> = (0..5).map(|_| WorkflowId(uuid::Uuid::new_v4())).collect();
    let events: Vec<Vec<EventEnvelope>> = runs.iter().map(|id| run_events(*id, 1, 9)).collect();
    let definition = DefinitionRegistered {
        name: "orders".into(),
        command_id: None,
        version: 1,
        at_ms: 1,
        source: json!({"name": "orders"}),
        v: 1,
    };
    let mut records = vec![
        NewRecord::new(
            topics.definitions(),
            "orders",
            serde_json::to_vec(&definition).expect("encode"),
        ),
        NewRecord::new(topics.events(), "junk", b"not json".to_vec()),
    ];
    records.extend(events.iter().flatten().map(|e| record(&topics, e)));
    log.append(records).await.expect("append");

    // A stale run the log does not hold: a rebuild must drop it.
    let stale = run_events(WorkflowId(uuid::Uuid::new_v4()), 1, 3);
    store.apply(&stale).await.expect("stale");

    let projector = Projector::new(
        log.clone(),
        store.clone(),
        topics.clone(),
        ProjectorConfig {
            batch: 4,
            ..ProjectorConfig::default()
        },
    );
    let report = projector.rebuild().await.expect("rebuild");
    assert_eq!(
        report,
        distorch_projector::RebuildReport {
            partitions: 4,
            records: 47,
            events: 45,
            definitions: 1,
            undecodable: 1,
            analytics: false,
        }
    );
    assert_eq!(projector.stats().undecodable_records(), 1);
    assert_eq!(
        store.workflow(stale[0].workflow_id).await.expect("read"),
        None
    );
    for (id, events) in runs.iter().zip(&events) {
        assert_eq!(store.workflow(*id).await.expect("read"), Some(fold(events)));
        assert_eq!(&store.history(*id).await.expect("history"), events);
    }
    assert_eq!(
        store.definition("orders", None).await.expect("definition"),
        Some(definition)
    );
    // Nothing was committed: the live projector still starts from the beginning.
    assert_eq!(
        log.committed("projector", &topics.events(), 0)
            .await
            .expect("committed"),
        None
    );
}
