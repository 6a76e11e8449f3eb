//! End to end through `distorch standalone`: definitions, the semantics of a run, operator
//! verbs, and bad input, driven over HTTP with real workers.

mod common;

use common::{Server, tempdir};
use serde_json::{Value, json};

const ORDER: &str = r#"
name: order
input_schema: {type: object, required: [order_id]}
output: '{order: .input.order_id, tracking: .steps.ship.output.tracking}'
defaults:
  retry: {max_attempts: 3, initial_interval: 50ms, backoff_coefficient: 2.0, max_interval: 1s}
steps:
  - id: reserve
    task: reserve-stock
    queue: inventory
    compensate: release
  - id: charge
    task: charge-card
    queue: payments
    input: '{amount: .input.amount}'
    compensate: refund
  - id: ship
    task: ship
    queue: shipping
compensations:
  release: {task: release-stock, queue: inventory, input: '.steps.reserve.output'}
  refund: {task: refund, queue: payments}
"#;

#[tokio::test]
async fn a_run_goes_through_its_steps_with_workers_and_ends_with_its_output() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let (status, body) = api.register_yaml(ORDER).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"name": "order", "version": 1, "unchanged": false})
    );

    let id = api
        .start("order", json!({"order_id": "o-1", "amount": 42}))
        .await;
    let reserve = api.take("inventory").await;
    assert_eq!(reserve["step_id"], "reserve");
    assert_eq!(reserve["input"], json!({"order_id": "o-1", "amount": 42}));
    assert_eq!(api.complete(&reserve, json!({"held": true})).await.0, 200);

    let charge = api.take("payments").await;
    assert_eq!(charge["input"], json!({"amount": 42}), "input jq applied");
    assert_eq!(api.complete(&charge, json!({"charged": 42})).await.0, 200);
    let ship = api.take("shipping").await;
    assert_eq!(api.complete(&ship, json!({"tracking": "T-9"})).await.0, 200);

    let run = api.wait_status(&id, "completed").await;
    assert_eq!(run["output"], json!({"order": "o-1", "tracking": "T-9"}));
    let tasks = run["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    assert!(
        tasks
            .iter()
            .all(|t| t["status"] == "completed" && t["kind"] == "step")
    );

    let (status, history) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(status, 200);
    let events = history["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "history is gapless and ordered"
    );
    assert_eq!(events.first().unwrap()["type"], "workflow_started");
    assert_eq!(events.last().unwrap()["type"], "workflow_completed");
}

#[tokio::test]
async fn a_long_poll_of_a_run_answers_when_the_run_ends_or_the_wait_is_over() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml =
        "name: lp\nsteps:\n  - {id: a, task: a, queue: lp}\n  - {id: b, task: b, queue: lp}\n";
    assert_eq!(api.register_yaml(yaml).await.0, 201);
    let id = api.start("lp", json!({})).await;

    let (status, body) = api.get(&format!("/workflows/{id}?wait_ms=200")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "running", "the wait ran out first");

    let waiting = tokio::spawn({
        let (api, id) = (api.clone(), id.clone());
        async move { api.get(&format!("/workflows/{id}?wait_ms=30000")).await }
    });
    let a = api.take("lp").await;
    assert_eq!(api.complete(&a, json!(1)).await.0, 200);
    let b = api.take("lp").await;
    api.wait_for(&id, "step b started", |w| {
        w["tasks"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["step_id"] == "b" && t["status"] == "running")
        })
    })
    .await;
    assert!(
        !waiting.is_finished(),
        "the long-poll answered before the run ended"
    );
    assert_eq!(api.complete(&b, json!(2)).await.0, 200);
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["output"], json!({"a": 1, "b": 2}));
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_its_stale_completion_is_refused() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let id = api.start("order", json!({"order_id": "o-2"})).await;

    let first = api.take("inventory").await;
    assert_eq!(first["attempt"], 1);
    assert_eq!(api.fail(&first, "db_down", true).await.0, 200);
    let (status, body) = api.complete(&first, json!({})).await;
    assert_eq!(status, 409, "completion of a failed attempt: {body}");
    assert_eq!(body["status"], 409);
    assert!(
        body["detail"].as_str().unwrap().contains("attempt 1"),
        "{body}"
    );

    let second = api.take("inventory").await;
    assert_eq!(second["attempt"], 2);
    assert_eq!(
        second["task_id"], first["task_id"],
        "a retry is the same task"
    );
    assert_eq!(api.complete(&second, json!({"held": true})).await.0, 200);
    let run = api
        .wait_for(&id, "charge scheduled", |w| {
            w["tasks"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(run["tasks"][0]["attempt"], 2);
    assert_eq!(run["tasks"][0]["status"], "completed");
}

#[tokio::test]
async fn exhausted_attempts_compensate_completed_steps_in_reverse_order() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let id = api.start("order", json!({"order_id": "o-3"})).await;
    let reserve = api.take("inventory").await;
    api.complete(&reserve, json!({"hold": "h-1"})).await;
    let charge = api.take("payments").await;
    api.complete(&charge, json!({"charge": "c-1"})).await;
    let ship = api.take("shipping").await;
    assert_eq!(api.fail(&ship, "address_invalid", false).await.0, 200);

    // Reverse completion order: refund (charge) first, then release (reserve).
    let refund = api.take("payments").await;
    assert_eq!(refund["task"], "refund");
    // The read model follows the log; wait for it rather than race it.
    api.wait_status(&id, "compensating").await;
    api.complete(&refund, json!({})).await;
    let release = api.take("inventory").await;
    assert_eq!(release["task"], "release-stock");
    assert_eq!(
        release["input"],
        json!({"hold": "h-1"}),
        "compensation input jq sees step outputs"
    );
    api.complete(&release, json!({})).await;

    let run = api.wait_status(&id, "compensated").await;
    let kinds: Vec<&str> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "compensation").count(), 2);
}

#[tokio::test]
async fn a_parked_task_waits_in_the_dead_letter_queue_until_an_operator_skips_it() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = r#"
name: parking
steps:
  - {id: a, task: flaky, on_failure: park, retry: {max_attempts: 1}}
  - {id: b, task: after, input: '.steps.a.output'}
"#;
    assert_eq!(api.register_yaml(yaml).await.0, 201);
    let id = api.start("parking", json!({})).await;
    let a = api.take("flaky").await;
    api.fail(&a, "boom", true).await;
    api.wait_status(&id, "parked").await;
    let (_, dlq) = api.get("/dlq").await;
    let item = dlq["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["workflow_id"] == id.as_str())
        .cloned();
    let item = item.expect("parked task listed in the DLQ");
    assert_eq!(item["step_id"], "a");
    assert_eq!(item["error"]["type"], "boom");

    let task_id = a["task_id"].as_str().unwrap();
    let (status, body) = api
        .post(
            &format!("/tasks/{task_id}/skip"),
            json!({"output": {"manual": true}}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    let b = api.take("after").await;
    assert_eq!(
        b["input"],
        json!({"manual": true}),
        "the skip output feeds the next step"
    );
    api.complete(&b, json!(1)).await;
    api.wait_status(&id, "completed").await;
    let (_, dlq) = api.get("/dlq").await;
    assert!(
        dlq["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["workflow_id"] != id.as_str())
    );
}

#[tokio::test]
async fn a_parked_task_can_be_retried_by_an_operator() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let yaml = "name: retrying\nsteps:\n  - {id: a, task: flaky2, on_failure: park, retry: {max_attempts: 1}}\n";
    api.register_yaml(yaml).await;
    let id = api.start("retrying", json!({})).await;
    let a = api.take("flaky2").await;
    api.fail(&a, "boom", true).await;
    api.wait_status(&id, "parked").await;
    let task_id = a["task_id"].as_str().unwrap();
    let (status, _) = api
        .post(&format!("/tasks/{task_id}/retry"), json!({}))
        .await;
    assert!(status == 200 || status == 202);
    let again = api.take("flaky2").await;
    assert_eq!(again["attempt"], 2);
    api.complete(&again, json!("ok")).await;
    api.wait_status(&id, "completed").await;
    // Retrying something that is not parked is a conflict.
    let (status, body) = api
        .post(&format!("/tasks/{task_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn cancel_pause_and_resume_are_operator_verbs_with_conflicts() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let id = api.start("order", json!({"order_id": "o-4"})).await;
    let reserve = api.take("inventory").await;

    let (status, body) = api.post(&format!("/workflows/{id}/pause"), json!({})).await;
    assert!(status == 200 || status == 202, "{body}");
    api.wait_status(&id, "paused").await;
    let (status, _) = api.post(&format!("/workflows/{id}/pause"), json!({})).await;
    assert_eq!(status, 409, "pausing twice");
    // A running attempt may finish while paused, but nothing new is dispatched.
    assert_eq!(api.complete(&reserve, json!({})).await.0, 200);
    assert!(
        api.poll("payments", 1, 300).await.is_empty(),
        "nothing dispatched while paused"
    );
    api.post(&format!("/workflows/{id}/resume"), json!({}))
        .await;
    let charge = api.take("payments").await;
    assert_eq!(charge["step_id"], "charge");

    let (status, _) = api
        .post(&format!("/workflows/{id}/cancel"), json!({}))
        .await;
    assert!(status == 200 || status == 202);
    api.wait_status(&id, "cancelled").await;
    // The worker still running the charge hears of the cancel on its next heartbeat.
    let (status, body) = api
        .post(
            &format!("/tasks/{}/heartbeat", charge["task_id"].as_str().unwrap()),
            json!({"attempt": charge["attempt"], "checkpoint": {"half": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"cancel_requested": true}));
    assert_eq!(
        api.complete(&charge, json!({})).await.0,
        409,
        "completion after cancel"
    );
    let (status, _) = api
        .post(&format!("/workflows/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 409, "resume of a cancelled run");
}

#[tokio::test]
async fn cancel_with_compensation_undoes_completed_steps_then_ends_cancelled() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let id = api.start("order", json!({"order_id": "o-5"})).await;
    let reserve = api.take("inventory").await;
    api.complete(&reserve, json!({"hold": 1})).await;
    let _charge = api.take("payments").await;
    api.post(
        &format!("/workflows/{id}/cancel"),
        json!({"compensate": true}),
    )
    .await;
    let release = api.take("inventory").await;
    assert_eq!(release["task"], "release-stock");
    api.complete(&release, json!({})).await;
    api.wait_status(&id, "cancelled").await;
}

#[tokio::test]
async fn starting_twice_with_one_idempotency_key_gives_one_run() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let body =
        json!({"definition": "order", "input": {"order_id": "o-6"}, "idempotency_key": "k-1"});
    let (s1, first) = api.post("/workflows", body.clone()).await;
    let (s2, second) = api.post("/workflows", body).await;
    assert_eq!(s1, 201);
    assert!(s2 == 200 || s2 == 201, "{second}");
    assert_eq!(first["workflow_id"], second["workflow_id"]);
    let (_, list) = api.get("/workflows?definition=order").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn control_flow_switch_parallel_foreach_wait_and_child_runs() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let child = "name: child\nsteps:\n  - {id: c1, task: child-work}\noutput: '.steps.c1.output'\n";
    assert_eq!(api.register_yaml(child).await.0, 201);
    let parent = r#"
name: flow
steps:
  - id: route
    switch:
      cases:
        - when: '.input.risk == "high"'
          steps: [{id: manual, task: review}]
      default: [{id: auto, task: approve}]
  - id: fan
    parallel:
      join: all
      branches:
        - steps: [{id: email, task: notify}]
        - steps: [{id: sms, task: notify, when: '.input.phone != null'}]
  - id: pack
    foreach: {items: '.input.items', max_concurrency: 2, steps: [{id: pack-item, task: pack, input: '{item: .item, index: .index}'}]}
  - id: pause
    wait: 100ms
  - id: invoice
    workflow: {name: child, input: '{n: (.steps.pack.output | length)}'}
"#;
    let (status, body) = api.register_yaml(parent).await;
    assert_eq!(status, 201, "{body}");
    let id = api
        .start("flow", json!({"risk": "low", "items": ["a", "b", "c"]}))
        .await;

    let approve = api.take("approve").await;
    assert_eq!(approve["step_id"], "auto", "default branch taken");
    api.complete(&approve, json!({"ok": true})).await;
    // The sms branch is skipped (no phone): only one notify task.
    let email = api.take("notify").await;
    assert_eq!(email["step_id"], "email");
    assert!(
        api.poll("notify", 5, 200).await.is_empty(),
        "sms skipped by its `when`"
    );
    api.complete(&email, json!("sent")).await;

    // foreach: at most two in flight.
    let batch = api.poll("pack", 10, 2000).await;
    let mut batch = if batch.len() < 2 {
        let mut b = batch;
        b.extend(api.poll("pack", 10, 2000).await);
        b
    } else {
        batch
    };
    assert_eq!(batch.len(), 2, "max_concurrency 2");
    assert!(api.poll("pack", 10, 200).await.is_empty());
    for t in batch.drain(..) {
        let item = t["input"]["item"].clone();
        api.complete(&t, json!({"packed": item})).await;
    }
    let last = api.take("pack").await;
    assert_eq!(last["input"], json!({"item": "c", "index": 2}));
    api.complete(&last, json!({"packed": "c"})).await;

    // After the wait, the child run starts and its output becomes the step's output.
    let child_task = api.take("child-work").await;
    assert_eq!(child_task["input"], json!({"n": 3}));
    assert_ne!(child_task["workflow_id"], id.as_str());
    api.complete(&child_task, json!({"invoice": "I-1"})).await;

    let run = api.wait_status(&id, "completed").await;
    let out = &run["output"];
    assert_eq!(
        out["route"],
        json!({"ok": true}),
        "switch output is its branch's last output"
    );
    assert_eq!(
        out["fan"],
        json!(["sent", null]),
        "parallel output per branch, skipped is null"
    );
    assert_eq!(
        out["pack"],
        json!([{"packed": "a"}, {"packed": "b"}, {"packed": "c"}]),
        "foreach output in item order"
    );
    assert_eq!(out["invoice"], json!({"invoice": "I-1"}));
}

/// A child run that cannot start (its definition is not registered) fails the parent's step
/// with the reason, and the parent compensates what it completed, instead of waiting for a
/// child that will never end.
#[tokio::test]
async fn a_child_run_that_cannot_start_fails_the_parent_step_with_the_reason() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    let parent = r#"
name: needs-child
steps:
  - {id: reserve, task: reserve-stock, queue: inventory, compensate: release}
  - id: invoice
    workflow: {name: never-registered}
compensations:
  release: {task: release-stock, queue: inventory}
"#;
    let (status, body) = api.register_yaml(parent).await;
    assert_eq!(status, 201, "{body}");
    let id = api.start("needs-child", json!({})).await;
    let reserve = api.take("inventory").await;
    api.complete(&reserve, json!({"hold": "h-1"})).await;

    let release = api.take("inventory").await;
    assert_eq!(
        release["task"], "release-stock",
        "the completed step is compensated"
    );
    api.complete(&release, json!({})).await;
    let run = api.wait_status(&id, "compensated").await;
    assert_eq!(run["error"]["type"], "child.start", "{run}");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("never-registered"),
        "the reason names the missing definition: {message}"
    );
}

#[tokio::test]
async fn a_heartbeat_timeout_reassigns_the_task_with_its_checkpoint() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    // 2 s, not less: a loaded CI machine once took over 300 ms from the start to the
    // heartbeat below, so the first attempt timed out before it was meant to.
    let yaml = "name: long\nsteps:\n  - {id: crunch, task: crunch, heartbeat_timeout: 2s, retry: {max_attempts: 3, initial_interval: 10ms}}\n";
    assert_eq!(api.register_yaml(yaml).await.0, 201);
    let id = api.start("long", json!({})).await;
    let first = api.take("crunch").await;
    let task_id = first["task_id"].as_str().unwrap();
    let (status, body) = api
        .post(
            &format!("/tasks/{task_id}/heartbeat"),
            json!({"attempt": 1, "checkpoint": {"done": 40}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The worker goes silent; another worker gets the task with the checkpoint.
    let second = api.take("crunch").await;
    assert_eq!(second["attempt"], 2);
    assert_eq!(second["checkpoint"], json!({"done": 40}));
    assert_eq!(
        api.complete(&first, json!({})).await.0,
        409,
        "the lost attempt is superseded"
    );
    assert_eq!(api.complete(&second, json!({"done": 100})).await.0, 200);
    api.wait_status(&id, "completed").await;
}

#[tokio::test]
async fn an_ad_hoc_task_runs_after_the_step_in_flight() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml("name: adhoc\nsteps:\n  - {id: one, task: t1}\n  - {id: two, task: t2}\n")
        .await;
    let id = api.start("adhoc", json!({})).await;
    let one = api.take("t1").await;
    let (status, body) = api
        .post(
            &format!("/workflows/{id}/tasks"),
            json!({"id": "extra", "task": "t-extra"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let extra_id = body["task_id"].as_str().unwrap().to_string();
    api.complete(&one, json!(1)).await;
    let extra = api.take("t-extra").await;
    assert_eq!(extra["task_id"], extra_id.as_str());
    assert!(
        api.poll("t2", 1, 200).await.is_empty(),
        "`two` waits for the added task"
    );
    api.complete(&extra, json!(2)).await;
    let two = api.take("t2").await;
    api.complete(&two, json!(3)).await;
    api.wait_status(&id, "completed").await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();

    // Definitions: each problem named with its path.
    let cases = [
        (
            "name: x\nsteps:\n  - {id: a, task: t, colour: red}\n",
            "colour",
        ),
        (
            "name: x\nsteps:\n  - {id: a, task: t}\n  - {id: a, task: u}\n",
            "duplicate",
        ),
        (
            "name: x\nsteps:\n  - {id: a, task: t, compensate: nope}\n",
            "nope",
        ),
        (
            "name: x\nsteps:\n  - {id: a, task: t, when: '.input | ('}\n",
            "when",
        ),
        (
            "name: x\nsteps:\n  - {id: a, task: t, timeout: soon}\n",
            "timeout",
        ),
        (
            "name: x\nsteps:\n  - {id: a, task: t, retry: {max_attempts: 0}}\n",
            "max_attempts",
        ),
        ("name: x\nsteps:\n  - {id: a, frobnicate: {}}\n", "steps[0]"),
        ("name: [unclosed\n", ""),
    ];
    for (yaml, needle) in cases {
        let (status, body) = api.register_yaml(yaml).await;
        assert_eq!(status, 400, "{yaml}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{yaml}: detail {detail:?} should mention {needle:?}"
        );
    }
    let (status, _) = api.get("/definitions/x").await;
    assert_eq!(status, 404, "no rejected definition was registered");

    api.register_yaml(ORDER).await;
    let (status, body) = api
        .post(
            "/workflows",
            json!({"definition": "order", "input": {"amount": 1}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("order_id"),
        "{body}"
    );
    let (status, _) = api
        .post("/workflows", json!({"definition": "nope", "input": {}}))
        .await;
    assert_eq!(status, 404);
    let (_, list) = api.get("/workflows").await;
    assert_eq!(list["items"], json!([]), "no run was created by bad starts");

    let malformed = api
        .send(
            api.http
                .post(format!("{}/workflows", api.base))
                .header("content-type", "application/json")
                .body("{\"definition\": "),
        )
        .await;
    assert_eq!(malformed.0, 400);
    let (status, _) = api.get("/workflows/not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, _) = api
        .get("/workflows/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .post(
            "/tasks/00000000-0000-0000-0000-000000000000.1/complete",
            json!({"attempt": 1, "output": {}}),
        )
        .await;
    assert_eq!(status, 404);
    let huge = json!({"definition": "order", "input": {"order_id": "x".repeat(2 * 1024 * 1024)}});
    let (status, _) = api.post("/workflows", huge).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_a_restart_continues_the_runs() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let api = server.api();
    api.register_yaml(ORDER).await;
    let id = api.start("order", json!({"order_id": "o-7"})).await;
    let reserve = api.take("inventory").await;
    api.complete(&reserve, json!({})).await;
    assert!(server.terminate(), "SIGTERM exits with status 0");

    let server = Server::start(dir.path());
    let api = server.api();
    let charge = api.take("payments").await;
    assert_eq!(charge["workflow_id"], id.as_str());
    api.complete(&charge, json!({})).await;
    let ship = api.take("shipping").await;
    api.complete(&ship, json!({"tracking": "T"})).await;
    let run: Value = api.wait_status(&id, "completed").await;
    assert_eq!(run["output"]["tracking"], "T");
}

#[tokio::test]
async fn operational_endpoints_answer() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let openapi: Value = http
        .get(format!("{}/api/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/api/v1/workflows"].is_object());
    let graphiql = http
        .get(format!("{}/graphql", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(graphiql.status(), 200);
    assert!(
        graphiql.text().await.unwrap().contains("graphiql"),
        "GraphiQL page at GET /graphql"
    );
    let docs = http
        .get(format!("{}/docs/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let api = server.api();
    api.register_yaml(ORDER).await;
    api.start("order", json!({"order_id": "m"})).await;
    api.take("inventory").await;
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "distorch_runs_started_total",
        "distorch_tasks_dispatched_total",
        "distorch_run_latency_seconds",
        "distorch_step_latency_seconds",
        "distorch_api_queue_depth",
        "distorch_engine_command_lag",
        "distorch_projector_events_behind",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

/// Partition counts of a data dir's topics, read from its log (the server must be stopped).
fn partition_counts(dir: &std::path::Path) -> Vec<(String, u32)> {
    use distorch_eventlog::EventLog;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = distorch_eventlog::journal::JournalLog::open(dir.join("log.journal")).unwrap();
    [
        "commands",
        "events",
        "replies",
        "snapshots",
        "tasks.inventory",
    ]
    .into_iter()
    .map(|t| {
        let topic = format!("distorch.{t}");
        let n = rt.block_on(log.partitions(&topic)).unwrap();
        (t.to_string(), n)
    })
    .collect()
}

async fn counts_after_stop(dir: &std::path::Path) -> Vec<(String, u32)> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || partition_counts(&dir))
        .await
        .unwrap()
}

#[test]
fn standalone_refuses_zero_partitions_and_creates_nothing() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let config = dir.path().join("distorch.toml");
    std::fs::write(&config, "[standalone]\npartitions = 0\n").expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_distorch"))
        .arg("--config")
        .arg(&config)
        .args(["standalone", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run distorch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with 0 partitions: {stderr}");
    assert!(
        stderr.contains("[standalone] partitions must be at least 1 (it is 0)"),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "nothing is created before the config is valid"
    );
}

#[tokio::test]
async fn a_data_dir_keeps_the_partition_counts_it_was_created_with() {
    // A new data dir gets `[standalone] partitions`, 1 by default.
    let fresh = tempdir();
    let mut server = Server::start(fresh.path());
    server.api().register_yaml(ORDER).await;
    server
        .api()
        .start("order", json!({"order_id": "p-0"}))
        .await;
    server.api().take("inventory").await;
    assert!(server.terminate());
    let counts = counts_after_stop(fresh.path()).await;
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");

    let dir = tempdir();
    let mut server = Server::start_with_config(dir.path(), "[standalone]\npartitions = 3\n");
    let api = server.api();
    api.register_yaml(ORDER).await;
    let first = api.start("order", json!({"order_id": "p-1"})).await;
    let reserve = api.take("inventory").await;
    api.complete(&reserve, json!({})).await;
    assert!(server.terminate());
    let counts = counts_after_stop(dir.path()).await;
    assert!(counts.iter().all(|(_, n)| *n == 3), "{counts:?}");

    // Restarted with the default (1): the topics keep 3 partitions, and the old run and a
    // new one alike reach their end.
    let mut server = Server::start(dir.path());
    let api = server.api();
    let second = api.start("order", json!({"order_id": "p-2"})).await;
    let reserve = api.take("inventory").await;
    assert_eq!(reserve["workflow_id"], second.as_str());
    api.complete(&reserve, json!({})).await;
    for queue in ["payments", "payments", "shipping", "shipping"] {
        let t = api.take(queue).await;
        api.complete(&t, json!({"tracking": "T"})).await;
    }
    api.wait_status(&first, "completed").await;
    api.wait_status(&second, "completed").await;
    assert!(server.terminate());
    let counts = counts_after_stop(dir.path()).await;
    assert!(counts.iter().all(|(_, n)| *n == 3), "{counts:?}");
}
