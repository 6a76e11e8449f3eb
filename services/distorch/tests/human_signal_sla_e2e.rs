//! End to end through `distorch standalone`: human tasks (inbox, claim, form validation,
//! escalation, timeout), signals (early delivery, `.signals`, timeout) and SLAs (run and
//! step, warning then breach), driven over HTTP as a user would.

mod common;

use common::{Api, Server, tempdir};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Polls `GET /api/v1/<path>` until its `items` satisfy `pred` (30 s at most).
async fn wait_items(
    api: &Api,
    path: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if pred(&items) {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} in {path}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run's one human task, once it exists.
async fn human_task(api: &Api, id: &str) -> Value {
    let run = api
        .wait_for(id, "a human task", |w| {
            w["tasks"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["kind"] == "human"))
        })
        .await;
    human_of(&run)
}

fn human_of(run: &Value) -> Value {
    run["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "human"))
        .cloned()
        .expect("a human task")
}

fn has_task(items: &[Value], task_id: &str) -> bool {
    items.iter().any(|i| i["task_id"] == task_id)
}

/// The types of the run's events, in order.
async fn event_types(api: &Api, id: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const REFUND: &str = r#"
name: refund
steps:
  - id: approve
    human:
      title: 'Approve refund of {.input.amount}'
      group: finance
      form: {type: object, required: [approved], properties: {approved: {type: boolean}}}
  - id: pay
    task: pay
    queue: refunds-e2e
    input: '{approved: .steps.approve.output.approved, amount: .input.amount}'
"#;

#[tokio::test]
async fn a_human_task_is_claimed_validated_completed_and_the_run_continues_with_its_output() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(REFUND).await.0, 201);
    let id = api.start("refund", json!({"amount": 42})).await;

    let task = human_task(&api, &id).await;
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task["status"], "scheduled");
    assert_eq!(task["human"]["title"], "Approve refund of 42");
    assert_eq!(task["human"]["group"], "finance");
    assert_eq!(task["human"]["escalated"], false);
    assert_eq!(task["human"]["form"]["required"], json!(["approved"]));

    let inbox = wait_items(
        &api,
        "/human-tasks?group=finance&status=open",
        "the task",
        |i| has_task(i, &task_id),
    )
    .await;
    let item = inbox.iter().find(|i| i["task_id"] == task_id).unwrap();
    assert_eq!(item["workflow_id"], id);
    assert_eq!(item["definition"], "refund");
    assert_eq!(item["title"], "Approve refund of 42");
    assert_eq!(item["status"], "scheduled");
    let (_, other) = api.get("/human-tasks?group=marketing").await;
    assert!(!has_task(other["items"].as_array().unwrap(), &task_id));

    // Unknown tasks (of this run, of no run) are not found.
    for unknown in [format!("{id}.99"), format!("{}.1", uuid_like())] {
        let (status, body) = api
            .post(
                &format!("/human-tasks/{unknown}/claim"),
                json!({"user": "ann"}),
            )
            .await;
        assert_eq!(status, 404, "{unknown}: {body}");
    }

    // Who acts must be said.
    let claim = format!("/human-tasks/{task_id}/claim");
    let (status, body) = api.post(&claim, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("X-DisTorch-User"));

    let (status, body) = api.post(&claim, json!({"user": "ann"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "running");
    let (status, body) = api.post(&claim, json!({"user": "bob"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("ann"), "{body}");
    let claimed = wait_items(
        &api,
        "/human-tasks?group=finance&status=running",
        "the claim",
        |i| has_task(i, &task_id),
    )
    .await;
    let item = claimed.iter().find(|i| i["task_id"] == task_id).unwrap();
    assert_eq!(item["claimed_by"], "ann");

    // A bad answer names the field and changes nothing.
    let before = api.workflow(&id).await;
    let complete = format!("/human-tasks/{task_id}/complete");
    let (status, body) = api
        .post(
            &complete,
            json!({"user": "ann", "output": {"approved": "yes"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["type"], "urn:distorch:problem:bad-request",
        "problem+json: {body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("/approved"),
        "{body}"
    );
    let (status, body) = api
        .post(
            &complete,
            json!({"user": "bob", "output": {"approved": true}}),
        )
        .await;
    assert_eq!(status, 409, "someone else's claim: {body}");
    let after = api.workflow(&id).await;
    assert_eq!(after["last_seq"], before["last_seq"]);
    assert_eq!(human_of(&after)["status"], "running");
    assert_eq!(human_of(&after)["human"]["claimed_by"], "ann");

    // The header says who when the body does not.
    let req = api
        .http
        .post(format!("{}{complete}", api.base))
        .header("x-distorch-user", "ann")
        .json(&json!({"output": {"approved": true}}));
    let (status, body) = api.send(req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed");

    let pay = api.take("refunds-e2e").await;
    assert_eq!(pay["input"], json!({"approved": true, "amount": 42}));
    assert_eq!(api.complete(&pay, json!({"paid": true})).await.0, 200);
    let run = api.wait_status(&id, "completed").await;
    let task = human_of(&run);
    assert_eq!(task["status"], "completed");
    assert_eq!(task["output"], json!({"approved": true}));
    assert_eq!(task["human"]["completed_by"], "ann");

    let open = wait_items(
        &api,
        "/human-tasks?group=finance&status=open",
        "no open task",
        |i| !has_task(i, &task_id),
    )
    .await;
    assert!(!has_task(&open, &task_id));
    let (_, done) = api.get("/human-tasks?status=completed").await;
    assert!(has_task(done["items"].as_array().unwrap(), &task_id));

    // The run is over: late actions conflict.
    let (status, _) = api.post(&claim, json!({"user": "ann"})).await;
    assert_eq!(status, 409);
}

/// A run id nobody started.
fn uuid_like() -> String {
    "0196a6c5-0000-7000-8000-000000000001".into()
}

const ESCALATING: &str = r#"
name: escalating
steps:
  - id: check
    human:
      title: 'Check order {.input.order}'
      assignee: ann
      escalate: {after: 300ms, to: {group: leads}}
"#;

#[tokio::test]
async fn an_unanswered_task_escalates_to_the_leads_inbox() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(ESCALATING).await.0, 201);
    let id = api.start("escalating", json!({"order": "o-7"})).await;
    let task_id = human_task(&api, &id).await["task_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let run = api
        .wait_for(&id, "the escalation", |w| {
            human_of(w)["human"]["escalated"] == true
        })
        .await;
    let human = &human_of(&run)["human"];
    assert_eq!(human["group"], "leads");
    assert_eq!(human["assignee"], Value::Null);
    assert_eq!(human_of(&run)["status"], "scheduled");
    let events = event_types(&api, &id).await;
    assert!(
        events.contains(&"human_task_reassigned".to_owned()),
        "{events:?}"
    );

    let leads = wait_items(
        &api,
        "/human-tasks?group=leads&status=open",
        "the task",
        |i| has_task(i, &task_id),
    )
    .await;
    let item = leads.iter().find(|i| i["task_id"] == task_id).unwrap();
    assert_eq!(item["escalated"], true);
    assert_eq!(item["title"], "Check order o-7");
    let (_, ann) = api.get("/human-tasks?assignee=ann&status=open").await;
    assert!(!has_task(ann["items"].as_array().unwrap(), &task_id));

    let (status, body) = api
        .post(
            &format!("/human-tasks/{task_id}/complete"),
            json!({"user": "lee", "output": {"ok": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = api.wait_status(&id, "completed").await;
    assert_eq!(human_of(&run)["human"]["completed_by"], "lee");
}

const EXPIRING: &str = r#"
name: expiring
steps:
  - id: approve
    human: {title: Approve, group: finance, timeout: 300ms}
    on_failure: continue
  - id: after
    task: after
    queue: expiring-e2e
"#;

#[tokio::test]
async fn a_human_timeout_fails_the_task_and_its_on_failure_applies() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(EXPIRING).await.0, 201);
    let id = api.start("expiring", json!({})).await;
    let task = human_task(&api, &id).await;
    assert!(task["human"]["due_at"].is_string(), "{task}");

    // `continue`: the run goes on without the step's output.
    let after = api.take("expiring-e2e").await;
    assert_eq!(after["step_id"], "after");
    let run = api
        .wait_for(&id, "the failed task", |w| {
            human_of(w)["status"] == "failed"
        })
        .await;
    let task = human_of(&run);
    assert_eq!(task["error"]["type"], "timeout.human");
    assert_eq!(api.complete(&after, json!(null)).await.0, 200);
    api.wait_status(&id, "completed").await;

    let (_, failed) = api.get("/human-tasks?group=finance&status=failed").await;
    let items = failed["items"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["task_id"] == task["task_id"])
        .expect("listed");
    assert_eq!(item["error"]["type"], "timeout.human");
    let (status, _) = api
        .post(
            &format!("/human-tasks/{}/claim", task["task_id"].as_str().unwrap()),
            json!({"user": "ann"}),
        )
        .await;
    assert_eq!(status, 409, "a timed-out task cannot be claimed");
}

const SIGNALLED: &str = r#"
name: signalled
steps:
  - id: first
    task: first
    queue: signal-e2e
  - id: paid
    signal: {name: payment}
  - id: ship
    task: ship
    queue: signal-e2e
    input: '{signal: .signals.payment, step: .steps.paid.output}'
"#;

#[tokio::test]
async fn a_signal_sent_before_its_step_is_kept_and_delivered() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(SIGNALLED).await.0, 201);
    let id = api.start("signalled", json!({})).await;

    // The run is still at `first`: nobody has taken it yet.
    let (status, body) = api
        .post(
            &format!("/workflows/{id}/signals/payment"),
            json!({"amount": 42}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"workflow_id": id, "signal": "payment"}));
    // An empty body is a null payload; it reaches the run like any other.
    let req = api
        .http
        .post(format!("{}/workflows/{id}/signals/unused", api.base));
    assert_eq!(api.send(req).await.0, 202);

    let first = api.take("signal-e2e").await;
    assert_eq!(first["step_id"], "first");
    assert_eq!(api.complete(&first, json!(1)).await.0, 200);
    let ship = api.take("signal-e2e").await;
    assert_eq!(ship["step_id"], "ship");
    assert_eq!(
        ship["input"],
        json!({"signal": {"amount": 42}, "step": {"amount": 42}})
    );
    assert_eq!(api.complete(&ship, json!(2)).await.0, 200);
    api.wait_status(&id, "completed").await;

    let events = event_types(&api, &id).await;
    let pos = |t: &str| events.iter().position(|e| e == t).unwrap();
    assert!(
        pos("signal_received") < pos("task_completed"),
        "the signal came before the run reached its step: {events:?}"
    );

    // A finished run takes no signals; an unknown one is not found; bad names are refused.
    let (status, _) = api
        .post(&format!("/workflows/{id}/signals/payment"), json!(1))
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .post(
            &format!("/workflows/{}/signals/payment", uuid_like()),
            json!(1),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = api
        .post(&format!("/workflows/{id}/signals/no%20spaces"), json!(1))
        .await;
    assert_eq!(status, 400, "{body}");
}

const IMPATIENT: &str = r#"
name: impatient
steps:
  - id: wait-ack
    signal: {name: ack, timeout: 300ms}
    on_failure: fail
"#;

#[tokio::test]
async fn a_signal_that_does_not_come_in_time_fails_per_on_failure() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(IMPATIENT).await.0, 201);
    let id = api.start("impatient", json!({})).await;
    let run = api.wait_status(&id, "failed").await;
    assert_eq!(run["error"]["type"], "timeout.signal", "{run}");
}

const SLA_BOUND: &str = r#"
name: sla-bound
sla: {duration: 300ms, warn_at: 50%}
steps:
  - id: slow
    task: slow
    queue: sla-bound-e2e
    sla: 300ms
"#;

#[tokio::test]
async fn run_and_step_slas_warn_then_breach_and_are_listed() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(SLA_BOUND).await.0, 201);
    let id = api.start("sla-bound", json!({})).await;

    let run = api
        .wait_for(&id, "both breaches", |w| {
            w["sla"]
                .as_array()
                .is_some_and(|s| s.iter().filter(|a| a["kind"] == "breach").count() == 2)
        })
        .await;
    let sla = run["sla"].as_array().unwrap();
    let find = |kind: &str, step: Value| {
        sla.iter()
            .position(|a| a["kind"] == kind && a["step_key"] == step)
    };
    let warned = find("warning", Value::Null).expect("a run warning");
    let breached = find("breach", Value::Null).expect("a run breach");
    assert!(warned < breached, "the warning comes first: {sla:?}");
    assert_eq!(sla[breached]["sla_ms"], 300);
    assert!(find("breach", json!("slow")).is_some(), "{sla:?}");
    assert!(
        find("warning", json!("slow")).is_none(),
        "no warn_at, no warning: {sla:?}"
    );
    assert_eq!(run["status"], "running", "an SLA only reports");

    let listed = wait_items(&api, "/sla/breaches", "the run's alerts", |items| {
        items.iter().filter(|i| i["workflow_id"] == id).count() == 3
    })
    .await;
    let ours: Vec<(Value, Value)> = listed
        .iter()
        .filter(|i| i["workflow_id"] == id)
        .map(|i| (i["kind"].clone(), i["step_key"].clone()))
        .collect();
    let at = |kind: &str, step: Value| {
        listed
            .iter()
            .position(|i| i["workflow_id"] == id && i["kind"] == kind && i["step_key"] == step)
            .unwrap_or_else(|| panic!("{kind} {step} listed: {ours:?}"))
    };
    assert!(
        at("breach", Value::Null) < at("warning", Value::Null),
        "newest first: {ours:?}"
    );
    at("breach", json!("slow"));
    assert!(
        listed
            .iter()
            .filter(|i| i["workflow_id"] == id)
            .all(|i| i["definition"] == "sla-bound" && i["at"].is_string())
    );
    let (status, body) = api.get("/sla/breaches?limit=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/sla/breaches?limit=0").await.0, 400);

    // The run itself carries on.
    let slow = api.take("sla-bound-e2e").await;
    assert_eq!(api.complete(&slow, json!(null)).await.0, 200);
    api.wait_status(&id, "completed").await;
}
