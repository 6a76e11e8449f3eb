//! Operator verbs (cancel, pause, resume, add a task), command idempotency, and start
//! validation.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::command::{Answer, Command, Rejection};
use distorch_domain::event::{Event, TaskKind};
use distorch_domain::ids::{CommandId, TaskId, WorkflowId};
use distorch_domain::workflow::{Status, TaskStatus, Timer};
use harness::{Run, error, start};
use serde_json::json;

const TWO: &str = r#"
name: two
steps:
  - {id: a, task: a, compensate: undo-a, retry: {max_attempts: 3, initial_interval: 1s}}
  - id: both
    parallel:
      branches:
        - steps: [{id: b, task: b, compensate: undo-b}]
        - steps: [{id: c, task: c}]
  - {id: d, task: d}
compensations:
  undo-a: {task: undo-a}
  undo-b: {task: undo-b}
"#;

fn conflict(r: Result<distorch_domain::workflow::Decision, Rejection>) -> String {
    match r {
        Err(Rejection::Conflict(msg)) => msg,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// ----- cancel -----

#[test]
fn cancel_cancels_the_running_tasks_and_ends_the_run() {
    let mut run = start(TWO, json!({}));
    run.complete("a", json!(1));
    run.cancel(false).unwrap();
    assert_eq!(
        run.names(),
        ["task_cancelled", "task_cancelled", "workflow_cancelled"]
    );
    assert_eq!(run.status(), Status::Cancelled);
    assert_eq!(run.task("b").status, TaskStatus::Cancelled);
    assert!(run.timers().is_empty());
    run.assert_replays();
}

#[test]
fn a_task_completed_after_cancel_is_a_conflict() {
    let mut run = start(TWO, json!({}));
    let late = run.complete_cmd("a", json!(1));
    run.cancel(false).unwrap();
    conflict(run.send(late));
    assert_eq!(run.status(), Status::Cancelled);
}

#[test]
fn cancel_with_compensate_undoes_completed_steps_then_ends_cancelled() {
    let mut run = start(TWO, json!({}));
    run.complete("a", json!(1));
    run.complete("b", json!(2));
    run.cancel(true).unwrap();
    assert_eq!(
        run.names(),
        ["task_cancelled", "compensation_started", "task_scheduled"]
    );
    assert_eq!(run.status(), Status::Compensating);
    assert_eq!(run.task("b").kind, TaskKind::Compensation);
    run.complete("b", json!(null));
    let names = run.complete("a", json!(null));
    assert_eq!(names, ["task_completed", "workflow_cancelled"]);
    assert_eq!(run.status(), Status::Cancelled);
    run.assert_replays();
}

#[test]
fn cancel_with_compensate_twice_is_a_conflict() {
    let mut run = start(TWO, json!({}));
    run.complete("a", json!(1));
    run.cancel(true).unwrap();
    conflict(run.cancel(true));
}

// ----- heartbeats of work nobody wants any more -----

fn heartbeat_of(run: &Run, step_key: &str) -> Command {
    let t = run.task(step_key);
    Command::Heartbeat {
        task_id: t.id.clone(),
        attempt: t.attempt,
        checkpoint: Some(json!({"done": 5})),
    }
}

#[test]
fn given_a_cancelled_run_when_its_worker_heartbeats_then_it_is_asked_to_stop_and_nothing_changes() {
    let mut run = start(TWO, json!({}));
    run.start_task("a");
    let beat = heartbeat_of(&run, "a");
    run.cancel(false).unwrap();
    let seq = run.wf().last_seq;
    let decision = run
        .send(beat)
        .expect("a heartbeat of a cancelled run is answered");
    assert_eq!(
        decision.result,
        Answer::CancelRequested {
            workflow_id: run.id,
            status: Status::Cancelled
        }
    );
    assert!(decision.events.is_empty(), "no checkpoint is recorded");
    assert_eq!(run.wf().last_seq, seq);
}

#[test]
fn given_a_run_compensating_after_a_cancel_when_a_cancelled_tasks_worker_heartbeats_then_it_is_asked_to_stop()
 {
    let mut run = start(TWO, json!({}));
    run.complete("a", json!(1));
    run.start_task("c");
    let beat = heartbeat_of(&run, "c");
    run.cancel(true).unwrap();
    assert_eq!(run.status(), Status::Compensating);
    let decision = run.send(beat).expect("answered");
    assert_eq!(
        decision.result,
        Answer::CancelRequested {
            workflow_id: run.id,
            status: Status::Compensating
        }
    );
    assert!(decision.events.is_empty());
}

#[test]
fn given_a_retried_task_when_the_superseded_attempt_heartbeats_then_it_is_refused_as_stale() {
    let mut run = start(TWO, json!({}));
    run.start_task("a");
    let beat = heartbeat_of(&run, "a");
    run.fail("a", error("flaky"));
    let timer = run.timers()[0].1.clone();
    run.now += 1_000;
    run.fire(timer);
    assert_eq!(run.task("a").attempt, 2);
    let why = conflict(run.send(beat));
    assert!(why.contains("superseded"), "{why}");
}

// ----- pause / resume -----

#[test]
fn a_retry_timer_firing_while_paused_schedules_nothing_until_resume() {
    let mut run = start(TWO, json!({}));
    run.fail("a", error("flaky"));
    let timer = Timer::Retry {
        task_id: run.task("a").id.clone(),
        attempt: 1,
    };
    run.pause().unwrap();
    assert_eq!(run.status(), Status::Paused);
    run.now += 1_000;
    assert!(run.fire(timer.clone()).is_empty());
    assert_eq!(run.task("a").attempt, 1);

    run.resume().unwrap();
    assert_eq!(run.status(), Status::Running);
    // The overdue retry is due at once after the resume.
    let due: Vec<_> = run
        .timers()
        .into_iter()
        .filter(|(at, _)| *at <= run.now)
        .collect();
    assert_eq!(due, [(run.now, timer)]);
    assert_eq!(run.advance_to(run.now), ["task_scheduled"]);
    assert_eq!(run.task("a").attempt, 2);
    run.assert_replays();
}

#[test]
fn a_task_completed_while_paused_starts_nothing_until_resume() {
    let mut run = start(TWO, json!({}));
    run.pause().unwrap();
    assert_eq!(run.complete("a", json!(1)), ["task_completed"]);
    assert!(run.active().is_empty());
    run.resume().unwrap();
    assert_eq!(
        run.names(),
        [
            "workflow_resumed",
            "step_started",
            "step_started",
            "task_scheduled",
            "step_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.active(), ["b", "c"]);
    run.assert_replays();
}

#[test]
fn pausing_twice_is_a_conflict() {
    let mut run = start(TWO, json!({}));
    run.pause().unwrap();
    conflict(run.pause());
}

#[test]
fn resume_when_not_paused_is_a_conflict() {
    let mut run = start(TWO, json!({}));
    let msg = conflict(run.resume());
    assert!(msg.contains("not paused"), "{msg}");
}

#[test]
fn cancel_while_paused_ends_the_run() {
    let mut run = start(TWO, json!({}));
    run.pause().unwrap();
    run.cancel(false).unwrap();
    assert_eq!(run.status(), Status::Cancelled);
}

// ----- terminal runs, unknown tasks -----

fn finished() -> Run {
    let mut run = start(TWO, json!({}));
    run.complete("a", json!(1));
    run.complete("b", json!(2));
    run.complete("c", json!(3));
    run.complete("d", json!(4));
    assert_eq!(run.status(), Status::Completed);
    run
}

#[test]
fn operator_verbs_on_a_finished_run_are_conflicts() {
    let mut run = finished();
    let seq = run.wf().last_seq;
    conflict(run.cancel(false));
    conflict(run.cancel(true));
    conflict(run.pause());
    conflict(run.resume());
    conflict(run.skip_task("d", json!(null)));
    conflict(run.retry_task("d"));
    conflict(run.send(Command::AddTask {
        workflow_id: run.id,
        step: json!({"id": "x", "task": "x"}),
    }));
    assert_eq!(run.wf().last_seq, seq);
    assert_eq!(run.status(), Status::Completed);
}

#[test]
fn a_verb_about_an_unknown_task_is_not_found() {
    let mut run = start(TWO, json!({}));
    let ghost = TaskId::new(run.id, 99);
    for command in [
        Command::RetryTask {
            task_id: ghost.clone(),
        },
        Command::SkipTask {
            task_id: ghost.clone(),
            output: json!(null),
        },
        Command::CompleteTask {
            task_id: ghost.clone(),
            attempt: 1,
            output: json!(null),
            metrics: None,
        },
    ] {
        let answer = run.send(command);
        assert!(matches!(answer, Err(Rejection::NotFound(_))), "{answer:?}");
    }
}

#[test]
fn a_command_for_a_run_that_does_not_exist_is_not_found() {
    let mut run = Run::new(TWO);
    let answer = run.send(Command::PauseWorkflow {
        workflow_id: run.id,
    });
    assert!(matches!(answer, Err(Rejection::NotFound(_))), "{answer:?}");
}

// ----- AddTask -----

#[test]
fn an_added_task_runs_right_after_the_step_in_flight_with_the_returned_id() {
    let mut run = start(TWO, json!({"k": 1}));
    let answer = run
        .send(Command::AddTask {
            workflow_id: run.id,
            step: json!({"id": "audit", "task": "audit", "input": "{k: .input.k}"}),
        })
        .unwrap();
    assert_eq!(run.names(), ["task_added"]);
    let Answer::TaskAdded { task_id: reserved } = answer.result else {
        panic!("AddTask answers the task it added: {:?}", answer.result)
    };
    assert_eq!(run.active(), ["a"], "the step in flight is not disturbed");

    let names = run.complete("a", json!(1));
    assert_eq!(names, ["task_completed", "step_started", "task_scheduled"]);
    let audit = run.task("audit");
    assert_eq!(audit.id, reserved);
    assert_eq!(audit.input, json!({"k": 1}));
    run.complete("audit", json!("ok"));
    assert_eq!(run.active(), ["b", "c"]);
    run.complete("b", json!(2));
    run.complete("c", json!(3));
    run.complete("d", json!(4));
    assert_eq!(
        run.wf().output.as_ref().unwrap()["audit"],
        json!("ok"),
        "an added step is part of the run's output"
    );
    run.assert_replays();
}

#[test]
fn task_ids_stay_unique_around_an_added_task() {
    let mut run = start(TWO, json!({}));
    run.send(Command::AddTask {
        workflow_id: run.id,
        step: json!({"id": "audit", "task": "audit"}),
    })
    .unwrap();
    run.complete("a", json!(1));
    run.complete("audit", json!(1));
    let mut ids: Vec<_> = run.wf().tasks.keys().cloned().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), run.wf().tasks.len());
    assert_eq!(ids.len(), 4, "a, audit, b, c");
}

#[test]
fn an_added_step_must_be_a_valid_task_step_with_a_new_id() {
    let mut run = start(TWO, json!({}));
    for step in [
        json!({"id": "a", "task": "dup"}),
        json!({"id": "w", "wait": "1s"}),
        json!({"id": "x", "task": "x", "bogus": 1}),
    ] {
        let answer = run.send(Command::AddTask {
            workflow_id: run.id,
            step: step.clone(),
        });
        assert!(
            matches!(answer, Err(Rejection::Invalid(_))),
            "{step}: {answer:?}"
        );
    }
}

// ----- idempotency -----

#[test]
fn the_same_command_id_twice_is_applied_once() {
    let mut run = start(TWO, json!({}));
    let id = CommandId("complete-a".into());
    let command = run.complete_cmd("a", json!(1));
    let first = run.send_as(id.clone(), command.clone()).unwrap();
    assert!(!first.duplicate && !first.events.is_empty());
    let seq = run.wf().last_seq;
    let second = run.send_as(id, command).unwrap();
    assert!(second.duplicate);
    assert!(second.events.is_empty());
    assert_eq!(run.wf().last_seq, seq);
}

#[test]
fn a_redelivered_command_is_a_duplicate_even_after_the_state_is_rebuilt() {
    let mut run = start(TWO, json!({}));
    let id = CommandId("complete-a".into());
    let command = run.complete_cmd("a", json!(1));
    run.send_as(id.clone(), command.clone()).unwrap();
    // Failover: the new owner folds the log.
    let def = run.wf().definition.clone();
    let mut rebuilt = distorch_domain::workflow::Workflow::new(&run.log[0], def).unwrap();
    for env in &run.log[1..] {
        distorch_domain::workflow::evolve(&mut rebuilt, env);
    }
    run.state = Some(rebuilt);
    assert!(run.send_as(id, command).unwrap().duplicate);
}

#[test]
fn starting_an_existing_run_returns_it_without_events() {
    let mut run = start(TWO, json!({}));
    let seq = run.wf().last_seq;
    let again = run.try_start("two", json!({"other": true})).unwrap();
    assert!(again.events.is_empty());
    assert_eq!(
        again.result,
        Answer::Started {
            workflow_id: run.id,
            status: Status::Running,
            existing: true
        }
    );
    assert_eq!(run.wf().last_seq, seq);
    assert_eq!(run.wf().input, json!({}));
}

// ----- start validation -----

const TYPED: &str = r#"
name: typed
input_schema:
  type: object
  required: [order_id]
  properties:
    order_id: {type: string}
    amount: {type: number, minimum: 0}
steps: [{id: a, task: a}]
"#;

#[test]
fn input_violating_the_schema_is_invalid_and_names_the_field() {
    let mut run = Run::new(TYPED);
    let answer = run.try_start("typed", json!({"order_id": "o", "amount": -5}));
    let Err(Rejection::Invalid(msg)) = answer else {
        panic!("{answer:?}")
    };
    assert!(msg.contains("/amount"), "{msg}");
    assert!(run.state.is_none(), "no run was created");

    let answer = run.try_start("typed", json!({"amount": 5}));
    let Err(Rejection::Invalid(msg)) = answer else {
        panic!("{answer:?}")
    };
    assert!(msg.contains("order_id"), "{msg}");
}

#[test]
fn input_matching_the_schema_starts_the_run() {
    let mut run = Run::new(TYPED);
    run.try_start("typed", json!({"order_id": "o", "amount": 5}))
        .unwrap();
    assert_eq!(run.status(), Status::Running);
}

#[test]
fn an_unknown_definition_is_not_found() {
    let mut run = Run::new(TWO);
    let answer = run.try_start("nope", json!({}));
    assert!(matches!(answer, Err(Rejection::NotFound(_))), "{answer:?}");
    let answer = run.send(Command::StartWorkflow {
        workflow_id: WorkflowId(uuid::Uuid::from_u128(1)),
        definition: "two".into(),
        version: Some(7),
        input: json!({}),
        idempotency_key: None,
        parent: None,
    });
    assert!(matches!(answer, Err(Rejection::NotFound(_))), "{answer:?}");
}

#[test]
fn a_run_pins_the_definition_version_it_started_with() {
    let mut run = start(TWO, json!({}));
    run.defs
        .add(&TWO.replace("{id: d, task: d}", "{id: e, task: e}"));
    run.complete("a", json!(1));
    run.complete("b", json!(2));
    run.complete("c", json!(3));
    assert_eq!(run.active(), ["d"]);
    assert!(matches!(
        run.log[0].event,
        Event::WorkflowStarted { version: 1, .. }
    ));
}

#[test]
fn decide_answers_like_handle_without_touching_the_state() {
    let mut run = start(TWO, json!({}));
    let command = distorch_domain::CommandEnvelope {
        id: CommandId("c-1".into()),
        reply_to: None,
        command: run.complete_cmd("a", json!(1)),
    };
    let seq = run.wf().last_seq;
    let decided =
        distorch_domain::workflow::decide(run.state.as_ref(), &command, &run.defs, run.now)
            .unwrap();
    assert_eq!(run.wf().last_seq, seq, "decide is pure");
    assert_eq!(run.active(), ["a"]);
    let handled = run.send_as(command.id.clone(), command.command).unwrap();
    assert_eq!(decided, handled);
}
