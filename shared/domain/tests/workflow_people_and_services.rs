//! Signals, human tasks, SLAs and `http` steps in the state machine.

#[path = "workflow_harness.rs"]
mod harness;

use distorch_domain::command::{Command, Rejection};
use distorch_domain::definition::Assignment;
use distorch_domain::event::{Event, TaskKind};
use distorch_domain::workflow::{Status, TaskStatus, Timer};
use harness::{T0, start};
use serde_json::json;

#[test]
fn a_signal_sent_before_the_step_is_kept_and_becomes_its_output() {
    let yaml = r#"
name: sig
steps:
  - {id: a, task: ta}
  - {id: paid, signal: {name: payment}}
  - {id: b, task: tb, input: '.signals.payment'}
"#;
    let mut run = start(yaml, json!({}));
    let names = run.ok(Command::SendSignal {
        workflow_id: run.id,
        name: "payment".into(),
        payload: json!({"amount": 5}),
    });
    assert_eq!(names, ["signal_received"], "nothing waits for it yet");
    run.start_task("a");
    run.complete("a", json!(1));
    assert_eq!(run.wf().steps["paid"].output, json!({"amount": 5}));
    assert_eq!(
        run.task("b").input,
        json!({"amount": 5}),
        ".signals.<name> in jq"
    );
    run.assert_replays();
}

#[test]
fn each_signal_step_takes_its_own_signal_in_arrival_order() {
    let yaml =
        "name: two\nsteps:\n  - {id: s1, signal: {name: go}}\n  - {id: s2, signal: {name: go}}\n";
    let mut run = start(yaml, json!({}));
    run.ok(Command::SendSignal {
        workflow_id: run.id,
        name: "go".into(),
        payload: json!(1),
    });
    assert_eq!(run.status(), Status::Running);
    run.ok(Command::SendSignal {
        workflow_id: run.id,
        name: "go".into(),
        payload: json!(2),
    });
    assert_eq!(run.status(), Status::Completed);
    assert_eq!(run.wf().output, Some(json!({"s1": 1, "s2": 2})));
    run.assert_replays();
}

#[test]
fn a_signal_that_does_not_come_in_time_fails_the_step() {
    let yaml = "name: late\nsteps:\n  - {id: s, signal: {name: go, timeout: 1s}, on_failure: continue}\n  - {id: b, task: tb}\n";
    let mut run = start(yaml, json!({}));
    let names = run.advance_to(T0 + 1_000);
    assert!(names.contains(&"step_failed"), "{names:?}");
    assert_eq!(run.task("b").status, TaskStatus::Scheduled);
    run.assert_replays();
}

const APPROVAL: &str = r#"
name: approval
steps:
  - id: approve
    human:
      title: 'Approve refund of {.input.amount}'
      group: finance
      form: {type: object, required: [approved], properties: {approved: {type: boolean}}}
      timeout: 10s
      escalate: {after: 2s, to: {group: leads}}
  - {id: after, task: t, input: '.steps.approve.output'}
"#;

#[test]
fn a_human_task_is_claimed_validated_and_completed_by_a_person() {
    let mut run = start(APPROVAL, json!({"amount": 12}));
    let t = run.task_of("approve", TaskKind::Human).clone();
    assert_eq!(t.human.as_ref().unwrap().title, "Approve refund of 12");
    assert_eq!(
        t.human.as_ref().unwrap().assign.group.as_deref(),
        Some("finance")
    );
    run.ok(Command::ClaimHumanTask {
        task_id: t.id.clone(),
        user: "alice".into(),
    });
    let other = run.send(Command::ClaimHumanTask {
        task_id: t.id.clone(),
        user: "bob".into(),
    });
    assert!(matches!(other, Err(Rejection::Conflict(m)) if m.contains("alice")));
    let bad = run.send(Command::CompleteHumanTask {
        task_id: t.id.clone(),
        output: json!({"approved": "yes"}),
        user: "alice".into(),
    });
    assert!(
        matches!(&bad, Err(Rejection::Invalid(m)) if m.contains("approved")),
        "{bad:?}"
    );
    let worker = run.send(Command::CompleteTask {
        task_id: t.id.clone(),
        attempt: 1,
        output: json!({}),
        metrics: None,
    });
    assert!(
        matches!(worker, Err(Rejection::Conflict(_))),
        "workers cannot complete human tasks"
    );
    run.ok(Command::CompleteHumanTask {
        task_id: t.id.clone(),
        output: json!({"approved": true}),
        user: "alice".into(),
    });
    assert_eq!(run.task("after").input, json!({"approved": true}));
    let completed_by = run.log.iter().find_map(|e| match &e.event {
        Event::TaskCompleted { by, .. } => by.clone(),
        _ => None,
    });
    assert_eq!(completed_by.as_deref(), Some("alice"));
    run.assert_replays();
}

#[test]
fn an_unanswered_human_task_escalates_then_times_out() {
    let mut run = start(APPROVAL, json!({"amount": 1}));
    let names = run.advance_to(T0 + 2_000);
    assert_eq!(names, ["human_task_reassigned"]);
    let h = run
        .task_of("approve", TaskKind::Human)
        .human
        .clone()
        .unwrap();
    assert_eq!(
        h.assign,
        Assignment {
            assignee: None,
            group: Some("leads".into())
        }
    );
    assert!(h.escalated);
    let names = run.advance_to(T0 + 10_000);
    assert!(names.contains(&"workflow_failed"), "{names:?}");
    run.assert_replays();
}

#[test]
fn sla_warnings_and_breaches_fire_once_for_the_run_and_for_steps() {
    let yaml =
        "name: sla\nsla: {duration: 10s, warn_at: 50%}\nsteps:\n  - {id: a, task: ta, sla: 3s}\n";
    let mut run = start(yaml, json!({}));
    assert_eq!(run.advance_to(T0 + 3_000), ["sla_breached"]);
    assert_eq!(run.advance_to(T0 + 5_000), ["sla_warned"]);
    assert_eq!(run.advance_to(T0 + 10_000), ["sla_breached"]);
    assert!(run.advance_to(T0 + 20_000).is_empty(), "each fires once");
    let breaches: Vec<_> = run
        .log
        .iter()
        .filter_map(|e| match &e.event {
            Event::SlaBreached { step_key, sla_ms } => Some((step_key.clone(), *sla_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(breaches, [(Some("a".to_string()), 3_000), (None, 10_000)]);
    run.assert_replays();
}

const HTTP: &str = r#"
name: pay
fallbacks:
  - {id: later, task: queue-charge}
steps:
  - id: charge
    http:
      method: post
      url: 'http://payments.test/charges/{.input.order}'
      headers: {Idempotency-Key: '{.task_id}'}
      body: '{amount: .input.amount}'
    retry: {max_attempts: 2, initial_interval: 1s}
  - id: charge2
    http: {url: 'http://payments.test/x'}
    fallback: later
"#;

#[test]
fn an_http_step_renders_its_call_and_a_deferral_does_not_use_an_attempt() {
    let mut run = start(HTTP, json!({"order": "o-1", "amount": 3}));
    let t = run.task("charge").clone();
    let req = t.http.clone().expect("an http call");
    assert_eq!(req.method, "POST");
    assert_eq!(req.url, "http://payments.test/charges/o-1");
    assert_eq!(req.headers["Idempotency-Key"], t.id.to_string());
    assert_eq!(req.body, Some(json!({"amount": 3})));
    let names = run.ok(Command::DeferTask {
        task_id: t.id.clone(),
        attempt: 1,
        until_ms: T0 + 5_000,
        reason: "breaker open".into(),
    });
    assert_eq!(names, ["task_deferred"]);
    run.advance_to(T0 + 5_000);
    let t = run.task("charge").clone();
    assert_eq!(
        (t.attempt, t.max_attempts),
        (2, 3),
        "the deferred attempt was not counted"
    );
    run.ok(Command::FailTask {
        task_id: t.id.clone(),
        attempt: 2,
        error: harness::error("http.5xx"),
        metrics: None,
        retry_after_ms: Some(30_000),
    });
    let retry_at = run.task("charge").retry_at_ms.unwrap();
    assert_eq!(
        retry_at,
        T0 + 5_000 + 30_000,
        "Retry-After beats the 1s backoff"
    );
    run.assert_replays();
}

#[test]
fn an_open_breaker_runs_the_fallback_in_the_steps_place() {
    let mut run = start(HTTP, json!({"order": "o", "amount": 1}));
    let t = run.task("charge").clone();
    run.ok(Command::CompleteTask {
        task_id: t.id,
        attempt: 1,
        output: json!({"status": 200}),
        metrics: None,
    });
    let t2 = run.task("charge2").clone();
    let names = run.ok(Command::DeferTask {
        task_id: t2.id.clone(),
        attempt: 1,
        until_ms: T0 + 1,
        reason: "open".into(),
    });
    assert!(
        names.starts_with(&["task_cancelled", "fallback_taken"]),
        "{names:?}"
    );
    let fb = run.task("charge2/later").clone();
    assert_eq!(fb.task, "queue-charge");
    run.complete("charge2/later", json!({"queued": true}));
    assert_eq!(run.status(), Status::Completed);
    assert_eq!(
        run.wf().output.as_ref().unwrap()["charge2"],
        json!({"queued": true})
    );
    run.assert_replays();
    let _ = Timer::Wait {
        step_key: String::new(),
    };
}

#[test]
fn a_parked_human_task_retried_by_an_operator_is_back_in_the_inbox_unclaimed() {
    let yaml = r#"
name: parked-approval
steps:
  - {id: approve, human: {title: t, assignee: ann, timeout: 1s}, on_failure: park}
"#;
    let mut run = start(yaml, json!({}));
    let id = run.task_of("approve", TaskKind::Human).id.clone();
    run.ok(Command::ClaimHumanTask {
        task_id: id.clone(),
        user: "ann".into(),
    });
    run.advance_to(T0 + 1_000);
    assert_eq!(run.status(), Status::Parked);
    run.now = T0 + 5_000;
    run.ok(Command::RetryTask {
        task_id: id.clone(),
    });
    let t = run.task_of("approve", TaskKind::Human).clone();
    assert_eq!(t.status, TaskStatus::Scheduled);
    assert_eq!(t.human.as_ref().unwrap().claimed_by, None);
    assert_eq!(
        run.timer_at(|t| matches!(t, Timer::HumanTimeout { .. })),
        T0 + 6_000,
        "timeout counts from the retry"
    );
    run.ok(Command::ClaimHumanTask {
        task_id: id.clone(),
        user: "bob".into(),
    });
    run.ok(Command::CompleteHumanTask {
        task_id: id,
        output: json!("ok"),
        user: "bob".into(),
    });
    assert_eq!(run.status(), Status::Completed);
    run.assert_replays();
}
