//! The execution path of a run (`ExecutionPath::build`): given a run driven through the real
//! state machine, when its events are folded, then the path says which steps ran, in what
//! order, how they ended, and what did not run.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::definition::Definition;
use distorch_domain::path::{Branch, ExecutionPath, Outcome, PathKind, SkipReason};
use distorch_domain::workflow::DefinitionSource;
use harness::{Run, T0, fatal, start};
use serde_json::json;
use std::sync::Arc;

fn definition(run: &Run, name: &str) -> Arc<Definition> {
    run.defs.definition(name, None).expect("registered")
}

/// Then: the path with the run's definition.
fn path(run: &Run, name: &str) -> ExecutionPath {
    ExecutionPath::build(&run.log, Some(&definition(run, name)))
}

/// `(step key, kind, outcome)` of every entry, in order.
fn summary(path: &ExecutionPath) -> Vec<(String, &'static str, &'static str)> {
    path.entries
        .iter()
        .map(|e| (e.step_key.clone(), e.kind.as_str(), e.outcome.as_str()))
        .collect()
}

fn row(
    key: &str,
    kind: &'static str,
    outcome: &'static str,
) -> (String, &'static str, &'static str) {
    (key.to_owned(), kind, outcome)
}

#[test]
fn a_sequence_lists_its_steps_in_order_with_times_and_attempts() {
    let mut run = start(
        "name: seq\nsteps:\n  - {id: a, task: ta}\n  - {id: b, task: tb}\n",
        json!({}),
    );
    run.complete("a", json!(1));
    run.fail("b", harness::error("flaky"));
    run.advance_to(T0 + 60_000);
    run.complete("b", json!(2));

    let path = path(&run, "seq");
    assert_eq!(
        summary(&path),
        [row("a", "task", "completed"), row("b", "task", "completed")]
    );
    let b = path.entry("b").expect("b ran");
    assert_eq!(b.attempts, 2, "the retry counts as a second attempt");
    assert_eq!(
        b.error, None,
        "a completion clears the last attempt's error"
    );
    assert!(b.started_at.is_some() && b.finished_at.is_some());
    assert!(path.entries[0].seq < b.seq);
}

const ROUTE: &str = r#"
name: route
steps:
  - id: pick
    switch:
      cases:
        - when: '.input.risk == "high"'
          steps: [{id: review, task: review}]
        - when: '.input.risk == "low"'
          steps: [{id: fast, task: fast}, {id: log, task: log}]
      default: [{id: hold, task: hold}]
  - {id: notify, task: notify, when: '.input.notify'}
  - {id: done, task: done}
"#;

#[test]
fn a_switch_shows_the_branch_it_took_and_the_steps_it_did_not_run() {
    let mut run = start(ROUTE, json!({"risk": "low", "notify": false}));
    run.complete("fast", json!(1));
    run.complete("log", json!(2));
    run.complete("done", json!(3));

    let path = path(&run, "route");
    assert_eq!(
        summary(&path),
        [
            row("pick", "switch", "completed"),
            row("review", "task", "skipped"),
            row("hold", "task", "skipped"),
            row("fast", "task", "completed"),
            row("log", "task", "completed"),
            row("notify", "task", "skipped"),
            row("done", "task", "completed"),
        ]
    );
    assert_eq!(path.entry("pick").unwrap().branch, Some(Branch::Case(1)));
    assert_eq!(
        path.entry("review").unwrap().skip_reason,
        Some(SkipReason::BranchNotTaken)
    );
    assert_eq!(path.entry("hold").unwrap().parent.as_deref(), Some("pick"));
    assert_eq!(
        path.entry("notify").unwrap().skip_reason,
        Some(SkipReason::When)
    );
    assert_eq!(path.entry("notify").unwrap().started_at, None);
}

const ORDER: &str = r#"
name: order
defaults:
  retry: {max_attempts: 2, initial_interval: 1s}
steps:
  - {id: reserve, task: reserve, compensate: release}
  - {id: charge, task: charge, compensate: refund}
  - {id: ship, task: ship}
compensations:
  release: {task: release}
  refund: {task: refund}
"#;

#[test]
fn a_failed_run_shows_its_compensations_after_the_failure_in_reverse_order() {
    let mut run = start(ORDER, json!({}));
    run.complete("reserve", json!({}));
    run.complete("charge", json!({}));
    run.fail("ship", fatal("no_courier"));
    run.complete("charge", json!("refunded"));
    run.complete("reserve", json!("released"));

    let path = path(&run, "order");
    assert_eq!(
        summary(&path),
        [
            row("reserve", "task", "compensated"),
            row("charge", "task", "compensated"),
            row("ship", "task", "failed"),
            row("charge", "compensation", "completed"),
            row("reserve", "compensation", "completed"),
        ]
    );
    let ship = path.entry("ship").unwrap();
    assert_eq!(
        ship.error.as_ref().map(|e| e.kind.as_str()),
        Some("no_courier")
    );
    assert_eq!(
        ship.attempts, 1,
        "a non-retryable failure makes no second attempt"
    );
}

#[test]
fn parallel_and_foreach_children_name_their_container() {
    let yaml = r#"
name: fan
steps:
  - id: both
    parallel:
      branches:
        - steps: [{id: left, task: l}]
        - steps: [{id: right, task: r}]
  - id: each
    foreach: {items: '.input.items', steps: [{id: item, task: i}]}
"#;
    let mut run = start(yaml, json!({"items": [1, 2]}));
    run.complete("left", json!(1));
    run.complete("right", json!(2));
    run.complete("each[0].item", json!(1));
    run.complete("each[1].item", json!(2));

    let path = path(&run, "fan");
    assert_eq!(
        summary(&path),
        [
            row("both", "parallel", "completed"),
            row("left", "task", "completed"),
            row("right", "task", "completed"),
            row("each", "foreach", "completed"),
            row("each[0].item", "task", "completed"),
            row("each[1].item", "task", "completed"),
        ]
    );
    assert_eq!(path.entry("right").unwrap().parent.as_deref(), Some("both"));
    assert_eq!(
        path.entry("each[1].item").unwrap().parent.as_deref(),
        Some("each")
    );
}

#[test]
fn a_cancelled_run_ends_its_waiting_steps_cancelled() {
    let yaml = "name: nap\nsteps:\n  - {id: a, task: ta}\n  - {id: sleep, wait: 1h}\n";
    let mut run = start(yaml, json!({}));
    run.complete("a", json!(1));
    run.cancel(false).expect("cancel accepted");

    let path = path(&run, "nap");
    assert_eq!(
        summary(&path),
        [
            row("a", "task", "completed"),
            row("sleep", "wait", "cancelled")
        ]
    );
    assert!(path.entry("sleep").unwrap().finished_at.is_some());
}

#[test]
fn an_operator_skip_and_a_parked_task_show_as_such() {
    let yaml = r#"
name: ops
defaults: {retry: {max_attempts: 1}, on_failure: park}
steps:
  - {id: a, task: ta}
  - {id: b, task: tb}
"#;
    let mut run = start(yaml, json!({}));
    run.fail("a", harness::error("down"));
    assert_eq!(
        path(&run, "ops").entry("a").unwrap().outcome,
        Outcome::Parked
    );

    run.skip_task("a", json!("by hand")).expect("skip accepted");
    let path = path(&run, "ops");
    let a = path.entry("a").unwrap();
    assert_eq!(a.outcome, Outcome::Skipped);
    assert_eq!(a.skip_reason, Some(SkipReason::Operator));
    assert_eq!(path.entry("b").unwrap().outcome, Outcome::Running);
}

#[test]
fn without_the_definition_kinds_are_inferred_from_the_events() {
    let yaml = r#"
name: infer
steps:
  - id: pick
    switch: {cases: [{when: 'true', steps: [{id: a, task: ta}]}]}
  - {id: each, foreach: {items: '[1]', steps: [{id: item, task: i}]}}
  - {id: nap, wait: 1s}
"#;
    let mut run = start(yaml, json!({}));
    run.complete("a", json!(1));
    run.complete("each[0].item", json!(1));

    let path = ExecutionPath::build(&run.log, None);
    assert_eq!(
        summary(&path),
        [
            row("pick", "switch", "completed"),
            row("a", "task", "completed"),
            row("each", "foreach", "completed"),
            row("each[0].item", "task", "completed"),
            row("nap", "wait", "running"),
        ]
    );
    assert_eq!(path.entry("nap").unwrap().kind, PathKind::Wait);
}
