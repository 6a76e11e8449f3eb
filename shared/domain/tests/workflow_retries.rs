//! Attempts of a task: retries with backoff, timeouts, heartbeats and stale reports.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::command::{Command, Rejection};
use distorch_domain::event::Event;
use distorch_domain::workflow::{Status, TaskStatus, Timer};
use harness::{T0, error, fatal, start};
use serde_json::json;

fn retry_at(run: &harness::Run) -> i64 {
    run.events()
        .into_iter()
        .find_map(|e| match e {
            Event::TaskFailed { retry_at_ms, .. } => *retry_at_ms,
            _ => None,
        })
        .unwrap_or_else(|| panic!("no retry in {:?}", run.names()))
}

fn retry_timer(run: &harness::Run, key: &str) -> Timer {
    let t = run.task(key);
    Timer::Retry {
        task_id: t.id.clone(),
        attempt: t.attempt,
    }
}

const FLAKY: &str = r#"
name: flaky
steps:
  - id: call
    task: call
    retry: {max_attempts: 6, initial_interval: 1s, backoff_coefficient: 2.0, max_interval: 5s, non_retryable: [bad_request]}
  - {id: after, task: after}
"#;

#[test]
fn a_retryable_failure_schedules_a_retry_after_the_initial_interval() {
    let mut run = start(FLAKY, json!({}));
    assert_eq!(run.fail("call", error("unavailable")), ["task_failed"]);
    assert_eq!(retry_at(&run), T0 + 1_000);
    assert_eq!(run.status(), Status::Running);
    assert!(
        run.active().is_empty(),
        "no attempt runs during the backoff"
    );
    assert_eq!(run.timers(), [(T0 + 1_000, retry_timer(&run, "call"))]);
}

#[test]
fn backoff_grows_exponentially_and_is_capped_by_max_interval() {
    let mut run = start(FLAKY, json!({}));
    let mut delays = Vec::new();
    for _ in 0..5 {
        run.fail("call", error("unavailable"));
        let at = retry_at(&run);
        delays.push(at - run.now);
        run.advance_to(at);
    }
    assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
    assert_eq!(run.task("call").attempt, 6);
    run.assert_replays();
}

#[test]
fn jitter_keeps_each_delay_within_its_fraction_of_the_interval() {
    let yaml = r#"
name: jittery
steps:
  - id: call
    task: call
    retry: {max_attempts: 8, initial_interval: 1s, backoff_coefficient: 2.0, max_interval: 10s, jitter: 0.25}
"#;
    let mut run = start(yaml, json!({}));
    let mut delays = Vec::new();
    for attempt in 1..8 {
        run.fail("call", error("unavailable"));
        let at = retry_at(&run);
        let delay = at - run.now;
        let base = (1_000.0 * 2f64.powi(attempt - 1)).min(10_000.0);
        assert!(
            (base * 0.75..=base * 1.25).contains(&(delay as f64)),
            "attempt {attempt}: {delay} ms not within 25% of {base}"
        );
        delays.push(delay);
        run.advance_to(at);
    }
    assert_ne!(
        delays,
        [1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000],
        "jitter moves the delays"
    );
}

#[test]
fn firing_the_retry_timer_schedules_the_next_attempt() {
    let mut run = start(FLAKY, json!({"k": 1}));
    run.fail("call", error("unavailable"));
    let at = retry_at(&run);
    let names = run.advance_to(at);
    assert_eq!(names, ["task_scheduled"]);
    let t = run.task("call");
    assert_eq!((t.attempt, t.status), (2, TaskStatus::Scheduled));
    assert_eq!(t.input, json!({"k": 1}), "the same input again");
    assert_eq!(run.active(), ["call"]);
    run.assert_replays();
}

#[test]
fn a_retry_timer_fired_early_does_nothing() {
    let mut run = start(FLAKY, json!({}));
    run.fail("call", error("unavailable"));
    run.now = retry_at(&run) - 1;
    let timer = retry_timer(&run, "call");
    assert!(run.fire(timer).is_empty());
    assert_eq!(run.task("call").attempt, 1);
}

#[test]
fn a_second_attempt_completes_the_step() {
    let mut run = start(FLAKY, json!({}));
    run.fail("call", error("unavailable"));
    run.advance_to(retry_at(&run));
    run.complete("call", json!("ok"));
    assert_eq!(run.active(), ["after"]);
    run.assert_replays();
}

#[test]
fn an_error_type_listed_as_non_retryable_is_not_retried() {
    let mut run = start(FLAKY, json!({}));
    let names = run.fail("call", error("bad_request"));
    assert_eq!(names, ["task_failed", "workflow_failed"]);
    assert_eq!(run.status(), Status::Failed);
    assert_eq!(run.wf().error.as_ref().unwrap().kind, "bad_request");
    run.assert_replays();
}

#[test]
fn an_error_reported_as_not_retryable_is_not_retried() {
    let mut run = start(FLAKY, json!({}));
    let names = run.fail("call", fatal("card_declined"));
    assert_eq!(names, ["task_failed", "workflow_failed"]);
}

#[test]
fn exhausted_attempts_apply_the_step_policy() {
    let yaml = r#"
name: twice
steps:
  - {id: call, task: call, retry: {max_attempts: 2}, on_failure: continue}
  - {id: after, task: after}
"#;
    let mut run = start(yaml, json!({}));
    run.fail("call", error("unavailable"));
    run.advance_to(retry_at(&run));
    let names = run.fail("call", error("unavailable"));
    assert_eq!(
        names,
        [
            "task_failed",
            "step_failed",
            "step_started",
            "task_scheduled"
        ]
    );
    assert!(matches!(
        run.events()[0],
        Event::TaskFailed {
            retry_at_ms: None,
            attempt: 2,
            ..
        }
    ));
    assert_eq!(run.active(), ["after"]);
    run.assert_replays();
}

#[test]
fn a_report_for_a_failed_attempt_waiting_for_its_retry_is_a_conflict() {
    let mut run = start(FLAKY, json!({}));
    let late = run.complete_cmd("call", json!("late"));
    run.fail("call", error("unavailable"));
    let seq = run.wf().last_seq;
    assert!(matches!(run.send(late), Err(Rejection::Conflict(_))));
    assert_eq!(run.wf().last_seq, seq);
}

// ----- timeouts -----

const TIMED: &str = r#"
name: timed
steps:
  - id: call
    task: call
    timeout: 30s
    heartbeat_timeout: 10s
    schedule_to_start_timeout: 1m
    retry: {max_attempts: 3, initial_interval: 1s}
"#;

#[test]
fn a_task_not_taken_within_schedule_to_start_times_out() {
    let mut run = start(TIMED, json!({}));
    assert_eq!(
        run.timer_at(|t| matches!(t, Timer::ScheduleToStart { .. })),
        T0 + 60_000
    );
    let names = run.advance_to(T0 + 60_000);
    assert_eq!(names, ["task_failed"]);
    let Event::TaskFailed { error, .. } = run.events()[0] else {
        unreachable!()
    };
    assert_eq!(error.kind, "timeout.schedule_to_start");
    run.assert_replays();
}

#[test]
fn a_started_task_has_no_schedule_to_start_timer() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    let timers = run.timers();
    assert!(
        !timers
            .iter()
            .any(|(_, t)| matches!(t, Timer::ScheduleToStart { .. })),
        "{timers:?}"
    );
    // A stale schedule-to-start firing for it changes nothing.
    run.now = T0 + 60_000;
    let t = run.task("call");
    let stale = Timer::ScheduleToStart {
        task_id: t.id.clone(),
        attempt: 1,
    };
    assert!(run.fire(stale).is_empty());
}

#[test]
fn a_running_task_past_start_to_close_times_out() {
    let mut run = start(TIMED, json!({}));
    run.now = T0 + 5_000;
    run.start_task("call");
    // Keep the lease alive so that only start-to-close can expire.
    for s in 1..=3 {
        run.now = T0 + 5_000 + s * 8_000;
        run.heartbeat("call", None);
    }
    assert_eq!(
        run.timer_at(|t| matches!(t, Timer::StartToClose { .. })),
        T0 + 35_000
    );
    let names = run.advance_to(T0 + 35_000);
    assert_eq!(names, ["task_failed"]);
    let Event::TaskFailed { error, .. } = run.events()[0] else {
        unreachable!()
    };
    assert_eq!(error.kind, "timeout.start_to_close");
    run.assert_replays();
}

#[test]
fn a_running_task_without_heartbeats_loses_its_lease() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    let names = run.advance_to(T0 + 10_000);
    assert_eq!(names, ["task_failed"]);
    let Event::TaskFailed { error, .. } = run.events()[0] else {
        unreachable!()
    };
    assert_eq!(error.kind, "timeout.heartbeat");
}

#[test]
fn a_heartbeat_extends_the_lease() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    let old = run.timers();
    run.now = T0 + 6_000;
    run.heartbeat("call", None);
    assert_eq!(
        run.timer_at(|t| matches!(t, Timer::Heartbeat { .. })),
        T0 + 16_000
    );
    // The timer set for the old deadline fires, but the lease has moved on.
    run.now = T0 + 10_000;
    for (_, timer) in old {
        if matches!(timer, Timer::Heartbeat { .. }) {
            assert!(run.fire(timer).is_empty());
        }
    }
    assert_eq!(run.task("call").status, TaskStatus::Running);
    assert_eq!(run.advance_to(T0 + 16_000), ["task_failed"]);
}

#[test]
fn a_report_from_an_attempt_that_timed_out_is_a_conflict_and_changes_nothing() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    let stale = run.complete_cmd("call", json!("too late"));
    run.advance_to(T0 + 10_000);
    run.advance_to(retry_at(&run));
    assert_eq!(run.task("call").attempt, 2);
    let seq = run.wf().last_seq;
    let answer = run.send(stale);
    assert!(matches!(answer, Err(Rejection::Conflict(_))), "{answer:?}");
    assert_eq!(run.wf().last_seq, seq);
    assert!(run.last.is_empty());
    run.assert_replays();
}

#[test]
fn the_last_checkpoint_is_handed_to_the_next_attempt() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    run.heartbeat("call", Some(json!({"page": 3})));
    run.now = T0 + 1_000;
    run.heartbeat("call", None);
    run.fail("call", error("crashed"));
    run.advance_to(retry_at(&run));
    let Event::TaskScheduled {
        attempt,
        checkpoint,
        ..
    } = run.events()[0]
    else {
        panic!("{:?}", run.names())
    };
    assert_eq!(
        (*attempt, checkpoint.clone()),
        (2, Some(json!({"page": 3})))
    );
    run.assert_replays();
}

#[test]
fn a_stale_start_task_is_a_conflict() {
    let mut run = start(TIMED, json!({}));
    run.start_task("call");
    let t = run.task("call");
    let again = Command::StartTask {
        task_id: t.id.clone(),
        attempt: 1,
        worker_id: "w2".into(),
        via: None,
        replaces: None,
    };
    assert!(matches!(run.send(again), Err(Rejection::Conflict(_))));
}

#[test]
fn a_timeout_error_type_can_be_made_non_retryable() {
    let yaml = r#"
name: strict
steps:
  - id: call
    task: call
    timeout: 30s
    retry: {non_retryable: [timeout.start_to_close]}
"#;
    let mut run = start(yaml, json!({}));
    run.start_task("call");
    assert_eq!(
        run.advance_to(T0 + 30_000),
        ["task_failed", "workflow_failed"]
    );
}

#[test]
fn a_wait_longer_than_the_clock_can_count_does_not_end_at_once() {
    let yaml = r#"
name: forever
steps:
  - {id: nap, wait: 1000000000years}
"#;
    let mut run = start(yaml, json!({}));
    let names = run.advance_to(T0 + 1);
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(run.status(), Status::Running);
}

#[test]
fn a_schedule_to_start_timer_for_a_task_without_one_does_nothing() {
    let yaml = "name: plain\nsteps: [{id: call, task: call}]";
    let mut run = start(yaml, json!({}));
    let t = run.task("call");
    let timer = Timer::ScheduleToStart {
        task_id: t.id.clone(),
        attempt: 1,
    };
    assert!(run.fire(timer).is_empty());
    assert!(run.task("call").error.is_none());
}
