//! Starting claimed attempts: a start the engine did not answer (it was failing over) is
//! asked again with the same command, so the engine applies it once and the attempt is
//! handed out as soon as the new owner answers, not after the attempt's timeout.

use distorch_domain::command::{Answer, Command, CommandEnvelope, Outcome, Rejection, Reply};
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::workflow::Status;
use distorch_domain::{TaskId, WorkflowId};
use distorch_eventlog::rpc::Rpc;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, NewRecord};
use distorch_tasks::{FeedConfig, Starter, TaskFeed, decode_reply};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const QUEUE: &str = "q";

struct Fixture {
    log: Arc<dyn EventLog>,
    topics: Topics,
    feed: TaskFeed,
    starter: Starter,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let topics = Topics::default();
    for topic in [topics.commands(), topics.replies(), topics.tasks(QUEUE)] {
        log.create_topic(&topic, 1).await.unwrap();
    }
    let rpc: Rpc<Outcome> = Rpc::start(log.clone(), &topics.replies(), "api-1", decode_reply)
        .await
        .unwrap();
    let starter = Starter::new(rpc, topics.commands(), Duration::from_millis(300));
    let feed = TaskFeed::start(
        log.clone(),
        FeedConfig {
            topic: topics.tasks(QUEUE),
            group: "api-poll".into(),
            prefetch: 8,
        },
    );
    Fixture {
        log,
        topics,
        feed,
        starter,
        _dir: dir,
    }
}

async fn offer(f: &Fixture, n: u32) -> TaskId {
    let wf = WorkflowId(uuid::Uuid::now_v7());
    let task_id = TaskId::new(wf, n);
    let dispatch = TaskDispatch {
        task_id: task_id.clone(),
        workflow_id: wf,
        step_id: format!("s{n}"),
        task: "t".into(),
        queue: QUEUE.into(),
        attempt: 1,
        input: serde_json::Value::Null,
        checkpoint: None,
        heartbeat_timeout_ms: None,
    };
    f.log
        .append(vec![NewRecord::new(
            f.topics.tasks(QUEUE),
            wf.to_string(),
            serde_json::to_vec(&dispatch).unwrap(),
        )])
        .await
        .unwrap();
    task_id
}

/// Every `StartTask` on the commands topic: (command id, task id, worker id).
async fn starts(f: &Fixture) -> Vec<(String, String, String)> {
    let records = f
        .log
        .read(&f.topics.commands(), 0, 0, 10_000, Duration::ZERO)
        .await
        .unwrap();
    records
        .iter()
        .filter_map(|r| {
            let env: CommandEnvelope = serde_json::from_slice(&r.payload).unwrap();
            match env.command {
                Command::StartTask {
                    task_id, worker_id, ..
                } => Some((env.id.0, task_id.0, worker_id)),
                _ => None,
            }
        })
        .collect()
}

/// Answers every command from `from` on, as an engine that owns the runs now: a command id
/// seen before gets the same answer again; attempts in `stale` are refused.
async fn engine_answers(f: &Fixture, from: u64, stale: &HashSet<String>) -> u64 {
    let records = f
        .log
        .read(&f.topics.commands(), 0, from, 10_000, Duration::ZERO)
        .await
        .unwrap();
    let mut answers: HashMap<String, Outcome> = HashMap::new();
    let mut replies = Vec::new();
    for r in &records {
        let env: CommandEnvelope = serde_json::from_slice(&r.payload).unwrap();
        let Command::StartTask { task_id, .. } = &env.command else {
            continue;
        };
        let outcome = answers
            .entry(env.id.0.clone())
            .or_insert_with(|| {
                if stale.contains(&task_id.0) {
                    Outcome::Rejected {
                        rejection: Rejection::Conflict("superseded".into()),
                    }
                } else {
                    Outcome::Accepted {
                        seq: 1,
                        result: Answer::Applied {
                            workflow_id: task_id.workflow_id().unwrap(),
                            status: Status::Running,
                        },
                    }
                }
            })
            .clone();
        let reply = Reply {
            command_id: env.id.clone(),
            outcome,
        };
        replies.push(NewRecord::new(
            f.topics.replies(),
            env.reply_to.clone().unwrap(),
            serde_json::to_vec(&reply).unwrap(),
        ));
    }
    if !replies.is_empty() {
        f.log.append(replies).await.unwrap();
    }
    from + records.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_start_is_asked_again_with_the_same_command_and_then_handed_out() {
    let f = fixture().await;
    // Given two offered attempts and no engine answering (the owner is failing over)
    let first = offer(&f, 1).await;
    let second = offer(&f, 2).await;
    let mut claims = Vec::new();
    while claims.len() < 2 {
        claims.extend(f.feed.take(2, Duration::from_secs(5)).await);
    }

    // When a worker polls them, then nothing is handed out and both go back to the queue
    let started = f.starter.start(&f.feed, "w1", claims).await.unwrap();
    assert!(started.accepted.is_empty());
    assert_eq!(started.unanswered, 2);
    let asked = starts(&f).await;
    assert_eq!(asked.len(), 2);

    // When the next poll (another worker's) takes them again, then they come back in order
    // and the very same commands are asked again (ids and worker), while the new owner answers
    let again = f.feed.take(10, Duration::from_secs(5)).await;
    let ids: Vec<_> = again.iter().map(|c| c.dispatch.task_id.clone()).collect();
    assert_eq!(ids, [first.clone(), second.clone()]);
    let answering = async {
        // The new owner answers once the second copies are on the log.
        loop {
            if starts(&f).await.len() == 4 {
                break engine_answers(&f, 0, &HashSet::new()).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (started, _) = tokio::join!(f.starter.start(&f.feed, "w2", again), answering);
    let started = started.unwrap();
    let handed: Vec<_> = started
        .accepted
        .iter()
        .map(|c| c.dispatch.task_id.clone())
        .collect();
    assert_eq!(handed, [first, second]);
    assert_eq!(started.unanswered, 0);
    let asked = starts(&f).await;
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[0..2], asked[2..4], "asked again as first asked");
    assert!(asked.iter().all(|(_, _, worker)| worker == "w1"));

    // And nothing is left in the queue
    assert!(f.feed.take(10, Duration::from_millis(200)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_is_settled_and_a_started_attempt_committed_once_settled() {
    let f = fixture().await;
    // Given an attempt the engine will refuse (superseded) and one it will start
    let stale = offer(&f, 1).await;
    let fresh = offer(&f, 2).await;
    let mut claims = Vec::new();
    while claims.len() < 2 {
        claims.extend(f.feed.take(2, Duration::from_secs(5)).await);
    }
    let refused: HashSet<String> = [stale.0.clone()].into();
    let answering = async {
        loop {
            if starts(&f).await.len() == 2 {
                break engine_answers(&f, 0, &refused).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // When the worker polls them
    let (started, _) = tokio::join!(f.starter.start(&f.feed, "w1", claims), answering);
    let started = started.unwrap();
    // Then only the fresh one is handed out
    assert_eq!(started.stale, 1);
    assert_eq!(started.accepted.len(), 1);
    assert_eq!(started.accepted[0].dispatch.task_id, fresh);
    // And the group's offset moves past both once the handed-out one is settled
    let topic = f.topics.tasks(QUEUE);
    let committed_reaches = |next: u64| {
        let (log, topic) = (f.log.clone(), topic.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while log.committed("api-poll", &topic, 0).await.unwrap() != Some(next) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{next} never committed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    committed_reaches(1).await;
    // (several commit intervals: the held record keeps the offset where it is)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        f.log.committed("api-poll", &topic, 0).await.unwrap(),
        Some(1)
    );
    f.feed.settle(&started.accepted[0]);
    committed_reaches(2).await;
}
