//! The API over HTTP against the real embedded log and store, with a stand-in engine where
//! a reply is needed (the real engine's end-to-end tests live in `services/distorch`).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use distorch_api::{ApiConfig, SharedRegistry, router};
use distorch_domain::command::{Answer, Command, CommandEnvelope, Outcome, Rejection, Reply};
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct Harness {
    app: Router,
    log: Arc<dyn EventLog>,
    _dir: tempfile::TempDir,
}

async fn harness(config: ApiConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let store = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    let registry = SharedRegistry::default();
    let app = router(log.clone(), store, config, registry).await.unwrap();
    Harness {
        app,
        log,
        _dir: dir,
    }
}

fn fast() -> ApiConfig {
    ApiConfig {
        read_your_writes_ms: 50,
        command_timeout_ms: 5_000,
        ..ApiConfig::default()
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, String, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn post_json(uri: &str, body: Value) -> Request<Body> {
    post(uri, "application/json", body.to_string())
}

/// Asserts a problem+json answer and returns its detail.
fn problem(answer: (StatusCode, String, Value), status: StatusCode) -> String {
    let (got, content_type, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "{body}"
    );
    body["detail"].as_str().unwrap().to_owned()
}

/// Answers every command on the commands topic with `decide`, like the engine would.
fn fake_engine(log: Arc<dyn EventLog>, decide: impl Fn(&Command) -> Outcome + Send + 'static) {
    let topics = Topics::default();
    tokio::spawn(async move {
        let mut consumer = log
            .consumer("fake-engine", &[topics.commands()])
            .await
            .unwrap();
        loop {
            let records = consumer
                .poll(1000, Duration::from_millis(200))
                .await
                .unwrap();
            let mut replies = Vec::new();
            for record in &records {
                let envelope: CommandEnvelope = serde_json::from_slice(&record.payload).unwrap();
                let reply = Reply {
                    command_id: envelope.id,
                    outcome: decide(&envelope.command),
                };
                let to = envelope.reply_to.unwrap();
                replies.push(NewRecord::new(
                    topics.replies(),
                    to,
                    serde_json::to_vec(&reply).unwrap(),
                ));
            }
            log.append(replies).await.unwrap();
        }
    });
}

#[tokio::test]
async fn bad_requests_are_clear_problems() {
    let h = harness(ApiConfig {
        max_body_bytes: 1024,
        ..fast()
    })
    .await;
    let app = &h.app;

    let detail = problem(call(app, get("/nope")).await, StatusCode::NOT_FOUND);
    assert!(detail.contains("/nope"), "{detail}");

    let detail = problem(
        call(
            app,
            post("/api/v1/workflows", "application/json", "{\"definition\": "),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("line 1 column"), "{detail}");

    let detail = problem(
        call(
            app,
            post_json("/api/v1/workflows", json!({"definition": "x", "inptu": {}})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("inptu"), "{detail}");

    let detail = problem(
        call(app, post("/api/v1/workflows", "text/plain", "{}")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );
    assert!(detail.contains("application/json"), "{detail}");

    let big = json!({"definition": "x", "input": "a".repeat(2048)});
    let detail = problem(
        call(app, post_json("/api/v1/workflows", big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert!(detail.contains("max_body_bytes"), "{detail}");

    problem(
        call(
            app,
            Request::delete("/api/v1/dlq").body(Body::empty()).unwrap(),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let h = harness(fast()).await;
    let app = &h.app;
    let id = WorkflowId(uuid::Uuid::now_v7());
    for uri in [
        format!("/api/v1/workflows/{id}"),
        format!("/api/v1/workflows/{id}/history"),
        format!("/api/v1/tasks/{id}.1"),
        "/api/v1/definitions/nothing".to_owned(),
        "/api/v1/definitions/nothing/versions/1".to_owned(),
    ] {
        problem(call(app, get(&uri)).await, StatusCode::NOT_FOUND);
    }
    let detail = problem(
        call(app, get("/api/v1/workflows/not-a-uuid")).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("not-a-uuid"), "{detail}");
    problem(
        call(app, get("/api/v1/tasks/nonsense")).await,
        StatusCode::BAD_REQUEST,
    );
    problem(
        call(app, get("/api/v1/definitions/x/versions/one")).await,
        StatusCode::BAD_REQUEST,
    );
    problem(
        call(
            app,
            post_json("/api/v1/tasks/nonsense/complete", json!({"attempt": 1})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn listing_validates_its_query() {
    let h = harness(fast()).await;
    let app = &h.app;
    let (status, _, body) = call(app, get("/api/v1/workflows")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"items": [], "next_cursor": null}));

    let detail = problem(
        call(app, get("/api/v1/workflows?status=done")).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        detail.contains("running") && detail.contains("cancelled"),
        "{detail}"
    );
    for limit in ["0", "1001", "ten"] {
        let uri = format!("/api/v1/workflows?limit={limit}");
        problem(call(app, get(&uri)).await, StatusCode::BAD_REQUEST);
    }
    let (status, _, _) = call(app, get("/api/v1/workflows?status=running&limit=1000")).await;
    assert_eq!(status, StatusCode::OK);

    // Every listing answers a malformed query as problem+json, the command DLQ's included.
    for uri in [
        "/api/v1/dlq/commands?limit=ten",
        "/api/v1/dlq/commands?limit=0",
    ] {
        let detail = problem(call(app, get(uri)).await, StatusCode::BAD_REQUEST);
        assert!(detail.contains("limit"), "{uri}: {detail}");
    }
}

#[tokio::test]
async fn definition_bodies_are_checked_before_publishing() {
    let h = harness(fast()).await;
    let app = &h.app;
    let detail = problem(
        call(
            app,
            post(
                "/api/v1/definitions",
                "application/yaml",
                "name: x\nsteps: [\n  - id: a\n  bad",
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        detail.contains("YAML") && detail.contains("line"),
        "{detail}"
    );
    let detail = problem(
        call(
            app,
            post("/api/v1/definitions", "application/yaml", "steps: []\n"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("name"), "{detail}");
    problem(
        call(app, post("/api/v1/definitions", "text/csv", "a,b")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );
}

#[tokio::test]
async fn docs_health_and_metrics_are_served() {
    let h = harness(fast()).await;
    let app = &h.app;
    let (status, _, spec) = call(app, get("/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/definitions",
        "/api/v1/workflows",
        "/api/v1/workflows/{id}",
        "/api/v1/workflows/{id}/cancel",
        "/api/v1/queues/{queue}/poll",
        "/api/v1/tasks/{task_id}/complete",
        "/api/v1/dlq",
        "/api/v1/human-tasks",
        "/api/v1/human-tasks/{task_id}/claim",
        "/api/v1/human-tasks/{task_id}/release",
        "/api/v1/human-tasks/{task_id}/reassign",
        "/api/v1/human-tasks/{task_id}/complete",
        "/api/v1/workflows/{id}/signals/{name}",
        "/api/v1/sla/breaches",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, content_type, _) = call(app, get("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");

    assert_eq!(call(app, get("/healthz")).await.2, json!({"status": "ok"}));
    assert_eq!(call(app, get("/readyz")).await.0, StatusCode::OK);
    let (status, _, text) = call(app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(text.contains("distorch_api_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""), "{text}");
}

#[tokio::test]
async fn engine_outcomes_become_http_answers() {
    let h = harness(fast()).await;
    fake_engine(h.log.clone(), |command| match command {
        Command::StartWorkflow {
            definition,
            workflow_id,
            ..
        } if definition == "orders" => Outcome::Accepted {
            seq: 1,
            result: Answer::Started {
                workflow_id: *workflow_id,
                status: Status::Running,
                existing: false,
            },
        },
        Command::StartWorkflow { definition, .. } => Outcome::Rejected {
            rejection: Rejection::NotFound(format!("no definition named {definition:?}")),
        },
        Command::CompleteTask { .. } => Outcome::Rejected {
            rejection: Rejection::Conflict("attempt 1 is stale; attempt 2 is current".into()),
        },
        Command::RegisterDefinition { source } if source["name"] == "good" => Outcome::Accepted {
            seq: 0,
            result: Answer::Registered {
                name: "good".into(),
                version: 3,
                unchanged: false,
            },
        },
        Command::RegisterDefinition { source } if source["name"] == "same" => Outcome::Accepted {
            seq: 0,
            result: Answer::Registered {
                name: "same".into(),
                version: 2,
                unchanged: true,
            },
        },
        Command::RegisterDefinition { .. } => Outcome::Rejected {
            rejection: Rejection::Invalid("steps[0].input: bad jq".into()),
        },
        Command::CancelWorkflow { workflow_id, .. } => Outcome::Accepted {
            seq: 7,
            result: Answer::Applied {
                workflow_id: *workflow_id,
                status: Status::Compensating,
            },
        },
        Command::PauseWorkflow { .. } => Outcome::Rejected {
            rejection: Rejection::Conflict("a completed run cannot be paused".into()),
        },
        Command::AddTask { workflow_id, .. } => Outcome::Accepted {
            seq: 9,
            result: Answer::TaskAdded {
                task_id: TaskId::new(*workflow_id, 4),
            },
        },
        _ => Outcome::Accepted {
            seq: 0,
            result: Answer::Noted,
        },
    });
    let app = &h.app;

    let (status, _, body) = call(
        app,
        post_json(
            "/api/v1/workflows",
            json!({"definition": "orders", "idempotency_key": "k1"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let expected = WorkflowId::from_idempotency_key("orders", "k1").to_string();
    assert_eq!(body, json!({"workflow_id": expected, "status": "running"}));

    let detail = problem(
        call(
            app,
            post_json("/api/v1/workflows", json!({"definition": "billing"})),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    assert!(detail.contains("billing"), "{detail}");

    let task = TaskId::new(WorkflowId(uuid::Uuid::now_v7()), 1);
    let uri = format!("/api/v1/tasks/{task}/complete");
    let detail = problem(
        call(app, post_json(&uri, json!({"attempt": 1, "output": {}}))).await,
        StatusCode::CONFLICT,
    );
    assert!(detail.contains("stale"), "{detail}");

    let detail = problem(
        call(
            app,
            post("/api/v1/definitions", "text/yaml", "name: x\nsteps: []\n"),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("steps[0]"), "{detail}");

    let (status, _, body) = call(
        app,
        post(
            "/api/v1/definitions",
            "application/x-yaml",
            "name: good\nsteps: []\n",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"name": "good", "version": 3, "unchanged": false})
    );
    // A document identical to the latest version: 200, naming that version.
    let (status, _, body) = call(
        app,
        post(
            "/api/v1/definitions",
            "application/x-yaml",
            "name: same
steps: []
",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"name": "same", "version": 2, "unchanged": true})
    );

    // The read model never catches up here (nothing projects), so verbs answer 202 with
    // the status the engine reported.
    let wf = WorkflowId(uuid::Uuid::now_v7());
    let (status, _, body) = call(
        app,
        post_json(
            &format!("/api/v1/workflows/{wf}/cancel"),
            json!({"compensate": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"workflow_id": wf.to_string(), "status": "compensating"})
    );
    let empty = Request::post(format!("/api/v1/workflows/{wf}/cancel")).body(Body::empty());
    assert_eq!(call(app, empty.unwrap()).await.0, StatusCode::ACCEPTED);
    let pause = Request::post(format!("/api/v1/workflows/{wf}/pause")).body(Body::empty());
    problem(call(app, pause.unwrap()).await, StatusCode::CONFLICT);

    let step = json!({"id": "notify", "task": "send-email"});
    let (status, _, body) = call(
        app,
        post_json(&format!("/api/v1/workflows/{wf}/tasks"), step),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"task_id": format!("{wf}.4")}));

    let uri = format!("/api/v1/tasks/{task}/heartbeat");
    let (status, _, body) = call(app, post_json(&uri, json!({"attempt": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"cancel_requested": false}));
}

#[tokio::test]
async fn poll_hands_out_accepted_attempts_and_drops_stale_ones() {
    let h = harness(fast()).await;
    // Attempts of task number 2 are "stale": the engine rejects their StartTask.
    fake_engine(h.log.clone(), |command| match command {
        Command::StartTask { task_id, .. } if task_id.0.ends_with(".2") => Outcome::Rejected {
            rejection: Rejection::Conflict("superseded".into()),
        },
        _ => Outcome::Accepted {
            seq: 1,
            result: Answer::Noted,
        },
    });
    let app = &h.app;
    let wf = WorkflowId(uuid::Uuid::now_v7());

    // Nothing queued: the poll returns an empty list when its wait ends.
    let (status, _, body) = call(
        app,
        post_json(
            "/api/v1/queues/emails/poll",
            json!({"worker_id": "w", "wait_ms": 10}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"tasks": []}));

    let topic = Topics::default().tasks("emails");
    let records = (1..=3)
        .map(|n| {
            let dispatch = TaskDispatch {
                task_id: TaskId::new(wf, n),
                workflow_id: wf,
                step_id: format!("s{n}"),
                task: "send".into(),
                queue: "emails".into(),
                attempt: 1,
                input: json!({"n": n}),
                checkpoint: None,
                heartbeat_timeout_ms: Some(1000),
            };
            NewRecord::new(
                &topic,
                wf.to_string(),
                serde_json::to_vec(&dispatch).unwrap(),
            )
        })
        .chain([NewRecord::new(&topic, wf.to_string(), b"not json".to_vec())])
        .collect();
    h.log.append(records).await.unwrap();

    let (status, _, body) = call(
        app,
        post_json(
            "/api/v1/queues/emails/poll",
            json!({"worker_id": "w", "max_tasks": 10, "wait_ms": 5000}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<_> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![json!(format!("{wf}.1")), json!(format!("{wf}.3"))]
    );
    assert_eq!(body["tasks"][0]["input"], json!({"n": 1}));
    assert_eq!(body["tasks"][0]["heartbeat_timeout_ms"], 1000);

    // Everything was settled (handed out, stale or undecodable), so the group's commits
    // reach the end of the queue; they are written between the dispatcher's fetches.
    let partition = distorch_eventlog::partition_for(&wf.to_string(), 8);
    let mut committed = None;
    for _ in 0..50 {
        committed = h
            .log
            .committed("api-poll", &topic, partition)
            .await
            .unwrap();
        if committed == Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(committed, Some(4));

    for bad in [
        json!({"worker_id": "w", "max_tasks": 101}),
        json!({"worker_id": "w", "wait_ms": 60001}),
        json!({"worker_id": ""}),
    ] {
        problem(
            call(app, post_json("/api/v1/queues/emails/poll", bad)).await,
            StatusCode::BAD_REQUEST,
        );
    }
    problem(
        call(
            app,
            post_json("/api/v1/queues/bad%20queue/poll", json!({"worker_id": "w"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn a_silent_engine_yields_503_saying_the_command_is_durable() {
    let h = harness(ApiConfig {
        command_timeout_ms: 200,
        ..fast()
    })
    .await;
    let detail = problem(
        call(
            &h.app,
            post_json("/api/v1/workflows", json!({"definition": "orders"})),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert!(
        detail.contains("0.2 s") && detail.contains("durable"),
        "{detail}"
    );
    // It was appended: the engine will see it when it comes back.
    let commands = Topics::default().commands();
    let mut total = 0;
    for partition in 0..h.log.partitions(&commands).await.unwrap() {
        total += h.log.end_offset(&commands, partition).await.unwrap();
    }
    assert_eq!(total, 1);
}

#[tokio::test]
async fn inbox_and_sla_queries_validate_and_answer_empty() {
    let h = harness(fast()).await;
    let app = &h.app;
    for uri in [
        "/api/v1/human-tasks",
        "/api/v1/human-tasks?status=open&group=finance&assignee=ann&limit=1000",
        "/api/v1/human-tasks?status=completed",
        "/api/v1/sla/breaches",
        "/api/v1/sla/breaches?limit=5",
    ] {
        let (status, _, body) = call(app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(body, json!({"items": []}), "{uri}");
    }
    let detail = problem(
        call(app, get("/api/v1/human-tasks?status=done")).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        detail.contains("open") && detail.contains("scheduled"),
        "{detail}"
    );
    for uri in [
        "/api/v1/human-tasks?limit=0",
        "/api/v1/sla/breaches?limit=1001",
        "/api/v1/sla/breaches?limit=many",
    ] {
        problem(call(app, get(uri)).await, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn human_task_verbs_and_signals_become_commands() {
    let h = harness(fast()).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    fake_engine(h.log.clone(), move |command| {
        record.lock().unwrap().push(command.clone());
        match command {
            Command::ClaimHumanTask { user, .. } if user == "bob" => Outcome::Rejected {
                rejection: Rejection::Conflict("task is claimed by ann".into()),
            },
            Command::CompleteHumanTask { output, .. } if output["approved"].is_string() => {
                Outcome::Rejected {
                    rejection: Rejection::Invalid(
                        "output does not match the form: /approved: \"yes\" is not of type \"boolean\""
                            .into(),
                    ),
                }
            }
            Command::SendSignal { name, .. } if name == "late" => Outcome::Rejected {
                rejection: Rejection::Conflict("workflow is completed".into()),
            },
            Command::SendSignal { name, .. } if name == "nobody" => Outcome::Rejected {
                rejection: Rejection::NotFound("no workflow".into()),
            },
            _ => Outcome::Accepted {
                seq: 3,
                result: Answer::Noted,
            },
        }
    });
    let app = &h.app;
    let task = TaskId::new(WorkflowId(uuid::Uuid::now_v7()), 2);
    let uri = |verb: &str| format!("/api/v1/human-tasks/{task}/{verb}");

    // The body names the user; else the header does; else it is a 400 and nothing is sent.
    let (status, _, body) = call(app, post_json(&uri("claim"), json!({"user": "ann"}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["task_id"], task.0);
    let with_header = Request::post(uri("release"))
        .header("x-distorch-user", "ann")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app, with_header).await.0, StatusCode::ACCEPTED);
    let detail = problem(
        call(app, post_json(&uri("claim"), json!({}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("X-DisTorch-User"), "{detail}");
    let detail = problem(
        call(app, post_json(&uri("claim"), json!({"usr": "ann"}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("usr"), "{detail}");

    let detail = problem(
        call(app, post_json(&uri("claim"), json!({"user": "bob"}))).await,
        StatusCode::CONFLICT,
    );
    assert!(detail.contains("claimed by ann"), "{detail}");
    let detail = problem(
        call(
            app,
            post_json(
                &uri("complete"),
                json!({"user": "ann", "output": {"approved": "yes"}}),
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("/approved"), "{detail}");
    let detail = problem(
        call(app, post_json(&uri("reassign"), json!({"user": "ann"}))).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("assignee"), "{detail}");
    let (status, _, _) = call(
        app,
        post_json(&uri("reassign"), json!({"user": "ann", "group": "leads"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    problem(
        call(
            app,
            post_json("/api/v1/human-tasks/nonsense/claim", json!({"user": "ann"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );

    // Signals: the body is the payload, an empty body is null.
    let wf = WorkflowId(uuid::Uuid::now_v7());
    let (status, _, body) = call(
        app,
        post_json(
            &format!("/api/v1/workflows/{wf}/signals/approval"),
            json!({"ok": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"workflow_id": wf.to_string(), "signal": "approval"})
    );
    let empty = Request::post(format!("/api/v1/workflows/{wf}/signals/ping")).body(Body::empty());
    assert_eq!(call(app, empty.unwrap()).await.0, StatusCode::ACCEPTED);
    problem(
        call(
            app,
            post_json(&format!("/api/v1/workflows/{wf}/signals/late"), json!(1)),
        )
        .await,
        StatusCode::CONFLICT,
    );
    problem(
        call(
            app,
            post_json(&format!("/api/v1/workflows/{wf}/signals/nobody"), json!(1)),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    let detail = problem(
        call(
            app,
            post_json(&format!("/api/v1/workflows/{wf}/signals/a%20b"), json!(1)),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("signal name"), "{detail}");
    problem(
        call(
            app,
            post(
                &format!("/api/v1/workflows/{wf}/signals/x"),
                "text/plain",
                "hi",
            ),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );

    let sent = seen.lock().unwrap().clone();
    let user_of = |c: &Command| match c {
        Command::ClaimHumanTask { user, .. }
        | Command::ReleaseHumanTask { user, .. }
        | Command::ReassignHumanTask { user, .. }
        | Command::CompleteHumanTask { user, .. } => Some(user.clone()),
        _ => None,
    };
    assert_eq!(
        sent.iter().filter_map(user_of).collect::<Vec<_>>(),
        ["ann", "ann", "bob", "ann", "ann"],
        "requests without a user never reach the engine"
    );
    let payloads: Vec<_> = sent
        .iter()
        .filter_map(|c| match c {
            Command::SendSignal { name, payload, .. } => Some((name.as_str(), payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        payloads,
        [
            ("approval", json!({"ok": true})),
            ("ping", Value::Null),
            ("late", json!(1)),
            ("nobody", json!(1)),
        ]
    );
}

/// A worker's failure report reaches the engine whole: its error, metrics and the
/// `retry_after_ms` a rate-limited service asked for; a misspelt field inside the error is
/// refused before anything is sent.
#[tokio::test]
async fn a_failure_report_carries_its_retry_after() {
    let h = harness(fast()).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    fake_engine(h.log.clone(), move |command| {
        record.lock().unwrap().push(command.clone());
        Outcome::Accepted {
            seq: 4,
            result: Answer::Noted,
        }
    });
    let task = TaskId::new(WorkflowId(uuid::Uuid::now_v7()), 1);
    let uri = format!("/api/v1/tasks/{task}/fail");
    let detail = problem(
        call(
            &h.app,
            post_json(
                &uri,
                json!({"attempt": 1, "error": {"type": "rate_limited", "mesage": "slow down"}}),
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert!(detail.contains("error.mesage"), "{detail}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "a refused body sends nothing"
    );

    let (status, _, body) = call(
        &h.app,
        post_json(
            &uri,
            json!({
                "attempt": 1,
                "error": {"type": "rate_limited", "message": "slow down"},
                "metrics": {"cpu_ms": 2.5},
                "retry_after_ms": 5000
            }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = seen.lock().unwrap();
    match seen.as_slice() {
        [
            Command::FailTask {
                task_id,
                attempt: 1,
                error,
                metrics: Some(metrics),
                retry_after_ms: Some(5000),
            },
        ] => {
            assert_eq!(task_id, &task);
            assert_eq!(error.kind, "rate_limited");
            assert_eq!(metrics.cpu_ms, Some(2.5));
        }
        other => panic!("expected one FailTask with retry_after_ms, got {other:?}"),
    }
}
