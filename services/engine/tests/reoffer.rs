//! On Kafka the engine appends an attempt's `TaskScheduled` event and its `tasks.<queue>`
//! offer in two produce requests. An engine killed between them leaves a log with the event
//! and without the offer, and no worker would ever see the attempt. The engine that takes
//! the partition over must offer every waiting attempt again.
//!
//! The test builds exactly that log: it runs an engine until the offer exists, then copies
//! every topic but `tasks.*` into a fresh log and starts a second engine on it.

mod support;

use distorch_domain::WorkflowId;
use distorch_domain::topics::Topics;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{offers, register, start, start_engine, wait_for_offer};

const PARTITIONS: u32 = 2;

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
    let engine = start_engine(first.clone(), PARTITIONS).await;
    first
        .append(vec![
            register(definition),
            start(&run.to_string(), run, "reoffer", json!({"order": 7})),
        ])
        .await
        .unwrap();
    let original = wait_for_offer(
        first.as_ref(),
        PARTITIONS,
        "payments",
        run,
        "charge",
        |_| true,
    )
    .await;
    engine.stop().await;

    // The log as a crash between the two produce requests leaves it: events, no offer.
    let second: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("b.db")).unwrap());
    distorch_engine::ensure_topics(second.as_ref(), &topics, PARTITIONS)
        .await
        .unwrap();
    for topic in [topics.definitions(), topics.commands(), topics.events()] {
        copy_topic(first.as_ref(), second.as_ref(), &topic).await;
    }
    assert!(
        offers(second.as_ref(), PARTITIONS, "payments", run)
            .await
            .is_empty()
    );

    let engine = start_engine(second.clone(), PARTITIONS).await;
    let again = wait_for_offer(
        second.as_ref(),
        PARTITIONS,
        "payments",
        run,
        "charge",
        |_| true,
    )
    .await;
    engine.stop().await;
    assert_eq!(
        offers(second.as_ref(), PARTITIONS, "payments", run)
            .await
            .len(),
        1
    );
    assert_eq!(
        again, original,
        "the new offer is the attempt the lost one described"
    );
}
