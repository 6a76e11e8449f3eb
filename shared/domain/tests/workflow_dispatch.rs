//! Which attempts a run offers to workers (`Workflow::pending_dispatches`): what an engine
//! appends again to `tasks.<queue>` when it takes a partition over, because a crash between
//! the `TaskScheduled` event and its offer must not leave an attempt no worker will see.

#[path = "workflow_harness.rs"]
mod harness;

use harness::{error, fatal, start};
use serde_json::json;

/// `(step id, attempt)` of every attempt the run offers to workers.
fn offered(run: &harness::Run) -> Vec<(String, u32)> {
    run.wf()
        .pending_dispatches()
        .into_iter()
        .map(|d| (d.step_id, d.attempt))
        .collect()
}

#[test]
fn a_scheduled_attempt_is_offered_with_what_its_first_offer_carried() {
    let yaml = "name: one\nsteps:\n  - {id: a, task: work, queue: q, input: '{n: .input.n}', heartbeat_timeout: 5s}\n";
    let run = start(yaml, json!({"n": 7}));
    let offers = run.wf().pending_dispatches();
    assert_eq!(offers.len(), 1);
    let d = &offers[0];
    let t = run.task("a");
    assert_eq!(d.task_id, t.id);
    assert_eq!(d.workflow_id, run.wf().id);
    assert_eq!((d.task.as_str(), d.queue.as_str()), ("work", "q"));
    assert_eq!(d.attempt, 1);
    assert_eq!(d.input, json!({"n": 7}));
    assert_eq!(d.heartbeat_timeout_ms, Some(5_000));
    assert_eq!(d.checkpoint, None);
}

#[test]
fn a_started_or_finished_attempt_is_not_offered_again() {
    let yaml = "name: two\nsteps:\n  - {id: a, task: t}\n  - {id: b, task: t}\n";
    let mut run = start(yaml, json!({}));
    run.start_task("a");
    assert_eq!(offered(&run), [], "a running attempt has its worker");
    run.complete("a", json!(1));
    assert_eq!(offered(&run), [("b".to_string(), 1)]);
    run.start_task("b");
    run.complete("b", json!(2));
    assert_eq!(offered(&run), [], "an ended run offers nothing");
}

#[test]
fn an_attempt_waiting_for_its_backoff_is_offered_only_once_it_is_due() {
    let yaml = "name: flaky\nsteps:\n  - {id: a, task: t, retry: {max_attempts: 3, initial_interval: 1s}}\n";
    let mut run = start(yaml, json!({}));
    run.start_task("a");
    run.heartbeat("a", Some(json!({"done": 40})));
    run.fail("a", error("unavailable"));
    assert_eq!(
        offered(&run),
        [],
        "the retry timer offers it, not a takeover"
    );
    let due = run.timers()[0].0;
    run.advance_to(due);
    assert_eq!(offered(&run), [("a".to_string(), 2)]);
    assert_eq!(
        run.wf().pending_dispatches()[0].checkpoint,
        Some(json!({"done": 40})),
        "the next attempt resumes from the last checkpoint"
    );
}

#[test]
fn parked_human_and_http_tasks_are_never_offered_to_workers() {
    let parked =
        "name: p\nsteps:\n  - {id: a, task: t, retry: {max_attempts: 1}, on_failure: park}\n";
    let mut run = start(parked, json!({}));
    run.fail("a", fatal("boom"));
    assert!(run.task("a").parked);
    assert_eq!(offered(&run), []);

    let human = "name: h\nsteps:\n  - id: ok\n    human: {title: approve, group: finance}\n";
    let run = start(human, json!({}));
    assert_eq!(
        offered(&run),
        [],
        "people claim human tasks through the API"
    );

    let http = "name: c\nsteps:\n  - id: call\n    http: {url: 'http://svc.test/x'}\n";
    let run = start(http, json!({}));
    assert_eq!(offered(&run), [], "the saga processor makes http calls");
}

#[test]
fn parallel_branches_offer_each_waiting_attempt_in_task_order() {
    let yaml = r#"
name: fan
steps:
  - id: both
    parallel:
      branches:
        - steps: [{id: left, task: t}]
        - steps: [{id: right, task: t}]
"#;
    let mut run = start(yaml, json!({}));
    assert_eq!(
        offered(&run),
        [("left".to_string(), 1), ("right".to_string(), 1)]
    );
    run.start_task("right");
    assert_eq!(offered(&run), [("left".to_string(), 1)]);
}

/// A `StartTask` whose answer was lost (its engine failed over) is asked again with the same
/// command id; whoever asks hands the attempt out when it is accepted.
/// Returns the number of events the start appended.
fn start_again(run: &mut harness::Run, step_key: &str, id: &str) -> Result<usize, String> {
    let t = run.task(step_key);
    let command = distorch_domain::command::Command::StartTask {
        task_id: t.id.clone(),
        attempt: t.attempt,
        worker_id: "w1".into(),
        via: None,
        replaces: None,
    };
    run.send_as(distorch_domain::CommandId(id.into()), command)
        .map(|d| d.events.len())
        .map_err(|r| r.to_string())
}

#[test]
fn a_start_asked_again_is_accepted_while_its_attempt_runs_and_refused_once_it_ended() {
    // Given a run whose first step was started by command "start-1"
    let yaml = "name: again\nsteps:\n  - {id: a, task: t}\n  - {id: b, task: t}\n";
    let mut run = start(yaml, json!({}));
    assert_eq!(start_again(&mut run, "a", "start-1"), Ok(1), "TaskStarted");
    assert_eq!(run.task("a").status.as_str(), "running");

    // When the same start is asked again while the attempt runs, then it is accepted again
    // and changes nothing
    assert_eq!(start_again(&mut run, "a", "start-1"), Ok(0));

    // When the attempt completes and the same start is asked again, then it is refused:
    // handing it out would run completed work again
    let task_a = run.task("a").clone();
    run.complete("a", json!(1));
    let again = distorch_domain::command::Command::StartTask {
        task_id: task_a.id.clone(),
        attempt: task_a.attempt,
        worker_id: "w1".into(),
        via: None,
        replaces: None,
    };
    let refused = run
        .send_as(distorch_domain::CommandId("start-1".into()), again)
        .expect_err("an ended attempt is not started again");
    assert!(
        refused.to_string().contains("no longer running"),
        "{refused}"
    );
    // And a different command id is refused as it always was
    assert_eq!(start_again(&mut run, "b", "start-2"), Ok(1));
    assert!(start_again(&mut run, "b", "start-3").is_err());
}

/// A `StartTask` of step `step_key`'s current attempt by command `id`, taken through `via`
/// and replacing `replaces`. Returns the number of events it appended.
fn start_via(
    run: &mut harness::Run,
    step_key: &str,
    id: &str,
    via: &str,
    replaces: Option<&str>,
) -> Result<usize, String> {
    let t = run.task(step_key);
    let command = distorch_domain::command::Command::StartTask {
        task_id: t.id.clone(),
        attempt: t.attempt,
        worker_id: format!("worker-of-{via}"),
        via: Some(via.into()),
        replaces: replaces.map(Into::into),
    };
    run.send_as(distorch_domain::CommandId(id.into()), command)
        .map(|d| d.events.len())
        .map_err(|r| r.to_string())
}

#[test]
fn a_running_attempt_is_taken_over_only_from_the_gone_process_it_was_started_via() {
    // Given a run whose first step's attempt was started via API replica "b"
    let yaml = "name: takeover\nsteps:\n  - {id: a, task: t}\n  - {id: b, task: t}\n";
    let mut run = start(yaml, json!({}));
    assert_eq!(start_via(&mut run, "a", "b.start.1", "b", None), Ok(1));
    assert_eq!(run.task("a").started_via.as_deref(), Some("b"));

    // When replica "a" starts it again replacing "c" (not who started it), then it is
    // refused as already running
    let refused = start_via(&mut run, "a", "a.start.1", "a", Some("c"));
    assert!(refused.unwrap_err().contains("already running"));
    // Nor does a start that replaces nobody take it
    assert!(start_via(&mut run, "a", "a.start.2", "a", None).is_err());

    // When replica "a" starts it replacing "b", then the same attempt is started again, via
    // "a", for a's worker
    assert_eq!(start_via(&mut run, "a", "a.start.3", "a", Some("b")), Ok(1));
    let a = run.task("a");
    assert_eq!((a.attempt, a.started_via.as_deref()), (1, Some("a")));
    // And "b" no longer holds it: a second takeover from "b" is refused
    assert!(start_via(&mut run, "a", "c.start.1", "c", Some("b")).is_err());

    // When the attempt completed, no takeover hands it out again
    run.complete("a", json!(1));
    assert!(start_via(&mut run, "b", "b.start.2", "b", None).is_ok());
    run.complete("b", json!(2));
    let ended = start_via(&mut run, "a", "a.start.4", "a", Some("a"));
    assert!(ended.is_err(), "a completed attempt is not started again");
}
