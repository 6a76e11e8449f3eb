//! GraphQL end to end through `distorch standalone`: subscriptions over graphql-ws that see
//! every event of a run once and in order and resume after the last seen seq; queries with
//! pagination; mutations that drive runs like REST does; clear errors with codes.

mod common;

use common::{Api, Server, tempdir};
use distorch_worker::{Worker, WorkerHandle};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Guard against a hung server; no test relies on how long anything takes.
const PATIENCE: Duration = Duration::from_secs(30);

const STEPS: &str = r#"
name: gql
steps:
  - {id: one, task: step, queue: gql}
  - {id: two, task: step, queue: gql}
  - {id: three, task: step, queue: gql}
"#;

fn worker(server: &Server) -> WorkerHandle {
    Worker::builder(server.url.clone(), "gql")
        .handler(
            "step",
            |ctx| async move { Ok(json!({"step": ctx.step_id})) },
        )
        .spawn()
        .expect("worker")
}

/// `POST /graphql`; returns the whole response body.
async fn gql(server: &Server, query: &str, variables: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/graphql", server.url))
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("POST /graphql");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("a JSON body")
}

/// The `data` of a response that must have no errors.
async fn data(server: &Server, query: &str, variables: Value) -> Value {
    let body = gql(server, query, variables).await;
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// The first error of a response that must fail: `(code, message)`.
async fn error(server: &Server, query: &str, variables: Value) -> (String, String) {
    let body = gql(server, query, variables).await;
    let e = &body["errors"][0];
    assert!(e.is_object(), "{query} should fail: {body}");
    (
        e["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-ws (`graphql-transport-ws`) connection with one subscription.
struct Subscription {
    socket: Socket,
}

impl Subscription {
    async fn open(server: &Server, query: &str, variables: Value) -> Subscription {
        let url = format!("{}/graphql", server.url.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket upgrade of GET /graphql");
        send(&mut socket, json!({"type": "connection_init"})).await;
        assert_eq!(receive(&mut socket).await["type"], "connection_ack");
        let subscribe = json!({"id": "1", "type": "subscribe",
                               "payload": {"query": query, "variables": variables}});
        send(&mut socket, subscribe).await;
        Subscription { socket }
    }

    /// The next protocol message about the subscription (`next`, `error` or `complete`).
    async fn message(&mut self) -> Value {
        loop {
            let msg = receive(&mut self.socket).await;
            if msg["type"] == "ping" {
                send(&mut self.socket, json!({"type": "pong"})).await;
                continue;
            }
            return msg;
        }
    }

    /// The payload of the next `next` message.
    async fn next(&mut self) -> Value {
        let msg = self.message().await;
        assert_eq!(msg["type"], "next", "{msg}");
        assert!(msg["payload"].get("errors").is_none(), "{msg}");
        msg["payload"]["data"].clone()
    }
}

async fn send(socket: &mut Socket, msg: Value) {
    socket
        .send(Message::Text(msg.to_string().into()))
        .await
        .expect("send");
}

async fn receive(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).expect("JSON message");
        }
    }
}

const EVENTS: &str = "subscription($id: ID!, $after: Int!) {
  workflowEvents(workflowId: $id, afterSeq: $after) { workflowId seq type at data }
}";

async fn start_run(server: &Server) -> String {
    let started = data(
        server,
        "mutation($input: StartWorkflowInput!) { startWorkflow(input: $input) { workflowId status existing } }",
        json!({"input": {"definition": "gql", "input": {"n": 1}}}),
    )
    .await;
    assert_eq!(started["startWorkflow"]["existing"], false);
    started["startWorkflow"]["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned()
}

/// `(seq, type)` of every event in the run's REST history.
async fn history(api: &Api, id: &str) -> Vec<(u64, String)> {
    let (status, body) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Reads `workflowEvents` until the run's last event; returns `(seq, type)` of each.
async fn until_completed(
    sub: &mut Subscription,
    mut seen: Vec<(u64, String)>,
) -> Vec<(u64, String)> {
    loop {
        let event = sub.next().await["workflowEvents"].clone();
        let kind = event["type"].as_str().unwrap().to_owned();
        assert_eq!(
            event["data"]["type"],
            kind.as_str(),
            "data is the whole event"
        );
        seen.push((event["seq"].as_u64().unwrap(), kind.clone()));
        if kind == "workflow_completed" {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sees_every_event_of_a_run_once_in_order() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(STEPS).await.0, 201);
    let id = start_run(&server).await;

    let mut sub = Subscription::open(&server, EVENTS, json!({"id": id, "after": 0})).await;
    let _worker = worker(&server);
    let seen = until_completed(&mut sub, Vec::new()).await;

    assert_eq!(seen.first().map(|e| e.1.as_str()), Some("workflow_started"));
    // The feed reads the log, so it may be ahead of the read model that REST serves.
    api.wait_status(&id, "completed").await;
    assert_eq!(
        seen,
        history(&api, &id).await,
        "exactly the run's history, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reconnects_after_its_last_seq_misses_nothing_and_sees_nothing_twice() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(STEPS).await.0, 201);
    let id = start_run(&server).await;

    // Two events, then the connection drops while the run goes on.
    let mut sub = Subscription::open(&server, EVENTS, json!({"id": id, "after": 0})).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = sub.next().await["workflowEvents"].clone();
        seen.push((
            e["seq"].as_u64().unwrap(),
            e["type"].as_str().unwrap().to_owned(),
        ));
    }
    drop(sub);
    let worker = worker(&server);
    api.wait_status(&id, "completed").await;
    worker.shutdown().await;

    let last = seen.last().unwrap().0;
    let mut sub = Subscription::open(&server, EVENTS, json!({"id": id, "after": last})).await;
    let seen = until_completed(&mut sub, seen).await;
    assert_eq!(seen, history(&api, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_updates_follow_the_tasks_of_one_queue() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(STEPS).await.0, 201);
    let mut sub = Subscription::open(
        &server,
        "subscription { taskUpdates(queue: \"gql\") { taskId queue workflowId seq type } }",
        json!({}),
    )
    .await;
    let _worker = worker(&server);
    // graphql-ws does not acknowledge a subscribe, and this stream starts "from now": runs
    // are started until one shows up, then the run under test starts on a live stream.
    loop {
        start_run(&server).await;
        let got = tokio::time::timeout(Duration::from_secs(1), sub.message()).await;
        if got.is_ok() {
            break;
        }
    }
    let id = start_run(&server).await;
    let mut kinds = Vec::new();
    while kinds
        .iter()
        .filter(|k: &&String| *k == "task_completed")
        .count()
        < 3
    {
        let update = sub.next().await["taskUpdates"].clone();
        assert_eq!(update["queue"], "gql");
        if update["workflowId"] == id.as_str() {
            kinds.push(update["type"].as_str().unwrap().to_owned());
        }
    }
    let triple = ["task_scheduled", "task_started", "task_completed"];
    assert_eq!(
        kinds,
        [triple, triple, triple].concat(),
        "each task, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_page_through_runs_and_mutations_drive_them() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let registered = data(
        &server,
        "mutation($yaml: String) { registerDefinition(yaml: $yaml) { name version } }",
        json!({"yaml": STEPS}),
    )
    .await;
    assert_eq!(
        registered["registerDefinition"],
        json!({"name": "gql", "version": 1})
    );
    let defs = data(
        &server,
        "{ definitions { name latestVersion versions } }",
        json!({}),
    )
    .await;
    assert_eq!(
        defs["definitions"],
        json!([{"name": "gql", "latestVersion": 1, "versions": [1]}])
    );

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(start_run(&server).await);
    }
    let page = "query($after: String) { workflows(first: 2, after: $after, filter: {definition: \"gql\"}) {
        nodes { workflowId status } pageInfo { hasNextPage endCursor } } }";
    let first = data(&server, page, json!({"after": null})).await["workflows"].clone();
    assert_eq!(first["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let second = data(
        &server,
        page,
        json!({"after": first["pageInfo"]["endCursor"]}),
    )
    .await["workflows"]
        .clone();
    assert_eq!(second["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(
        second["pageInfo"],
        json!({"hasNextPage": false, "endCursor": null})
    );
    let mut listed: Vec<String> = first["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["nodes"].as_array().unwrap())
        .map(|n| n["workflowId"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "every run once across the pages");

    let verb = |name: &str| {
        format!("mutation($id: ID!) {{ {name}(id: $id) {{ workflowId status caughtUp }} }}")
    };
    let paused = data(&server, &verb("pauseWorkflow"), json!({"id": ids[0]})).await;
    assert_eq!(paused["pauseWorkflow"]["status"], "PAUSED");
    let resumed = data(&server, &verb("resumeWorkflow"), json!({"id": ids[0]})).await;
    assert_eq!(resumed["resumeWorkflow"]["status"], "RUNNING");
    let cancelled = data(&server, &verb("cancelWorkflow"), json!({"id": ids[1]})).await;
    assert_eq!(cancelled["cancelWorkflow"]["status"], "CANCELLED");
    assert_eq!(cancelled["cancelWorkflow"]["caughtUp"], true);

    let run = data(
        &server,
        "query($id: ID!) { workflow(id: $id) { status tasks { taskId status } history { seq type }
            path { stepKey kind outcome attempts } } }",
        json!({"id": ids[1]}),
    )
    .await["workflow"]
        .clone();
    assert_eq!(run["status"], "CANCELLED");
    assert_eq!(
        run["history"][0],
        json!({"seq": 1, "type": "workflow_started"})
    );
    assert_eq!(run["path"][0]["stepKey"], "one");
    assert_eq!(run["path"][0]["kind"], "TASK");
    assert_eq!(run["path"][0]["outcome"], "CANCELLED");
    let task_id = run["tasks"][0]["taskId"].clone();
    let task = data(
        &server,
        "query($id: ID!) { task(id: $id) { stepId status } }",
        json!({"id": task_id}),
    )
    .await;
    assert_eq!(
        task["task"],
        json!({"stepId": "one", "status": "CANCELLED"})
    );

    let unknown = "00000000-0000-7000-8000-000000000000";
    let none = data(
        &server,
        "query($id: ID!) { workflow(id: $id) { status } }",
        json!({"id": unknown}),
    )
    .await;
    assert_eq!(
        none["workflow"],
        Value::Null,
        "an unknown run is null, not an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_with_a_code() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(STEPS).await.0, 201);

    let (code, message) = error(&server, "{ workflow(id: \"nope\") { status } }", json!({})).await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(message.contains("not a workflow id"), "{message}");

    let (code, message) = error(
        &server,
        "{ workflows(first: 0) { nodes { status } } }",
        json!({}),
    )
    .await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(message.contains("from 1 to 1000"), "{message}");

    let unknown = "00000000-0000-7000-8000-000000000000";
    let (code, _) = error(
        &server,
        "mutation($id: ID!) { pauseWorkflow(id: $id) { status } }",
        json!({"id": unknown}),
    )
    .await;
    assert_eq!(code, "NOT_FOUND");

    let id = start_run(&server).await;
    data(
        &server,
        "mutation($id: ID!) { cancelWorkflow(id: $id) { status } }",
        json!({"id": id}),
    )
    .await;
    let (code, _) = error(
        &server,
        "mutation($id: ID!) { resumeWorkflow(id: $id) { status } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(code, "CONFLICT", "a cancelled run cannot be resumed");

    let (code, message) = error(
        &server,
        "mutation { startWorkflow(input: {definition: \"nope\"}) { workflowId } }",
        json!({}),
    )
    .await;
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("nope"), "{message}");

    let (code, message) = error(
        &server,
        "mutation { registerDefinition { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(message.contains("exactly one"), "{message}");

    let (code, message) = error(
        &server,
        "mutation { registerDefinition(definition: {name: \"x\", steps: [{id: \"a\"}]}) { name } }",
        json!({}),
    )
    .await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(
        message.contains("steps[0]"),
        "the engine's detail names the path: {message}"
    );

    // A subscription to a run that does not exist fails at once, with the same code.
    let mut sub = Subscription::open(&server, EVENTS, json!({"id": unknown, "after": 0})).await;
    let msg = sub.message().await;
    assert_eq!(msg["payload"]["data"], Value::Null, "{msg}");
    let e = &msg["payload"]["errors"][0];
    assert_eq!(e["extensions"]["code"], "NOT_FOUND", "{msg}");
    assert!(e["message"].as_str().unwrap().contains(unknown), "{msg}");
}

#[tokio::test]
async fn graphiql_is_served_on_a_plain_get() {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let resp = reqwest::get(format!("{}/graphql", server.url))
        .await
        .expect("GET /graphql");
    assert_eq!(resp.status().as_u16(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("graphiql"), "GraphiQL page");
}
