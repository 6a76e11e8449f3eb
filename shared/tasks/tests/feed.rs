//! The task feed on its own: fair hand-out to concurrent takers, nothing lost to a taker
//! that gives up.

use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::{TaskId, WorkflowId};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_tasks::{FeedConfig, TaskFeed};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn record(topic: &str, wf: WorkflowId, n: u32) -> NewRecord {
    let dispatch = TaskDispatch {
        task_id: TaskId::new(wf, n),
        workflow_id: wf,
        step_id: "s".into(),
        task: "t".into(),
        queue: "q".into(),
        attempt: 1,
        input: serde_json::Value::Null,
        checkpoint: None,
        heartbeat_timeout_ms: None,
    };
    NewRecord::new(
        topic,
        wf.to_string(),
        serde_json::to_vec(&dispatch).unwrap(),
    )
}

/// A feed of queue `q` on a topic of `partitions` partitions.
async fn feed(log: &Arc<dyn EventLog>, topics: &Topics, partitions: u32) -> TaskFeed {
    log.create_topic(&topics.tasks("q"), partitions)
        .await
        .unwrap();
    TaskFeed::start(
        log.clone(),
        FeedConfig {
            topic: topics.tasks("q"),
            group: "test".into(),
            prefetch: 8,
        },
    )
}

#[tokio::test]
async fn concurrent_waiters_each_get_distinct_records_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let topics = Topics::default();
    let dispatcher = Arc::new(feed(&log, &topics, 4).await);

    // Eight polls wait before anything is queued; each takes at most 3, so 25 records are
    // enough for all of them however the fetches are batched.
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let d = dispatcher.clone();
            tokio::spawn(async move { d.take(3, Duration::from_secs(30)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let topic = topics.tasks("q");
    let records: Vec<_> = (0..25)
        .map(|n| record(&topic, WorkflowId(uuid::Uuid::now_v7()), n))
        .collect();
    log.append(records).await.unwrap();

    let mut seen = HashSet::new();
    let mut total = 0;
    for waiter in waiters {
        // Every waiter wakes on arrival (well before its 30 s wait) with 1 to 3 claims.
        let claims = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!((1..=3).contains(&claims.len()), "{}", claims.len());
        for claim in &claims {
            assert!(
                seen.insert(claim.dispatch.task_id.clone()),
                "handed out twice"
            );
        }
        total += claims.len();
        for claim in &claims {
            dispatcher.settle(claim);
        }
    }
    // The rest stays buffered for the next polls.
    while total < 25 {
        let claims = dispatcher.take(100, Duration::from_secs(5)).await;
        assert!(!claims.is_empty());
        for claim in &claims {
            assert!(
                seen.insert(claim.dispatch.task_id.clone()),
                "handed out twice"
            );
        }
        total += claims.len();
    }
    assert_eq!(total, 25);
    assert!(
        dispatcher
            .take(1, Duration::from_millis(50))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_poll_that_gives_up_leaves_its_claims_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let topics = Topics::default();
    let dispatcher = Arc::new(feed(&log, &topics, 1).await);

    // A poll abandoned mid-wait (the worker hung up) must not swallow work.
    let abandoned = {
        let d = dispatcher.clone();
        tokio::spawn(async move { d.take(5, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    abandoned.abort();
    let _ = abandoned.await;

    let wf = WorkflowId(uuid::Uuid::now_v7());
    log.append((0..3).map(|n| record(&topics.tasks("q"), wf, n)).collect())
        .await
        .unwrap();
    let mut got = 0;
    while got < 3 {
        let claims = dispatcher.take(5, Duration::from_secs(5)).await;
        assert!(!claims.is_empty());
        got += claims.len();
    }
    assert_eq!(got, 3);
}
