//! What a run that has ended answers from what its owner keeps of it (its id, status and
//! last sequence number, see `workflow::answer_ended`): the same as its full state would.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::command::{Answer, Command, Rejection};
use distorch_domain::ids::WorkflowId;
use distorch_domain::workflow::{Decision, Status, Timer, answer_ended};
use harness::{Run, error, start};
use serde_json::json;

const ONE: &str = "name: one\nsteps:\n  - {id: a, task: a, timeout: 10s}\n";

/// Given a run of `ONE` ended with `status`.
fn ended(status: Status) -> Run {
    let mut run = start(ONE, json!({}));
    match status {
        Status::Completed => {
            run.start_task("a");
            run.complete("a", json!({"done": true}));
        }
        Status::Failed => {
            run.start_task("a");
            run.fail("a", harness::fatal("broken"));
        }
        Status::Cancelled => {
            run.cancel(false).expect("cancel");
        }
        other => panic!("not a status this test reaches: {other:?}"),
    }
    assert_eq!(run.status(), status);
    run
}

/// Every kind of command a client, a worker, the saga or a timer may still send an ended run.
fn late_commands(run: &Run) -> Vec<Command> {
    let id = run.id;
    let task = run.task("a");
    vec![
        Command::StartWorkflow {
            workflow_id: id,
            definition: "one".into(),
            version: None,
            input: json!({}),
            idempotency_key: None,
            parent: None,
        },
        Command::CancelWorkflow {
            workflow_id: id,
            compensate: true,
            reason: None,
        },
        Command::PauseWorkflow { workflow_id: id },
        Command::ResumeWorkflow { workflow_id: id },
        Command::SendSignal {
            workflow_id: id,
            name: "go".into(),
            payload: json!(null),
        },
        Command::CompleteTask {
            task_id: task.id.clone(),
            attempt: task.attempt,
            output: json!({"late": true}),
            metrics: None,
        },
        Command::FailTask {
            task_id: task.id.clone(),
            attempt: task.attempt,
            error: error("late"),
            retry_after_ms: None,
            metrics: None,
        },
        Command::Heartbeat {
            task_id: task.id.clone(),
            attempt: task.attempt,
            checkpoint: None,
        },
        Command::ChildFinished {
            workflow_id: id,
            step_key: "a".into(),
            child_id: WorkflowId(uuid::Uuid::from_u128(7)),
            output: Some(json!({})),
            error: None,
        },
        Command::FireTimer {
            workflow_id: id,
            timer: Timer::StartToClose {
                task_id: task.id.clone(),
                attempt: task.attempt,
            },
        },
    ]
}

fn same_answer(name: &str, full: Result<Decision, Rejection>, kept: Result<Answer, Rejection>) {
    match (full, kept) {
        (Ok(decision), Ok(result)) => {
            assert!(
                decision.events.is_empty(),
                "{name}: an ended run appends nothing"
            );
            assert_eq!(decision.result, result, "{name}");
        }
        (Err(Rejection::Conflict(_)), Err(Rejection::Conflict(why))) => {
            assert!(why.contains("workflow"), "{name}: {why}");
        }
        (full, kept) => panic!("{name}: the full state answers {full:?}, the ended run {kept:?}"),
    }
}

#[test]
fn an_ended_run_answers_every_late_command_as_its_full_state_would() {
    for status in [Status::Completed, Status::Failed, Status::Cancelled] {
        let mut run = ended(status);
        for command in late_commands(&run) {
            let name = format!("{} after {status:?}", command.name());
            let kept = answer_ended(run.id, status, &command);
            let full = run.send(command);
            same_answer(&name, full, kept);
        }
    }
}

#[test]
fn a_repeated_start_of_an_ended_run_finds_it() {
    let run = ended(Status::Completed);
    let start = &late_commands(&run)[0];
    let result = answer_ended(run.id, Status::Completed, start).expect("found");
    assert_eq!(
        result,
        Answer::Started {
            workflow_id: run.id,
            status: Status::Completed,
            existing: true
        }
    );
}
