//! Live streams end to end through `distorch standalone`: WebSocket streams of a run's
//! events and of task updates, and Server-Sent Events that resume with `Last-Event-ID`
//! without a gap or a repeat.

mod common;

use common::{Api, Server, tempdir};
use distorch_worker::{Worker, WorkerHandle};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Guard against a hung server; no test relies on how long anything takes.
const PATIENCE: Duration = Duration::from_secs(30);

const STEPS: &str = r#"
name: live
steps:
  - {id: one, task: step, queue: live}
  - {id: two, task: step, queue: live}
  - {id: three, task: step, queue: live}
"#;

fn worker(server: &Server) -> WorkerHandle {
    Worker::builder(server.url.clone(), "live")
        .handler("step", |_| async move { Ok(json!({})) })
        .spawn()
        .expect("worker")
}

async fn setup() -> (tempfile::TempDir, Server, Api) {
    let dir = tempdir();
    let server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(STEPS).await.0, 201);
    (dir, server, api)
}

/// `(seq, type)` of every event in the run's REST history.
async fn history(api: &Api, id: &str) -> Vec<(u64, String)> {
    let (status, body) = api.get(&format!("/workflows/{id}/history")).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(seq_type)
        .collect()
}

fn seq_type(e: &Value) -> (u64, String) {
    (
        e["seq"].as_u64().unwrap(),
        e["type"].as_str().unwrap().to_owned(),
    )
}

fn ws_url(server: &Server, path: &str) -> String {
    format!("{}{path}", server.url.replacen("http", "ws", 1))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("WebSocket upgrade")
        .0
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_websocket_delivers_its_events_in_order_from_after_seq() {
    let (_dir, server, api) = setup().await;
    let id = api.start("live", json!({})).await;
    let _worker = worker(&server);

    let mut socket = ws(&ws_url(&server, &format!("/ws/workflows/{id}"))).await;
    let mut seen = Vec::new();
    loop {
        let event = receive(&mut socket).await;
        assert_eq!(event["workflow_id"], id.as_str());
        seen.push(seq_type(&event));
        if event["type"] == "workflow_completed" {
            break;
        }
    }
    // The stream reads the log, so it may be ahead of the read model that REST serves.
    api.wait_status(&id, "completed").await;
    let all = history(&api, &id).await;
    assert_eq!(seen, all, "every event once, in order");

    let mut socket = ws(&ws_url(&server, &format!("/ws/workflows/{id}?after_seq=2"))).await;
    assert_eq!(
        seq_type(&receive(&mut socket).await),
        all[2],
        "starts after seq 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_websocket_streams_the_updates_of_one_queue() {
    let (_dir, server, api) = setup().await;
    let other = "name: other\nsteps: [{id: x, task: x, queue: elsewhere}]\n";
    assert_eq!(api.register_yaml(other).await.0, 201);
    let mut socket = ws(&ws_url(&server, "/ws/tasks/stream?queue=live")).await;
    let _worker = worker(&server);
    // The stream is open once the upgrade is answered: everything after it is delivered.
    api.start("other", json!({})).await;
    let id = api.start("live", json!({})).await;
    let mut kinds = Vec::new();
    while kinds
        .iter()
        .filter(|k: &&String| *k == "task_completed")
        .count()
        < 3
    {
        let update = receive(&mut socket).await;
        assert_eq!(
            update["queue"], "live",
            "only the queue asked for: {update}"
        );
        if update["workflow_id"] == id.as_str() {
            kinds.push(update["type"].as_str().unwrap().to_owned());
        }
    }
    let triple = ["task_scheduled", "task_started", "task_completed"];
    assert_eq!(kinds, [triple, triple, triple].concat());
}

/// One parsed server-sent event.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads server-sent events from a streaming response.
struct SseReader {
    resp: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(server: &Server, query: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req =
            reqwest::Client::new().get(format!("{}/api/v1/events/stream{query}", server.url));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("GET /api/v1/events/stream");
        assert_eq!(resp.status().as_u16(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseReader {
            resp,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Sse {
        // Keep-alive comments arrive while nothing happens, so the guard is per event.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse::default();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                // Keep-alive comments carry no data.
                if data.is_empty() {
                    continue;
                }
                event.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return event;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("an event in time")
                .expect("the stream stays open")
                .expect("the stream does not end");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_of_a_run_resumes_after_the_last_event_id() {
    let (_dir, server, api) = setup().await;
    let id = api.start("live", json!({})).await;
    let query = format!("?workflow_id={id}");

    let mut sse = SseReader::open(&server, &query, None).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = sse.next().await;
        assert_eq!(
            e.id,
            e.data["seq"].to_string(),
            "the id of a run's event is its seq"
        );
        assert_eq!(e.event, e.data["type"].as_str().unwrap());
        seen.push(seq_type(&e.data));
    }
    let last_id = seen.last().unwrap().0.to_string();
    drop(sse);

    let worker = worker(&server);
    api.wait_status(&id, "completed").await;
    worker.shutdown().await;
    let mut sse = SseReader::open(&server, &query, Some(&last_id)).await;
    loop {
        let e = sse.next().await;
        seen.push(seq_type(&e.data));
        if e.event == "workflow_completed" {
            break;
        }
    }
    assert_eq!(
        seen,
        history(&api, &id).await,
        "no gap and no repeat across the reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_of_every_run_resumes_from_its_position() {
    let (_dir, server, api) = setup().await;
    let mut sse = SseReader::open(&server, "", None).await;
    // Starting "from now": the run starts after the stream answered, so all of it is there.
    let id = api.start("live", json!({})).await;
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.len() < 3 {
        let e = sse.next().await;
        if e.data["workflow_id"] == id.as_str() {
            seen.push(seq_type(&e.data));
            last_id = e.id.clone();
        }
    }
    drop(sse);

    let worker = worker(&server);
    api.wait_status(&id, "completed").await;
    worker.shutdown().await;
    let mut sse = SseReader::open(&server, "", Some(&last_id)).await;
    loop {
        let e = sse.next().await;
        if e.data["workflow_id"] != id.as_str() {
            continue;
        }
        seen.push(seq_type(&e.data));
        if e.event == "workflow_completed" {
            break;
        }
    }
    assert_eq!(
        seen,
        history(&api, &id).await,
        "no gap and no repeat across the reconnect"
    );
}

#[tokio::test]
async fn bad_stream_requests_get_a_problem() {
    let (_dir, server, api) = setup().await;
    let (status, body) = api.get("/events/stream?workflow_id=nope").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not a workflow id")
    );

    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/events/stream", server.url))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not a stream position"),
        "{body}"
    );

    let unknown = "00000000-0000-7000-8000-000000000000";
    let (status, _) = api
        .get(&format!("/events/stream?workflow_id={unknown}"))
        .await;
    assert_eq!(status, 404);

    let resp = reqwest::get(format!("{}/ws/workflows/{unknown}", server.url))
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        400,
        "a plain GET of a WebSocket endpoint"
    );
    let err =
        tokio_tungstenite::connect_async(ws_url(&server, &format!("/ws/workflows/{unknown}")))
            .await
            .expect_err("an unknown run is refused");
    assert!(err.to_string().contains("404"), "{err}");
}
