//! The fold, given events, then facts.

use super::*;
use crate::analytics::conformance::Run;
use serde_json::json;

const T: i64 = 1_700_000_000_000;

fn fold_all(events: &[EventEnvelope]) -> (HashMap<WorkflowId, RunState>, Changes) {
    let mut states = HashMap::new();
    let changes = fold(&mut states, events);
    (states, changes)
}

fn attempt(changes: &Changes, n: u32) -> &AttemptFact {
    changes
        .attempts
        .iter()
        .find(|a| a.attempt == n)
        .unwrap_or_else(|| panic!("no attempt {n} in {changes:?}"))
}

#[test]
fn a_retried_attempt_keeps_its_backoff_and_the_next_one_its_task_start() {
    let mut r = Run::start("orders", json!({"tenant": "acme"}), T);
    let c = r.schedule(T + 10, "charge", "payments.charge", "payments");
    r.begin(T + 110, &c, 1);
    r.fail(T + 310, &c, 1, "timeout", Some(T + 1310));
    r.schedule_attempt(T + 1310, &c, 2, "charge", "payments.charge", "payments");
    r.begin(T + 1320, &c, 2);
    r.complete(T + 1420, &c, 2, None);

    let (_, changes) = fold_all(&r.events);

    let first = attempt(&changes, 1);
    assert_eq!(first.status, AttemptStatus::Failed);
    assert_eq!(first.error_type.as_deref(), Some("timeout"));
    assert!(first.retried);
    assert_eq!(first.backoff_ms, 1000);
    assert_eq!(
        (first.queue_wait_ms(), first.run_ms()),
        (Some(100), Some(200))
    );
    assert_eq!(first.end_to_end_ms(), None, "not the task's last attempt");
    let second = attempt(&changes, 2);
    assert_eq!(second.status, AttemptStatus::Completed);
    assert_eq!(second.task_scheduled_at_ms, T + 10);
    assert_eq!(second.end_to_end_ms(), Some(1410));
    assert_eq!(
        (second.tenant.as_str(), second.definition.as_str()),
        ("acme", "orders")
    );
    let run = &changes.runs[0];
    assert_eq!(
        (run.attempts, run.retries, run.status),
        (2, 1, Status::Running)
    );
}

#[test]
fn events_folded_once_change_nothing_when_they_come_again() {
    let mut r = Run::start("orders", json!({}), T);
    let c = r.schedule(T, "charge", "c", "q");
    r.begin(T + 5, &c, 1);
    let (mut states, first) = fold_all(&r.events);
    assert!(!first.is_empty());

    let again = fold(&mut states, &r.events);

    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn state_reloaded_between_batches_folds_like_one_batch() {
    let mut r = Run::start("orders", json!({}), T);
    let c = r.schedule(T, "charge", "c", "q");
    r.begin(T + 5, &c, 1);
    r.fail(T + 9, &c, 1, "boom", Some(T + 20));
    r.schedule_attempt(T + 20, &c, 2, "charge", "c", "q");
    r.begin(T + 25, &c, 2);
    r.complete(T + 30, &c, 2, None);
    r.completed(T + 31);
    let (_, whole) = fold_all(&r.events);

    // As a backend does: store what changed, reload the run and its latest attempts.
    let (first, rest) = r.events.split_at(5);
    let (states, early) = fold_all(first);
    let stored = &states[&r.id];
    let mut reloaded = HashMap::from([(
        r.id,
        RunState::loaded(stored.run.clone(), stored.latest_attempts().cloned()),
    )]);
    let late = fold(&mut reloaded, rest);

    let mut merged: BTreeMap<(TaskId, u32), AttemptFact> = BTreeMap::new();
    for a in early.attempts.into_iter().chain(late.attempts) {
        merged.insert((a.task_id.clone(), a.attempt), a);
    }
    let merged: Vec<_> = merged.into_values().collect();
    assert_eq!(merged, whole.attempts);
    assert_eq!(late.runs.last(), whole.runs.last());
}

#[test]
fn a_deferral_is_breaker_wait_not_a_retry() {
    let mut r = Run::start("calls", json!({}), T);
    let c = r.schedule(T, "call", "http", "");
    r.begin(T + 1, &c, 1);
    r.defer(T + 2, &c, 1, T + 5002);

    let (_, changes) = fold_all(&r.events);

    let a = attempt(&changes, 1);
    assert_eq!(a.status, AttemptStatus::Deferred);
    assert_eq!(
        (a.breaker_wait_ms, a.backoff_ms, a.retried),
        (5000, 0, false)
    );
    assert_eq!(a.error_type.as_deref(), Some("breaker_open"));
    assert_eq!(changes.runs[0].retries, 0);
}

#[test]
fn human_tasks_count_their_inbox_time_and_number_their_own_attempts() {
    let mut r = Run::start("review", json!({}), T);
    let h = r.human(T, "approve");
    r.claim(T + 100, &h);
    r.push(
        T + 200,
        Event::HumanTaskReleased {
            task_id: h.clone(),
            by: "ann".into(),
        },
    );
    r.claim(T + 300, &h);
    r.complete(T + 1000, &h, 7, None);

    let (_, changes) = fold_all(&r.events);

    let a = attempt(&changes, 1);
    assert_eq!(
        (a.kind, a.task.as_str(), a.queue.as_str()),
        (TaskKind::Human, "human", "")
    );
    assert_eq!(a.status, AttemptStatus::Completed);
    assert_eq!(a.worker_id.as_deref(), Some("ann"));
    assert_eq!((a.queue_wait_ms(), a.run_ms()), (Some(300), Some(700)));
    assert_eq!(a.human_wait_ms(), Some(1000));
}

#[test]
fn an_operator_retry_reopens_the_run_and_marks_the_attempt_retried() {
    let mut r = Run::start("orders", json!({}), T);
    let c = r.schedule(T, "charge", "c", "q");
    r.begin(T + 1, &c, 1);
    r.fail(T + 2, &c, 1, "bad", None);
    r.failed(T + 3);
    r.push(T + 60_000, Event::TaskRetried { task_id: c.clone() });
    r.schedule_attempt(T + 60_000, &c, 2, "charge", "c", "q");

    let (_, changes) = fold_all(&r.events);

    let first = attempt(&changes, 1);
    assert!(first.retried);
    assert_eq!(first.backoff_ms, 0, "time parked is the operator's");
    let run = &changes.runs[0];
    assert_eq!(
        (run.status, run.finished_at_ms, run.retries),
        (Status::Running, None, 1)
    );
    assert_eq!(attempt(&changes, 2).status, AttemptStatus::Scheduled);
}

#[test]
fn a_run_that_ends_cancels_its_open_attempts() {
    let mut r = Run::start("review", json!({}), T);
    let h = r.human(T, "approve");
    r.push(
        T + 50,
        Event::WorkflowCancelled {
            reason: None,
            parent: None,
        },
    );

    let (_, changes) = fold_all(&r.events);

    let a = attempt(&changes, 1);
    assert_eq!(
        (a.status, a.finished_at_ms),
        (AttemptStatus::Cancelled, Some(T + 50))
    );
    assert_eq!(a.task_id, h);
    assert_eq!(changes.runs[0].status, Status::Cancelled);
}

#[test]
fn events_of_a_run_never_started_are_ignored() {
    let mut r = Run::start("orders", json!({}), T);
    r.schedule(T, "charge", "c", "q");

    let (states, changes) = fold_all(&r.events[1..]);

    assert!(changes.is_empty() && states.is_empty());
}

#[test]
fn a_stale_attempt_changes_nothing() {
    let mut r = Run::start("orders", json!({}), T);
    let c = r.schedule(T, "charge", "c", "q");
    r.fail(T + 1, &c, 1, "x", Some(T + 2));
    r.schedule_attempt(T + 2, &c, 2, "charge", "c", "q");
    r.complete(T + 3, &c, 1, None);

    let (_, changes) = fold_all(&r.events);

    assert_eq!(attempt(&changes, 1).status, AttemptStatus::Failed);
    assert_eq!(attempt(&changes, 2).status, AttemptStatus::Scheduled);
}

#[test]
fn the_tenant_is_the_inputs_tenant_string() {
    assert_eq!(tenant_of(&json!({"tenant": "acme"})), "acme");
    for input in [
        json!({}),
        json!({"tenant": ""}),
        json!({"tenant": 7}),
        json!(null),
    ] {
        assert_eq!(tenant_of(&input), DEFAULT_TENANT, "{input}");
    }
}
