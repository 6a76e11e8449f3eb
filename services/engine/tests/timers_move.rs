//! Timers survive the move of a run to another engine: a retry backoff and a `wait` that
//! were running when their engine stopped fire on the engine that takes the partition over,
//! at their time, and the run goes on. (A partition move and a restart are one code path:
//! the new owner rebuilds its runs from the log and derives their timers from their state.)

mod support;

use distorch_domain::WorkflowId;
use distorch_domain::command::{Command, ErrorInfo};
use distorch_domain::event::Event;
use distorch_eventlog::EventLog;
use distorch_eventlog::sqlite::SqliteLog;
use serde_json::json;
use std::sync::Arc;
use support::{command, register, start, start_engine, wait_for_event, wait_for_offer};

const PARTITIONS: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_and_a_wait_fire_on_the_engine_that_takes_the_run_over() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let run = WorkflowId::from_idempotency_key("timers", "1");
    let key = run.to_string();
    let definition = json!({
        "name": "timers",
        "steps": [
            {"id": "call", "task": "call", "queue": "q",
             "retry": {"max_attempts": 3, "initial_interval": "2s", "jitter": 0.0}},
            {"id": "pause", "wait": "2s"},
            {"id": "after", "task": "after", "queue": "q"}
        ]
    });

    let first = start_engine(log.clone(), PARTITIONS).await;
    log.append(vec![
        register(definition),
        start(&key, run, "timers", json!({})),
    ])
    .await
    .unwrap();
    let call = wait_for_offer(log.as_ref(), PARTITIONS, "q", run, "call", |d| {
        d.step_id == "call"
    })
    .await;
    log.append(vec![command(
        &key,
        "fail-1",
        Command::FailTask {
            task_id: call.task_id.clone(),
            attempt: 1,
            error: ErrorInfo::new("unavailable", "try later"),
            retry_after_ms: None,
            metrics: None,
        },
    )])
    .await
    .unwrap();
    let failed = wait_for_event(log.as_ref(), PARTITIONS, run, "the backoff", |e| {
        matches!(
            e,
            Event::TaskFailed {
                retry_at_ms: Some(_),
                ..
            }
        )
    })
    .await;
    // The engine goes away during the backoff.
    first.stop().await;
    let Event::TaskFailed {
        retry_at_ms: Some(retry_at),
        ..
    } = failed
    else {
        unreachable!()
    };

    let second = start_engine(log.clone(), PARTITIONS).await;
    let retry = wait_for_offer(log.as_ref(), PARTITIONS, "q", run, "call's retry", |d| {
        d.step_id == "call" && d.attempt == 2
    })
    .await;
    let events = support::events(log.as_ref(), PARTITIONS, run).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::TaskScheduled { attempt: 2, .. }))
            .count(),
        1,
        "the retry was scheduled once"
    );
    log.append(vec![command(
        &key,
        "complete-2",
        Command::CompleteTask {
            task_id: retry.task_id.clone(),
            attempt: 2,
            output: json!({"ok": true}),
            metrics: None,
        },
    )])
    .await
    .unwrap();
    let timer = wait_for_event(log.as_ref(), PARTITIONS, run, "the wait", |e| {
        matches!(e, Event::TimerStarted { .. })
    })
    .await;
    // And this one goes away during the wait.
    second.stop().await;
    let Event::TimerStarted { fire_at_ms, .. } = timer else {
        unreachable!()
    };
    assert!(
        support::offers(log.as_ref(), PARTITIONS, "q", run)
            .await
            .iter()
            .all(|d| d.step_id != "after"),
        "the wait ended before the engine stopped: this test proves nothing"
    );
    assert!(fire_at_ms > retry_at, "the wait began after the retry");

    let third = start_engine(log.clone(), PARTITIONS).await;
    let after = wait_for_offer(log.as_ref(), PARTITIONS, "q", run, "after", |d| {
        d.step_id == "after"
    })
    .await;
    third.stop().await;
    assert_eq!(after.attempt, 1);
}
