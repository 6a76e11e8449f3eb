//! The projector records analytics facts alongside the read models, and a replay of the
//! whole log (a second consumer group) changes no figure.

use distorch_domain::event::EventEnvelope;
use distorch_domain::topics::Topics;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_projector::{Projector, ProjectorConfig};
use distorch_store::analytics::Analytics;
use distorch_store::analytics::conformance::{Run, fresh_window};
use distorch_store::analytics::sqlite::SqliteAnalytics;
use distorch_store::sqlite::SqliteStore;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// The events as the engine appends them.
fn records_of(topics: &Topics, events: &[EventEnvelope]) -> Vec<NewRecord> {
    events
        .iter()
        .map(|e| {
            NewRecord::new(
                topics.events(),
                e.workflow_id.to_string(),
                serde_json::to_vec(e).expect("encode"),
            )
        })
        .collect()
}

/// Projects the whole log with consumer group `group`, then stops.
async fn project_all(
    log: &Arc<SqliteLog>,
    store: &Arc<SqliteStore>,
    analytics: &Arc<SqliteAnalytics>,
    group: &str,
    events: u64,
) {
    let projector = Projector::new(
        log.clone(),
        store.clone(),
        Topics::default(),
        ProjectorConfig {
            group: group.into(),
            batch: 3,
            ..ProjectorConfig::default()
        },
    )
    .with_analytics(analytics.clone());
    let stats = projector.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    // Analytics are recorded before a batch counts as applied.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.applied_events() < events {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {} of {events} events applied",
            stats.applied_events()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    task.await.expect("join").expect("projector ran cleanly");
    assert_eq!(stats.undecodable_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_facts_and_a_replay_changes_no_figure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let store = Arc::new(SqliteStore::open(dir.path().join("read.db")).expect("store"));
    let analytics =
        Arc::new(SqliteAnalytics::open(dir.path().join("analytics.db")).expect("analytics"));
    let topics = Topics::default();
    log.create_topic(&topics.events(), 2).await.expect("events");
    log.create_topic(&topics.definitions(), 1)
        .await
        .expect("definitions");

    let w = fresh_window();
    let t = w.from_ms;
    let mut events: Vec<EventEnvelope> = Vec::new();
    for run_ms in [100, 300] {
        let mut run = Run::start("orders", json!({}), t);
        let task = run.schedule(t, "charge", "payments.charge", "payments");
        run.begin(t + 10, &task, 1);
        run.complete(t + 10 + run_ms, &task, 1, None);
        run.completed(t + 1000);
        events.extend(run.events);
    }
    let records = records_of(&topics, &events);
    log.append(records).await.expect("append");

    let n = events.len() as u64;
    project_all(&log, &store, &analytics, "projector", n).await;
    let first = analytics.performance(w).await.expect("performance");
    assert_eq!(first.definitions[0].runs, 2);
    let charge = &first.steps[0];
    assert_eq!((charge.step_id.as_str(), charge.completed), ("charge", 2));
    assert_eq!(charge.run_ms.p50, Some(200.0));

    // Another group reads the whole log again into the same facts.
    project_all(&log, &store, &analytics, "replay", n).await;
    assert_eq!(analytics.performance(w).await.expect("performance"), first);
}

/// Analytics whose `flush` fails while `failing` is set: writes that cannot be made durable.
struct Unsyncable {
    inner: SqliteAnalytics,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Analytics for Unsyncable {
    async fn record(&self, events: &[EventEnvelope]) -> distorch_store::Result<()> {
        self.inner.record(events).await
    }
    async fn flush(&self) -> distorch_store::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(distorch_store::StoreError::Storage("disk gone".into()));
        }
        self.inner.flush().await
    }
    async fn reset(&self) -> distorch_store::Result<()> {
        self.inner.reset().await
    }
    async fn performance(
        &self,
        window: distorch_store::analytics::Window,
    ) -> distorch_store::Result<distorch_store::analytics::Performance> {
        self.inner.performance(window).await
    }
    async fn bottlenecks(
        &self,
        window: distorch_store::analytics::Window,
    ) -> distorch_store::Result<distorch_store::analytics::Bottlenecks> {
        self.inner.bottlenecks(window).await
    }
    async fn cost(
        &self,
        window: distorch_store::analytics::Window,
        rates: &distorch_store::analytics::CostRates,
    ) -> distorch_store::Result<distorch_store::analytics::Cost> {
        self.inner.cost(window, rates).await
    }
}

/// The read store and analytics sync lazily; the projector commits offsets only past writes
/// their `flush` made durable, so a power loss can never leave applied-but-lost records
/// behind a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_the_stores_are_flushed() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("log"));
    let store = Arc::new(SqliteStore::open(dir.path().join("read.db")).expect("store"));
    let analytics = Arc::new(Unsyncable {
        inner: SqliteAnalytics::open(dir.path().join("analytics.db")).expect("analytics"),
        failing: true.into(),
    });
    let topics = Topics::default();
    log.create_topic(&topics.events(), 1).await.expect("events");
    log.create_topic(&topics.definitions(), 1)
        .await
        .expect("definitions");
    let t = fresh_window().from_ms;
    let mut run = Run::start("orders", json!({}), t);
    let task = run.schedule(t, "charge", "payments.charge", "payments");
    run.begin(t + 10, &task, 1);
    let records = records_of(&topics, &run.events);
    let end = records.len() as u64;
    log.append(records).await.expect("append");

    let projector = Projector::new(
        log.clone(),
        store.clone(),
        topics.clone(),
        ProjectorConfig::default(),
    )
    .with_analytics(analytics.clone());
    let stats = projector.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.applied_events() < end {
        assert!(tokio::time::Instant::now() < deadline, "events not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Several commit intervals (250 ms) pass with every flush failing: nothing is committed.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let committed = || async {
        log.committed("projector", &topics.events(), 0)
            .await
            .expect("committed")
    };
    assert_eq!(committed().await, None, "committed past an unflushed write");

    // Once flushes succeed the applied records are committed, at the next interval.
    analytics.failing.store(false, Ordering::SeqCst);
    while committed().await != Some(end) {
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    task.await.expect("join").expect("projector ran cleanly");
}
