//! Control flow of a run: sequences, `when`, `switch`, `parallel`, `foreach`, `wait` and
//! child runs, and the run's output.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::event::Event;
use distorch_domain::workflow::{Status, StepStatus, Timer};
use harness::{T0, start};
use serde_json::{Value, json};

const THREE_STEPS: &str = r#"
name: three
steps:
  - {id: a, task: ta}
  - {id: b, task: tb, input: '{prev: .steps.a.output}'}
  - {id: c, task: tc}
"#;

#[test]
fn a_sequence_runs_its_steps_one_after_another() {
    let mut run = start(THREE_STEPS, json!({"x": 1}));
    assert_eq!(
        run.names(),
        ["workflow_started", "step_started", "task_scheduled"]
    );
    assert_eq!(run.active(), ["a"]);
    assert_eq!(
        run.task("a").input,
        json!({"x": 1}),
        "input defaults to .input"
    );

    assert_eq!(
        run.complete("a", json!(1)),
        ["task_completed", "step_started", "task_scheduled"]
    );
    assert_eq!(run.active(), ["b"]);
    assert_eq!(run.task("b").input, json!({"prev": 1}));

    run.complete("b", json!(2));
    assert_eq!(run.active(), ["c"]);
    assert_eq!(
        run.complete("c", json!(3)),
        ["task_completed", "workflow_completed"]
    );
    assert_eq!(run.status(), Status::Completed);
    run.assert_replays();
}

#[test]
fn default_run_output_maps_top_level_step_ids_to_their_outputs() {
    let mut run = start(THREE_STEPS, json!({}));
    run.complete("a", json!("A"));
    run.complete("b", json!({"n": 2}));
    run.complete("c", json!(null));
    assert_eq!(
        run.wf().output,
        Some(json!({"a": "A", "b": {"n": 2}, "c": null}))
    );
    run.assert_replays();
}

#[test]
fn output_expression_shapes_the_run_output() {
    let yaml = r#"
name: shaped
output: '{order: .input.id, total: (.steps.a.output.n + .steps.b.output.n)}'
steps:
  - {id: a, task: ta}
  - {id: b, task: tb}
"#;
    let mut run = start(yaml, json!({"id": "o-1"}));
    run.complete("a", json!({"n": 2}));
    run.complete("b", json!({"n": 3}));
    assert_eq!(run.wf().output, Some(json!({"order": "o-1", "total": 5})));
    run.assert_replays();
}

#[test]
fn a_step_whose_when_is_false_is_skipped() {
    let yaml = r#"
name: guarded
steps:
  - {id: a, task: ta, when: '.input.go'}
  - {id: b, task: tb}
"#;
    let run = start(yaml, json!({"go": false}));
    assert_eq!(
        run.names(),
        [
            "workflow_started",
            "step_skipped",
            "step_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.step_status("a"), Some(StepStatus::Skipped));
    assert_eq!(run.active(), ["b"]);
    run.assert_replays();
}

#[test]
fn a_skipped_step_is_left_out_of_the_default_output() {
    let yaml = r#"
name: guarded
steps:
  - {id: a, task: ta, when: '.input.go'}
  - {id: b, task: tb}
"#;
    let mut run = start(yaml, json!({"go": false}));
    run.complete("b", json!(2));
    assert_eq!(run.wf().output, Some(json!({"b": 2})));
}

const ROUTE: &str = r#"
name: route
steps:
  - id: route
    switch:
      cases:
        - when: '.input.kind == "a"'
          steps: [{id: a1, task: ta}, {id: a2, task: ta}]
        - when: '.input.kind == "b"'
          steps: [{id: b1, task: tb}]
      default: [{id: d1, task: td}]
  - {id: after, task: tafter, input: '.steps.route.output'}
"#;

#[test]
fn switch_takes_the_first_matching_case_and_outputs_its_last_step() {
    let mut run = start(ROUTE, json!({"kind": "a"}));
    assert!(run.events().contains(&&Event::BranchChosen {
        step_key: "route".into(),
        branch: Some(0)
    }));
    assert_eq!(run.active(), ["a1"]);
    run.complete("a1", json!("first"));
    assert_eq!(run.active(), ["a2"]);
    let names = run.complete("a2", json!("last"));
    assert_eq!(
        names,
        [
            "task_completed",
            "step_completed",
            "step_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.wf().steps["route"].output, json!("last"));
    assert_eq!(run.task("after").input, json!("last"));
    run.assert_replays();
}

#[test]
fn switch_takes_the_default_when_no_case_matches() {
    let mut run = start(ROUTE, json!({"kind": "z"}));
    assert!(run.events().contains(&&Event::BranchChosen {
        step_key: "route".into(),
        branch: None
    }));
    assert_eq!(run.active(), ["d1"]);
    run.complete("d1", json!("dflt"));
    assert_eq!(run.wf().steps["route"].output, json!("dflt"));
    assert!(!run.wf().steps.contains_key("a1"));
    run.assert_replays();
}

#[test]
fn switch_without_a_matching_case_or_default_completes_with_null() {
    let yaml = r#"
name: route
steps:
  - id: route
    switch:
      cases: [{when: 'false', steps: [{id: a1, task: ta}]}]
  - {id: after, task: tafter}
"#;
    let run = start(yaml, json!({}));
    assert_eq!(run.wf().steps["route"].status, StepStatus::Completed);
    assert_eq!(run.wf().steps["route"].output, Value::Null);
    assert_eq!(run.active(), ["after"]);
}

const FAN_OUT: &str = r#"
name: fan
steps:
  - id: both
    parallel:
      join: JOIN
      branches:
        - steps: [{id: left, task: tl}]
        - steps: [{id: right1, task: tr}, {id: right2, task: tr}]
"#;

#[test]
fn parallel_join_all_starts_every_branch_and_outputs_in_branch_order() {
    let mut run = start(&FAN_OUT.replace("JOIN", "all"), json!({}));
    assert_eq!(run.active(), ["left", "right1"]);
    run.complete("right1", json!("r1"));
    run.complete("right2", json!("r2"));
    assert_eq!(run.step_status("both"), Some(StepStatus::Running));
    run.complete("left", json!("l"));
    assert_eq!(run.wf().steps["both"].output, json!(["l", "r2"]));
    assert_eq!(run.wf().output, Some(json!({"both": ["l", "r2"]})));
    assert_eq!(run.status(), Status::Completed);
    run.assert_replays();
}

#[test]
fn parallel_join_any_finishes_with_the_first_branch_and_cancels_the_others() {
    let mut run = start(&FAN_OUT.replace("JOIN", "any"), json!({}));
    let right1 = run.complete_cmd("right1", json!("late"));
    let names = run.complete("left", json!("won"));
    assert_eq!(
        names,
        [
            "task_completed",
            "task_cancelled",
            "step_completed",
            "workflow_completed"
        ]
    );
    assert_eq!(run.step_status("right1"), Some(StepStatus::Cancelled));
    assert!(
        !run.wf().steps.contains_key("right2"),
        "nothing more starts in a losing branch"
    );
    assert_eq!(run.wf().output, Some(json!({"both": "won"})));

    let late = run.send(right1);
    assert!(
        matches!(late, Err(distorch_domain::command::Rejection::Conflict(_))),
        "{late:?}"
    );
    run.assert_replays();
}

#[test]
fn parallel_join_any_blocks_the_losing_branch_mid_sequence() {
    let mut run = start(&FAN_OUT.replace("JOIN", "any"), json!({}));
    run.complete("right1", json!("r1"));
    assert_eq!(run.active(), ["left", "right2"]);
    run.complete("right2", json!("r2"));
    assert_eq!(run.wf().steps["both"].output, json!("r2"));
    assert_eq!(
        run.task("left").status,
        distorch_domain::workflow::TaskStatus::Cancelled
    );
    run.assert_replays();
}

const PACK: &str = r#"
name: pack
steps:
  - id: pack
    foreach:
      items: '.input.items'
      max_concurrency: 2
      steps:
        - {id: item, task: pack-item, input: '{item: .item, index: .index}'}
"#;

#[test]
fn foreach_gives_each_iteration_its_item_and_index() {
    let run = start(PACK, json!({"items": ["a", "b", "c", "d", "e"]}));
    assert_eq!(
        run.task("pack[0].item").input,
        json!({"item": "a", "index": 0})
    );
    assert_eq!(
        run.task("pack[1].item").input,
        json!({"item": "b", "index": 1})
    );
}

#[test]
fn foreach_never_runs_more_iterations_than_max_concurrency() {
    let mut run = start(PACK, json!({"items": ["a", "b", "c", "d", "e"]}));
    assert_eq!(run.active(), ["pack[0].item", "pack[1].item"]);
    // Finish out of order: a free slot goes to the next item not yet begun.
    run.complete("pack[1].item", json!("B"));
    assert_eq!(run.active(), ["pack[0].item", "pack[2].item"]);
    run.complete("pack[2].item", json!("C"));
    assert_eq!(run.active(), ["pack[0].item", "pack[3].item"]);
    run.complete("pack[0].item", json!("A"));
    assert_eq!(run.active(), ["pack[3].item", "pack[4].item"]);
    run.complete("pack[4].item", json!("E"));
    assert_eq!(run.active(), ["pack[3].item"]);
    run.complete("pack[3].item", json!("D"));
    assert!(run.active().is_empty());
    assert_eq!(
        run.wf().steps["pack"].output,
        json!(["A", "B", "C", "D", "E"]),
        "outputs in item order, not completion order"
    );
    assert_eq!(run.status(), Status::Completed);
    run.assert_replays();
}

#[test]
fn foreach_over_an_empty_array_completes_with_an_empty_array() {
    let run = start(PACK, json!({"items": []}));
    assert_eq!(run.wf().steps["pack"].output, json!([]));
    assert_eq!(run.status(), Status::Completed);
}

#[test]
fn foreach_over_a_non_array_fails_the_step() {
    let run = start(PACK, json!({"items": "nope"}));
    assert_eq!(run.status(), Status::Failed);
    let error = run.wf().error.clone().unwrap();
    assert_eq!(error.kind, "expression");
    assert!(error.message.contains("must give an array"), "{error:?}");
}

const WAIT: &str = r#"
name: nap
steps:
  - {id: nap, wait: 5s}
  - {id: after, task: t}
"#;

#[test]
fn wait_starts_a_timer_for_its_duration() {
    let run = start(WAIT, json!({}));
    assert!(run.events().contains(&&Event::TimerStarted {
        step_key: "nap".into(),
        fire_at_ms: T0 + 5_000
    }));
    assert_eq!(
        run.timers(),
        [(
            T0 + 5_000,
            Timer::Wait {
                step_key: "nap".into()
            }
        )]
    );
}

#[test]
fn wait_timer_fired_early_does_nothing() {
    let mut run = start(WAIT, json!({}));
    run.now = T0 + 4_999;
    let names = run.fire(Timer::Wait {
        step_key: "nap".into(),
    });
    assert!(names.is_empty(), "{names:?}");
    assert_eq!(run.step_status("nap"), Some(StepStatus::Running));
}

#[test]
fn wait_timer_fired_when_due_moves_on_to_the_next_step() {
    let mut run = start(WAIT, json!({}));
    let names = run.advance_to(T0 + 5_000);
    assert_eq!(names, ["step_completed", "step_started", "task_scheduled"]);
    assert_eq!(run.active(), ["after"]);
    run.assert_replays();
}

const PARENT: &str = r#"
name: parent
steps:
  - {id: invoice, workflow: {name: invoicing, version: 2, input: '{order: .input.id}'}}
  - {id: after, task: t, input: '.steps.invoice.output'}
"#;

#[test]
fn a_child_workflow_step_requests_a_child_with_a_deterministic_id() {
    let run = start(PARENT, json!({"id": "o-7"}));
    let expected = run.id.child("invoice");
    assert!(run.events().contains(&&Event::ChildWorkflowRequested {
        step_key: "invoice".into(),
        child_id: expected,
        definition: "invoicing".into(),
        version: Some(2),
        input: json!({"order": "o-7"}),
    }));
    assert_eq!(
        expected,
        run.id.child("invoice"),
        "same run, same step, same child"
    );
    assert_ne!(expected, run.id.child("other"));
}

#[test]
fn child_finished_output_becomes_the_step_output() {
    let mut run = start(PARENT, json!({"id": "o-7"}));
    let names = run.ok(distorch_domain::Command::ChildFinished {
        workflow_id: run.id,
        step_key: "invoice".into(),
        child_id: run.id.child("invoice"),
        output: Some(json!({"invoice": 42})),
        error: None,
    });
    assert_eq!(names, ["step_completed", "step_started", "task_scheduled"]);
    assert_eq!(run.task("after").input, json!({"invoice": 42}));
    run.assert_replays();
}

#[test]
fn child_finished_for_another_child_id_is_ignored() {
    let mut run = start(PARENT, json!({"id": "o-7"}));
    let names = run.ok(distorch_domain::Command::ChildFinished {
        workflow_id: run.id,
        step_key: "invoice".into(),
        child_id: run.id.child("nope"),
        output: Some(json!(1)),
        error: None,
    });
    assert!(names.is_empty());
    assert_eq!(run.step_status("invoice"), Some(StepStatus::Running));
}

#[test]
fn a_failed_child_applies_the_step_policy() {
    let mut run = start(PARENT, json!({"id": "o-7"}));
    run.ok(distorch_domain::Command::ChildFinished {
        workflow_id: run.id,
        step_key: "invoice".into(),
        child_id: run.id.child("invoice"),
        output: None,
        error: Some(harness::error("boom")),
    });
    assert_eq!(run.status(), Status::Failed);
    assert_eq!(run.wf().error.as_ref().unwrap().kind, "boom");
    run.assert_replays();
}

#[test]
fn a_child_started_inside_foreach_gets_an_id_per_iteration() {
    let yaml = r#"
name: many
steps:
  - id: each
    foreach:
      items: '.input'
      steps: [{id: sub, workflow: {name: child, input: '.item'}}]
"#;
    let run = start(yaml, json!([1, 2]));
    let children: Vec<_> = run
        .all_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ChildWorkflowRequested {
                child_id, input, ..
            } => Some((*child_id, input.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        children,
        [
            (run.id.child("each[0].sub"), json!(1)),
            (run.id.child("each[1].sub"), json!(2))
        ]
    );
}

#[test]
fn a_foreach_iteration_sees_its_own_earlier_steps() {
    let yaml = r#"
name: pipeline
steps:
  - id: each
    foreach:
      items: '.input'
      steps:
        - {id: fetch, task: fetch, input: '.item'}
        - {id: store, task: store, input: '{got: .steps.fetch.output, i: .index}'}
"#;
    let mut run = start(yaml, json!(["x", "y"]));
    run.complete("each[1].fetch", json!("Y"));
    assert_eq!(run.task("each[1].store").input, json!({"got": "Y", "i": 1}));
    run.complete("each[0].fetch", json!("X"));
    assert_eq!(run.task("each[0].store").input, json!({"got": "X", "i": 0}));
    run.complete("each[0].store", json!(0));
    run.complete("each[1].store", json!(1));
    assert_eq!(run.wf().output, Some(json!({"each": [0, 1]})));
    run.assert_replays();
}

#[test]
fn parallel_join_any_cancels_a_parked_task_in_a_losing_branch() {
    let yaml = r#"
name: race
steps:
  - id: both
    parallel:
      join: any
      branches:
        - steps: [{id: slow, task: slow, on_failure: park}]
        - steps: [{id: fast, task: fast}]
  - {id: after, task: after}
"#;
    let mut run = start(yaml, json!({}));
    run.fail("slow", harness::fatal("stuck"));
    assert_eq!(run.status(), Status::Parked);
    run.complete("fast", json!(1));
    assert_eq!(
        run.status(),
        Status::Running,
        "nothing waits for the parked task"
    );
    assert!(!run.task("slow").parked);
    assert_eq!(run.active(), ["after"]);
    let retry = run.retry_task("slow");
    assert!(
        matches!(retry, Err(distorch_domain::command::Rejection::Conflict(_))),
        "{retry:?}"
    );
    run.assert_replays();
}

#[test]
fn a_child_run_reports_its_parent_when_it_ends() {
    let mut run = harness::Run::new("name: child\nsteps: [{id: a, task: a}]");
    let parent = distorch_domain::command::ParentRef {
        workflow_id: distorch_domain::WorkflowId(uuid::Uuid::from_u128(7)),
        step_key: "invoice".into(),
    };
    run.send(distorch_domain::Command::StartWorkflow {
        workflow_id: run.id,
        definition: "child".into(),
        version: None,
        input: json!({}),
        idempotency_key: None,
        parent: Some(parent.clone()),
    })
    .unwrap();
    run.complete("a", json!(5));
    assert_eq!(
        run.events().last(),
        Some(&&Event::WorkflowCompleted {
            output: json!({"a": 5}),
            parent: Some(parent)
        })
    );
}

const APPROVAL_OR_TIMEOUT: &str = r#"
name: approval
steps:
  - id: race
    parallel:
      join: any
      branches:
        - steps: [{id: approve, task: approve}]
        - steps: [{id: deadline, wait: 1h}]
  - {id: after, task: after}
"#;

#[test]
fn parallel_join_any_a_timeout_wait_that_wins_cancels_the_task() {
    let mut run = start(APPROVAL_OR_TIMEOUT, json!({}));
    let names = run.advance_to(T0 + 3_600_000);
    assert_eq!(
        names,
        [
            "step_completed",
            "task_cancelled",
            "step_completed",
            "step_started",
            "task_scheduled"
        ]
    );
    assert_eq!(run.wf().steps["race"].output, Value::Null);
    assert_eq!(run.active(), ["after"]);
    run.assert_replays();
}

#[test]
fn parallel_join_any_drops_the_timer_of_a_losing_wait() {
    let mut run = start(APPROVAL_OR_TIMEOUT, json!({}));
    run.complete("approve", json!("yes"));
    assert_eq!(run.active(), ["after"]);
    assert!(
        !run.timers()
            .iter()
            .any(|(_, t)| matches!(t, Timer::Wait { .. })),
        "{:?}",
        run.timers()
    );
    // Even a timer the engine still held changes nothing.
    run.now = T0 + 3_600_000;
    let names = run.fire(Timer::Wait {
        step_key: "deadline".into(),
    });
    assert!(names.is_empty(), "{names:?}");
    run.assert_replays();
}
