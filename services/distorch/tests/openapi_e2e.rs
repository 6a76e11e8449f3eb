//! The OpenAPI document a real `distorch standalone` serves describes what it really answers.
//!
//! The test walks one workflow tour through every documented operation (definitions, runs and
//! their verbs, the worker protocol, the DLQ, human tasks, signals, SLA, analytics, breakers,
//! health) and validates every JSON response body against the schema the document gives for
//! that operation and status, with undocumented properties refused. It then checks that every
//! operation in the document was exercised with a success, so a new route cannot be left
//! out of the document or of this test.

mod common;

use common::{Server, tempdir};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Operations whose answer is a stream, not one JSON body: their handshake is tested in
/// `streams_e2e.rs`.
const STREAMS: &[(&str, &str)] = &[
    ("get", "/api/v1/events/stream"),
    ("get", "/ws/workflows/{id}"),
    ("get", "/ws/tasks/stream"),
];

struct Checker {
    base: String,
    http: reqwest::Client,
    doc: Value,
    /// The document's components, closed once (see [`closed`]).
    components: Value,
    /// (method, path template) answered with a success that matched the document.
    covered: BTreeSet<(String, String)>,
}

/// `schema` with every object schema closed (`additionalProperties: false` where it lists
/// properties and says nothing of others), so an undocumented field fails validation.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                closed(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

impl Checker {
    /// The documented template of a concrete path, if any.
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .find(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segments.len()
                    && ts
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
            })
            .cloned()
    }

    /// Sends a request, checks the answer against the document, and returns it.
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "get" => self.http.get(&url),
            "post" => self.http.post(&url),
            other => panic!("method {other}"),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        let path_only = path.split('?').next().unwrap();
        let template = self
            .template(path_only)
            .unwrap_or_else(|| panic!("{method} {path_only} is not in the OpenAPI document"));
        let op = &self.doc["paths"][&template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path}: status {status} is not documented for {template}: {text}"
        );
        let content = &response["content"];
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(media) = content.as_object().filter(|c| !c.is_empty()) {
            let documented = media.get(&content_type).unwrap_or_else(|| {
                panic!(
                    "{method} {path} answered {content_type}, documented: {:?}",
                    media.keys()
                )
            });
            if content_type.ends_with("json") {
                self.validate(method, path, status, &documented["schema"], &body);
            }
        }
        if (200..300).contains(&status) {
            self.covered.insert((method.to_owned(), template));
        }
        (status, body)
    }

    /// What is wrong with `body` by `schema` (one of the document's, closed).
    fn errors(&self, schema: &Value, body: &Value) -> Vec<String> {
        let mut root = schema.clone();
        closed(&mut root);
        let map = root.as_object_mut().expect("a schema object");
        map.insert("components".into(), self.components.clone());
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("a documented schema does not compile: {e}"));
        validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn validate(&self, method: &str, path: &str, status: u16, schema: &Value, body: &Value) {
        let errors = self.errors(schema, body);
        assert!(
            errors.is_empty(),
            "{method} {path} ({status}) does not match the document:\n  {}\nbody: {body}",
            errors.join("\n  ")
        );
    }

    async fn ok(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {body}"
        );
        body
    }

    /// Polls the run until `pred` holds.
    async fn wait_run(&mut self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let run = self
                .ok("get", &format!("/api/v1/workflows/{id}"), None)
                .await;
            if pred(&run) {
                return run;
            }
            assert!(Instant::now() < deadline, "waiting for {what}: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the queue until a task arrives.
    async fn take(&mut self, queue: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let polled = self
                .ok(
                    "post",
                    &format!("/api/v1/queues/{queue}/poll"),
                    Some(json!({"worker_id": "tour", "max_tasks": 1, "wait_ms": 1000})),
                )
                .await;
            if let Some(task) = polled["tasks"].as_array().and_then(|t| t.first()) {
                return task.clone();
            }
            assert!(Instant::now() < deadline, "no task on {queue}");
        }
    }
}

fn task_of(run: &Value, step: &str) -> Value {
    run["tasks"]
        .as_array()
        .and_then(|t| t.iter().rev().find(|t| t["step_id"] == step))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_what_the_document_says() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.url))
        .await
        .expect("the document")
        .json()
        .await
        .expect("JSON");
    let mut components = doc["components"].clone();
    closed(&mut components);
    let mut c = Checker {
        base: server.url.clone(),
        http: reqwest::Client::new(),
        doc,
        components,
        covered: BTreeSet::new(),
    };

    // Health and metrics.
    c.ok("get", "/healthz", None).await;
    c.ok("get", "/readyz", None).await;
    c.ok("get", "/metrics", None).await;

    // Definitions.
    let definition = json!({
        "name": "tour",
        "steps": [
            {"id": "work", "task": "work", "queue": "tour", "on_failure": "park",
             "retry": {"max_attempts": 1}},
            {"id": "approve", "human": {"title": "Approve", "group": "ops"}},
            {"id": "paid", "signal": {"name": "payment"}}
        ]
    });
    c.ok("post", "/api/v1/definitions", Some(definition)).await;
    let (status, _) = c
        .call("post", "/api/v1/definitions", Some(json!({"name": "bad"})))
        .await;
    assert_eq!(status, 400, "a problem, checked against the document");
    c.ok("get", "/api/v1/definitions", None).await;
    c.ok("get", "/api/v1/definitions/tour", None).await;
    c.ok("get", "/api/v1/definitions/tour/versions/1", None)
        .await;

    // A run: start, list, read, its history and path.
    let started = c
        .ok(
            "post",
            "/api/v1/workflows",
            Some(json!({"definition": "tour", "input": {"order": 1}})),
        )
        .await;
    let run = started["workflow_id"].as_str().unwrap().to_owned();
    c.ok("get", "/api/v1/workflows?definition=tour", None).await;
    c.ok("get", &format!("/api/v1/workflows/{run}/history"), None)
        .await;
    // The checker itself refuses what the document does not describe.
    let read = c.ok("get", &format!("/api/v1/workflows/{run}"), None).await;
    let schema = c.doc["paths"]["/api/v1/workflows/{id}"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]
        .clone();
    assert!(c.errors(&schema, &read).is_empty());
    let mut extra = read.clone();
    extra["surprise"] = json!(1);
    assert!(
        !c.errors(&schema, &extra).is_empty(),
        "an undocumented field is refused"
    );
    let mut wrong = read.clone();
    wrong["status"] = json!("sleeping");
    assert!(
        !c.errors(&schema, &wrong).is_empty(),
        "an undocumented status is refused"
    );
    c.ok("get", &format!("/api/v1/workflows/{run}/path"), None)
        .await;

    // The worker protocol: a heartbeat, a failure that parks the task, a retry, a completion.
    let task = c.take("tour").await;
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    // What another API replica asks of this one; the queue's one task is taken already.
    let rest = c
        .ok(
            "post",
            "/internal/queues/tour/take",
            Some(json!({"worker_id": "tour", "max_tasks": 5, "wait_ms": 0})),
        )
        .await;
    assert_eq!(rest["tasks"], json!([]), "{rest}");
    c.ok(
        "post",
        &format!("/api/v1/tasks/{task_id}/heartbeat"),
        Some(json!({"attempt": task["attempt"], "checkpoint": {"done": 1}})),
    )
    .await;
    c.ok(
        "post",
        &format!("/api/v1/tasks/{task_id}/fail"),
        Some(json!({"attempt": task["attempt"],
                    "error": {"type": "boom", "message": "no", "retryable": false}})),
    )
    .await;
    c.wait_run(&run, "the park", |r| r["status"] == "parked")
        .await;
    c.ok("get", "/api/v1/dlq", None).await;
    c.ok("get", &format!("/api/v1/tasks/{task_id}"), None).await;
    c.ok("post", &format!("/api/v1/tasks/{task_id}/retry"), None)
        .await;
    let task = c.take("tour").await;
    c.ok(
        "post",
        &format!("/api/v1/tasks/{task_id}/complete"),
        Some(json!({"attempt": task["attempt"], "output": {"worked": true}})),
    )
    .await;

    // The human step: inbox, claim, release, reassign, complete.
    let waiting = c
        .wait_run(&run, "the human task", |r| {
            task_of(r, "approve").is_object()
        })
        .await;
    let human = task_of(&waiting, "approve")["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok("get", "/api/v1/human-tasks?group=ops", None).await;
    let act = |verb: &str| format!("/api/v1/human-tasks/{human}/{verb}");
    c.ok("post", &act("claim"), Some(json!({"user": "ann"})))
        .await;
    c.ok("post", &act("release"), Some(json!({"user": "ann"})))
        .await;
    c.ok(
        "post",
        &act("reassign"),
        Some(json!({"user": "ann", "group": "ops"})),
    )
    .await;
    c.ok("post", &act("claim"), Some(json!({"user": "bob"})))
        .await;
    c.ok(
        "post",
        &act("complete"),
        Some(json!({"user": "bob", "output": {"ok": true}})),
    )
    .await;

    // The signal ends the run.
    c.ok(
        "post",
        &format!("/api/v1/workflows/{run}/signals/payment"),
        Some(json!({"paid": 10})),
    )
    .await;
    c.wait_run(&run, "the end", |r| r["status"] == "completed")
        .await;

    // A second run: a parked task skipped; then the operator verbs.
    let other = c
        .ok(
            "post",
            "/api/v1/workflows",
            Some(json!({"definition": "tour", "input": {}})),
        )
        .await;
    let other = other["workflow_id"].as_str().unwrap().to_owned();
    let task = c.take("tour").await;
    let other_task = task["task_id"].as_str().unwrap().to_owned();
    c.ok(
        "post",
        &format!("/api/v1/tasks/{other_task}/fail"),
        Some(json!({"attempt": task["attempt"],
                    "error": {"type": "boom", "message": "no", "retryable": false}})),
    )
    .await;
    c.wait_run(&other, "the park", |r| r["status"] == "parked")
        .await;
    c.ok(
        "post",
        &format!("/api/v1/tasks/{other_task}/skip"),
        Some(json!({"output": {"skipped": true}})),
    )
    .await;
    c.ok("post", &format!("/api/v1/workflows/{other}/pause"), None)
        .await;
    c.ok("post", &format!("/api/v1/workflows/{other}/resume"), None)
        .await;
    c.ok(
        "post",
        &format!("/api/v1/workflows/{other}/tasks"),
        Some(json!({"id": "extra", "task": "extra", "queue": "tour"})),
    )
    .await;
    c.ok(
        "post",
        &format!("/api/v1/workflows/{other}/cancel"),
        Some(json!({"reason": "tour over"})),
    )
    .await;

    // The read side of operations.
    c.ok("get", "/api/v1/dlq/commands", None).await;
    c.ok("get", "/api/v1/sla/breaches", None).await;
    c.ok("get", "/api/v1/breakers", None).await;
    for report in ["performance", "bottlenecks", "cost"] {
        c.ok(
            "get",
            &format!("/api/v1/analytics/{report}?window=1h"),
            None,
        )
        .await;
    }

    // Every documented operation was answered, and matched the document.
    let mut missing = Vec::new();
    for (template, item) in c.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let op = (method.clone(), template.clone());
            if !c.covered.contains(&op) && !STREAMS.contains(&(method.as_str(), template.as_str()))
            {
                missing.push(format!("{method} {template}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented operations this test did not exercise (add them): {missing:?}"
    );
}
