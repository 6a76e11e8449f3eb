//! Poison records on the commands topic of a real Kafka-compatible broker: records that are
//! no JSON, no command, fail the command schema, name an unregistered definition or carry an
//! input failing the definition's `input_schema`, published by "another service" straight
//! onto `<prefix>.commands` between good starts of the same partitions. Every good run
//! finishes; every bad record lands in the DLQ, unchanged, with a reason the API shows.
//!
//! Needs `DISTORCH_TEST_KAFKA` (host:port); `bash scripts/test.sh` starts a broker and sets it.

mod common;

use common::kafka::{broker, cluster_config, unique_prefix};
use common::{Server, tempdir};
use distorch_eventlog::kafka::{KafkaConfig, KafkaLog};
use distorch_eventlog::{EventLog, NewRecord};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const GOOD_RUNS: usize = 12;
const QUEUE: &str = "poison";

/// A bad record: its key, its body, and a fragment its DLQ reason must contain.
struct Poison {
    key: String,
    payload: Vec<u8>,
    reason: &'static str,
}

fn poisons(good_keys: &[String]) -> Vec<Poison> {
    let unknown_run = uuid::Uuid::new_v4().to_string();
    let short_input = uuid::Uuid::new_v4().to_string();
    let start = |workflow_id: &str, definition: &str, input: Value| {
        serde_json::to_vec(&json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "start_workflow",
            "workflow_id": workflow_id,
            "definition": definition,
            "input": input,
        }))
        .unwrap()
    };
    vec![
        Poison {
            // Keyed like good runs, so their partitions have to flow past it.
            key: good_keys[0].clone(),
            payload: b"this is not JSON".to_vec(),
            reason: "malformed command",
        },
        Poison {
            key: good_keys[1].clone(),
            payload: br#"{"id": "c-1", "type": "launch_rocket"}"#.to_vec(),
            reason: "launch_rocket",
        },
        Poison {
            key: good_keys[2].clone(),
            payload: br#"{"id": "c-2", "type": "start_workflow", "workflow_id": "not-a-uuid", "definition": "poison"}"#.to_vec(),
            reason: "malformed command",
        },
        Poison {
            key: good_keys[3].clone(),
            payload: Vec::new(),
            reason: "malformed command",
        },
        Poison {
            key: unknown_run.clone(),
            payload: start(&unknown_run, "no-such-definition", json!({"n": 1})),
            reason: "\"no-such-definition\" is not registered",
        },
        Poison {
            key: short_input.clone(),
            payload: start(&short_input, "poison", json!({"m": 1})),
            reason: "input does not match the input_schema",
        },
    ]
}

async fn connect() -> KafkaLog {
    KafkaLog::connect(KafkaConfig::new(broker()))
        .await
        .expect("connect to the test broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq_with_their_reason_and_good_runs_finish() {
    let dir = tempdir();
    let prefix = unique_prefix("poison");
    let config = cluster_config(dir.path(), &prefix, "");
    let _engine = Server::service("engine", &config);
    let _saga = Server::service("saga", &config);
    let _projector = Server::service("projector", &config);
    let api_server = Server::service("api", &config);
    let api = api_server.api();

    let definition = json!({
        "name": "poison",
        "input_schema": {"type": "object", "required": ["n"]},
        "steps": [
            {"id": "a", "task": "work", "queue": QUEUE},
            {"id": "b", "task": "work", "queue": QUEUE},
        ],
    });
    let (status, body) = api.post("/definitions", definition).await;
    assert_eq!(status, 201, "{body}");

    // Good starts and poison, interleaved, published as another service would: no
    // reply_to, keyed by workflow id.
    let good: Vec<String> = (0..GOOD_RUNS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let bad = poisons(&good);
    let commands = format!("{prefix}.commands");
    let mut records = Vec::new();
    for (i, id) in good.iter().enumerate() {
        if let Some(p) = bad.get(i) {
            records.push(NewRecord::new(&commands, &p.key, p.payload.clone()));
        }
        let start = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "type": "start_workflow",
            "workflow_id": id,
            "definition": "poison",
            "input": {"n": i},
        });
        records.push(NewRecord::new(
            &commands,
            id,
            serde_json::to_vec(&start).unwrap(),
        ));
    }
    let log = connect().await;
    log.append(records).await.expect("publish the commands");

    // A worker finishes every good run.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut done = 0;
    while done < GOOD_RUNS * 2 {
        assert!(
            Instant::now() < deadline,
            "only {done} of {} tasks arrived",
            GOOD_RUNS * 2
        );
        for task in api.poll(QUEUE, 10, 500).await {
            let n = task["input"]["n"].clone();
            let (status, body) = api.complete(&task, json!({"n": n})).await;
            assert_eq!(status, 200, "{body}");
            done += 1;
        }
    }
    for (i, id) in good.iter().enumerate() {
        let run = api.wait_status(id, "completed").await;
        assert_eq!(run["output"]["b"]["n"], json!(i), "{run}");
    }

    // Each bad record is in the DLQ, as published, with its reason and source.
    let deadline = Instant::now() + Duration::from_secs(30);
    let items = loop {
        let (status, body) = api.get("/dlq/commands").await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= bad.len() || Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(items.len(), bad.len(), "DLQ: {items:#?}");
    let mut by_payload: BTreeMap<String, &Value> = BTreeMap::new();
    for item in &items {
        let payload = match &item["payload"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        by_payload.insert(payload, item);
    }
    for p in &bad {
        let text = String::from_utf8(p.payload.clone()).unwrap();
        let key = serde_json::from_slice::<Value>(&p.payload)
            .map(|v| v.to_string())
            .unwrap_or(text);
        let item = by_payload
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} is not in the DLQ: {items:#?}"));
        let reason = item["reason"].as_str().unwrap();
        assert!(reason.contains(p.reason), "{key:?}: reason {reason:?}");
        assert_eq!(item["key"], json!(p.key), "{item}");
        let source = item["source"].as_str().unwrap();
        assert!(source.starts_with(&format!("{commands}[")), "{source}");
    }

    // Paged: a cursor continues where the previous page stopped, and the end says so.
    let (_, first) = api.get("/dlq/commands?limit=4").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 4, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next_cursor");
    let (_, rest) = api
        .get(&format!("/dlq/commands?limit=4&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2, "{rest}");
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    let (status, body) = api.get("/dlq/commands?cursor=nonsense").await;
    assert_eq!(status, 400, "{body}");

    // The API's own requests are answered, never dead-lettered.
    let (status, body) = api
        .post(
            "/workflows",
            json!({"definition": "no-such-definition", "input": {}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, after) = api.get("/dlq/commands").await;
    assert_eq!(after["items"].as_array().unwrap().len(), bad.len());
}
