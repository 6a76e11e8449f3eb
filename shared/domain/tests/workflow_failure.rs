//! What happens when a step fails for good: `on_failure` compensate, park, fail, continue.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::command::Rejection;
use distorch_domain::event::{Event, TaskKind};
use distorch_domain::workflow::{Status, StepStatus, TaskStatus};
use harness::{Run, fatal, start};
use serde_json::json;

/// Names of the compensation tasks scheduled so far, in order.
fn compensations_scheduled(run: &Run) -> Vec<String> {
    run.all_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::TaskScheduled {
                kind: TaskKind::Compensation,
                step_key,
                attempt: 1,
                ..
            } => Some(step_key.clone()),
            _ => None,
        })
        .collect()
}

fn complete_compensation(run: &mut Run, key: &str) -> Vec<&'static str> {
    assert_eq!(run.task(key).kind, TaskKind::Compensation);
    run.complete(key, json!("undone"))
}

const SAGA: &str = r#"
name: saga
steps:
  - {id: reserve, task: reserve, compensate: release}
  - id: both
    parallel:
      branches:
        - steps: [{id: charge, task: charge, compensate: refund}]
        - steps: [{id: note, task: note}]
        - steps: [{id: label, task: label, compensate: void-label}]
  - {id: ship, task: ship, retry: {max_attempts: 1}}
compensations:
  release: {task: release, input: '{held: .steps.reserve.output}'}
  refund: {task: refund, input: '{charge: .steps.charge.output.id, order: .input.order}'}
  void-label: {task: void, retry: {max_attempts: 2, initial_interval: 1s}}
"#;

/// Given the saga with reserve, label and charge done (in that order), when ship fails.
fn failed_saga() -> Run {
    let mut run = start(SAGA, json!({"order": "o-1"}));
    run.complete("reserve", json!({"sku": 9}));
    run.complete("label", json!("L"));
    run.complete("note", json!("N"));
    run.complete("charge", json!({"id": "ch_1"}));
    let names = run.fail("ship", harness::error("unavailable"));
    assert_eq!(
        names,
        ["task_failed", "compensation_started", "task_scheduled"]
    );
    run
}

#[test]
fn a_definition_with_compensations_compensates_by_default() {
    let run = failed_saga();
    assert_eq!(run.status(), Status::Compensating);
}

#[test]
fn compensations_run_one_at_a_time_in_reverse_completion_order() {
    let mut run = failed_saga();
    assert_eq!(compensations_scheduled(&run), ["charge"]);
    assert_eq!(run.active(), ["charge"], "one compensation at a time");
    complete_compensation(&mut run, "charge");
    assert_eq!(compensations_scheduled(&run), ["charge", "label"]);
    assert_eq!(run.active(), ["label"]);
    complete_compensation(&mut run, "label");
    assert_eq!(run.active(), ["reserve"]);
    let names = complete_compensation(&mut run, "reserve");
    assert_eq!(names, ["task_completed", "workflow_compensated"]);
    assert_eq!(
        compensations_scheduled(&run),
        ["charge", "label", "reserve"]
    );
    assert_eq!(run.status(), Status::Compensated);
    run.assert_replays();
}

#[test]
fn a_compensation_gets_the_input_its_jq_builds() {
    let mut run = failed_saga();
    assert_eq!(
        run.task("charge").input,
        json!({"charge": "ch_1", "order": "o-1"})
    );
    assert_eq!(run.task("charge").task, "refund");
    complete_compensation(&mut run, "charge");
    complete_compensation(&mut run, "label");
    assert_eq!(run.task("reserve").input, json!({"held": {"sku": 9}}));
}

#[test]
fn a_step_without_a_compensation_is_not_undone() {
    let mut run = failed_saga();
    complete_compensation(&mut run, "charge");
    complete_compensation(&mut run, "label");
    complete_compensation(&mut run, "reserve");
    assert!(!compensations_scheduled(&run).contains(&"note".to_string()));
}

#[test]
fn a_compensation_that_exhausts_its_attempts_is_parked() {
    let mut run = failed_saga();
    complete_compensation(&mut run, "charge");
    run.fail("label", harness::error("down"));
    let Some(Event::TaskFailed {
        retry_at_ms: Some(at),
        ..
    }) = run.events().first().copied()
    else {
        panic!("{:?}", run.names())
    };
    run.advance_to(*at);
    let names = run.fail("label", harness::error("down"));
    assert_eq!(names, ["task_failed", "task_parked"]);
    assert_eq!(run.status(), Status::Parked);
    assert!(
        run.active().is_empty(),
        "compensation stops at the parked one"
    );
    run.assert_replays();
}

#[test]
fn skipping_a_parked_compensation_lets_compensation_continue() {
    let mut run = failed_saga();
    complete_compensation(&mut run, "charge");
    run.fail("label", fatal("gone"));
    assert_eq!(run.status(), Status::Parked);
    let skipped = run.skip_task("label", json!(null)).unwrap();
    assert!(!skipped.duplicate);
    assert_eq!(
        run.names(),
        ["task_skipped", "task_scheduled"],
        "the next compensation follows"
    );
    assert_eq!(run.status(), Status::Compensating);
    let names = complete_compensation(&mut run, "reserve");
    assert_eq!(names, ["task_completed", "workflow_compensated"]);
    run.assert_replays();
}

#[test]
fn retrying_a_parked_compensation_runs_it_again() {
    let mut run = failed_saga();
    complete_compensation(&mut run, "charge");
    run.fail("label", fatal("gone"));
    run.retry_task("label").unwrap();
    assert_eq!(run.names(), ["task_retried", "task_scheduled"]);
    assert_eq!(run.task("label").attempt, 2);
    assert_eq!(run.status(), Status::Compensating);
    complete_compensation(&mut run, "label");
    assert_eq!(run.active(), ["reserve"]);
    run.assert_replays();
}

#[test]
fn compensation_cancels_the_tasks_still_running() {
    let mut run = start(SAGA, json!({"order": "o-1"}));
    run.complete("reserve", json!({}));
    run.complete("charge", json!({"id": "c"}));
    let names = run.fail("label", fatal("printer_on_fire"));
    assert_eq!(
        names,
        [
            "task_failed",
            "task_cancelled",
            "compensation_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.task("note").status, TaskStatus::Cancelled);
    assert_eq!(compensations_scheduled(&run), ["charge"]);
    run.assert_replays();
}

// ----- park -----

const PARKING: &str = r#"
name: parking
steps:
  - {id: check, task: check, on_failure: park, retry: {max_attempts: 2, initial_interval: 1s}}
  - {id: after, task: after, input: '.steps.check.output'}
"#;

fn parked() -> Run {
    let mut run = start(PARKING, json!({}));
    run.fail("check", fatal("needs_human"));
    assert_eq!(run.names(), ["task_failed", "task_parked"]);
    run
}

#[test]
fn park_puts_the_task_in_the_dead_letter_queue() {
    let run = parked();
    assert_eq!(run.status(), Status::Parked);
    assert!(run.task("check").parked);
    assert!(run.active().is_empty());
    assert_eq!(run.step_status("check"), Some(StepStatus::Running));
    run.assert_replays();
}

#[test]
fn retrying_a_parked_task_starts_a_new_attempt_with_a_fresh_budget() {
    let mut run = parked();
    run.retry_task("check").unwrap();
    assert_eq!(run.names(), ["task_retried", "task_scheduled"]);
    let t = run.task("check");
    assert_eq!((t.attempt, t.max_attempts), (2, 3));
    assert_eq!(run.status(), Status::Running);
    // The fresh budget allows one retry more, with the initial backoff again.
    run.fail("check", harness::error("flaky"));
    let Event::TaskFailed {
        retry_at_ms: Some(at),
        ..
    } = run.events()[0]
    else {
        panic!("{:?}", run.names())
    };
    assert_eq!(*at - run.now, 1_000);
    run.advance_to(*at);
    assert_eq!(run.task("check").attempt, 3);
    run.fail("check", harness::error("flaky"));
    assert_eq!(run.names(), ["task_failed", "task_parked"]);
    run.assert_replays();
}

#[test]
fn skipping_a_parked_task_continues_the_run_with_the_given_output() {
    let mut run = parked();
    run.skip_task("check", json!({"approved": true})).unwrap();
    assert_eq!(
        run.names(),
        ["task_skipped", "step_started", "task_scheduled"]
    );
    assert_eq!(run.task("after").input, json!({"approved": true}));
    run.complete("after", json!(1));
    assert_eq!(
        run.wf().output,
        Some(json!({"check": {"approved": true}, "after": 1}))
    );
    run.assert_replays();
}

#[test]
fn only_a_parked_task_can_be_retried() {
    let mut run = start(PARKING, json!({}));
    assert!(matches!(
        run.retry_task("check"),
        Err(Rejection::Conflict(_))
    ));
}

// ----- fail, continue -----

#[test]
fn fail_ends_the_run_failed_and_cancels_what_runs() {
    let yaml = r#"
name: failing
steps:
  - parallel:
      branches:
        - steps: [{id: a, task: a, on_failure: fail}]
        - steps: [{id: b, task: b}]
    id: both
"#;
    let mut run = start(yaml, json!({}));
    let names = run.fail("a", fatal("broken"));
    assert_eq!(names, ["task_failed", "task_cancelled", "workflow_failed"]);
    assert_eq!(run.status(), Status::Failed);
    assert_eq!(run.wf().error.as_ref().unwrap().kind, "broken");
    assert!(run.timers().is_empty());
    run.assert_replays();
}

#[test]
fn continue_records_the_failure_and_moves_on_without_output() {
    let yaml = r#"
name: lenient
steps:
  - {id: a, task: a, on_failure: continue}
  - {id: b, task: b, input: '.steps.a'}
"#;
    let mut run = start(yaml, json!({}));
    let names = run.fail("a", fatal("meh"));
    assert_eq!(
        names,
        [
            "task_failed",
            "step_failed",
            "step_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.step_status("a"), Some(StepStatus::Failed));
    assert_eq!(
        run.task("b").input,
        json!(null),
        "a failed step has no output"
    );
    run.complete("b", json!(2));
    assert_eq!(run.wf().output, Some(json!({"b": 2})));
    run.assert_replays();
}

#[test]
fn defaults_on_failure_applies_to_steps_without_their_own() {
    let yaml = r#"
name: defaulted
defaults: {on_failure: continue}
steps:
  - {id: a, task: a}
  - {id: b, task: b}
"#;
    let mut run = start(yaml, json!({}));
    run.fail("a", fatal("meh"));
    assert_eq!(run.active(), ["b"]);
}

// ----- a parked task when the run stops waiting for it -----

const PARKED_BESIDE_SAGA: &str = r#"
name: beside
steps:
  - {id: reserve, task: reserve, compensate: release}
  - id: both
    parallel:
      branches:
        - steps: [{id: review, task: review, on_failure: park}]
        - steps: [{id: charge, task: charge, on_failure: compensate}]
compensations:
  release: {task: release}
"#;

fn parked_beside_saga() -> Run {
    let mut run = start(PARKED_BESIDE_SAGA, json!({}));
    run.complete("reserve", json!(1));
    run.fail("review", fatal("needs_human"));
    assert_eq!(run.status(), Status::Parked);
    run
}

#[test]
fn compensation_takes_a_parked_task_out_of_the_dead_letter_queue() {
    let mut run = parked_beside_saga();
    run.fail("charge", fatal("declined"));
    assert_eq!(run.status(), Status::Compensating);
    assert!(!run.task("review").parked);
    assert_eq!(run.task("review").status, TaskStatus::Cancelled);
    run.assert_replays();
}

#[test]
fn a_step_task_cancelled_by_compensation_cannot_be_retried_or_skipped() {
    let mut run = parked_beside_saga();
    run.fail("charge", fatal("declined"));
    assert!(matches!(
        run.retry_task("review"),
        Err(Rejection::Conflict(_))
    ));
    assert!(matches!(
        run.skip_task("review", json!(null)),
        Err(Rejection::Conflict(_))
    ));
    assert_eq!(run.active(), ["reserve"], "only the compensation runs");
}

#[test]
fn cancelling_a_parked_run_cancels_the_parked_task() {
    let mut run = parked_beside_saga();
    run.send(distorch_domain::Command::CancelWorkflow {
        workflow_id: run.id,
        compensate: false,
        reason: None,
    })
    .unwrap();
    assert!(run.events().contains(&&Event::TaskCancelled {
        task_id: run.task("review").id.clone()
    }));
    assert!(!run.task("review").parked);
    run.assert_replays();
}

#[test]
fn a_compensation_inside_foreach_sees_its_iteration_item() {
    let yaml = r#"
name: batch
steps:
  - id: each
    foreach:
      items: '.input'
      steps: [{id: book, task: book, input: '.item', compensate: unbook}]
  - {id: pay, task: pay, on_failure: compensate}
compensations:
  unbook: {task: unbook, input: '{item: .item, booking: .steps.book.output}'}
"#;
    let mut run = start(yaml, json!(["x", "y"]));
    run.complete("each[1].book", json!("B-y"));
    run.complete("each[0].book", json!("B-x"));
    run.fail("pay", fatal("declined"));
    assert_eq!(
        run.active(),
        ["each[0].book"],
        "last completed, first undone"
    );
    assert_eq!(
        run.task("each[0].book").input,
        json!({"item": "x", "booking": "B-x"})
    );
    run.complete("each[0].book", json!(null));
    assert_eq!(
        run.task("each[1].book").input,
        json!({"item": "y", "booking": "B-y"})
    );
    run.complete("each[1].book", json!(null));
    assert_eq!(run.status(), Status::Compensated);
    run.assert_replays();
}

#[test]
fn a_compensation_whose_input_cannot_be_built_is_parked_at_once() {
    let yaml = r#"
name: broken-undo
steps:
  - {id: a, task: a, compensate: undo}
  - {id: b, task: b}
compensations:
  undo: {task: undo, input: '.steps.a.output.id | error("no id")'}
"#;
    let mut run = start(yaml, json!({}));
    run.complete("a", json!({"id": 1}));
    run.fail("b", fatal("x"));
    assert_eq!(
        run.names(),
        [
            "task_failed",
            "compensation_started",
            "task_scheduled",
            "task_parked"
        ]
    );
    assert_eq!(run.status(), Status::Parked);
    run.skip_task("a", json!(null)).unwrap();
    assert_eq!(run.status(), Status::Compensated);
    run.assert_replays();
}
