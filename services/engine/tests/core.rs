//! The engine's rules through its core, with no I/O: given the state a core holds, when a
//! batch of command records (or the clock, or a partition restored from the log) comes in,
//! then these records are to be appended.

use distorch_domain::command::{
    Answer, Command, CommandEnvelope, Outcome, ParentRef, Rejection, Reply,
};
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_domain::topics::{TaskDispatch, Topics};
use distorch_domain::workflow::Status;
use distorch_domain::{CommandId, TaskId, WorkflowId};
use distorch_engine::{Core, Incoming, Metrics, Output};
use distorch_eventlog::{Record, partition_for};
use serde_json::{Value, json};

const PARTITIONS: u32 = 4;
const T0: i64 = 1_700_000_000_000;

fn topics() -> Topics {
    Topics::default()
}

fn core() -> Core {
    let mut registry = prometheus_client::registry::Registry::default();
    Core::new(topics(), PARTITIONS, Metrics::new(&mut registry))
}

fn run_id(n: u128) -> WorkflowId {
    WorkflowId(uuid::Uuid::from_u128(
        0x0196_0000_0000_7000_8000_0000_0000_0000 | n,
    ))
}

/// A command record as a client publishes it, as the engine polls it.
fn record(id: &str, reply_to: Option<&str>, command: Command, partition: Option<u32>) -> Incoming {
    raw(id, reply_to, command, partition).into()
}

/// A command record as a client publishes it: keyed by its run, on that key's partition
/// unless `partition` says otherwise.
fn raw(id: &str, reply_to: Option<&str>, command: Command, partition: Option<u32>) -> Record {
    let key = command.key().expect("a keyed command");
    let env = CommandEnvelope {
        id: CommandId(id.into()),
        reply_to: reply_to.map(str::to_owned),
        command,
    };
    Record {
        topic: topics().commands(),
        partition: partition.unwrap_or_else(|| partition_for(&key, PARTITIONS)),
        offset: 0,
        key,
        headers: Vec::new(),
        payload: serde_json::to_vec(&env).unwrap(),
        timestamp_ms: T0,
    }
}

fn register(source: Value) -> Incoming {
    record(
        "reg-1",
        Some("api"),
        Command::RegisterDefinition { source },
        None,
    )
}

fn start(id: &str, run: WorkflowId, definition: &str) -> Incoming {
    start_record(id, run, definition).into()
}

/// The record of [`start`], for a test that alters it.
fn start_record(id: &str, run: WorkflowId, definition: &str) -> Record {
    raw(
        id,
        Some("api"),
        Command::StartWorkflow {
            workflow_id: run,
            definition: definition.into(),
            version: None,
            input: json!({"amount": 5}),
            idempotency_key: None,
            parent: None,
        },
        None,
    )
}

fn on(out: &Output, topic: &str) -> Vec<Value> {
    out.records
        .iter()
        .filter(|r| r.topic == topic)
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect()
}

fn replies(out: &Output) -> Vec<Reply> {
    on(out, &topics().replies())
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn events(out: &Output) -> Vec<EventEnvelope> {
    on(out, &topics().events())
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn dispatches(out: &Output, queue: &str) -> Vec<TaskDispatch> {
    on(out, &topics().tasks(queue))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

fn names(out: &Output) -> Vec<&'static str> {
    events(out).iter().map(|e| e.event.name()).collect()
}

/// A payment definition: one task step on queue `payments` with a 1 s timeout and two
/// attempts.
fn payments() -> Value {
    json!({
        "name": "pay",
        "steps": [{"id": "charge", "task": "charge", "queue": "payments", "timeout": "1s",
                   "retry": {"max_attempts": 2, "initial_interval": "1s"}}]
    })
}

/// A core with the payment definition registered, and what registering it appended.
fn with_payments() -> (Core, Output) {
    let mut core = core();
    let out = core.handle(&[register(payments())], T0);
    (core, out)
}

fn start_task(core: &mut Core, task: &TaskId, attempt: u32, now: i64) -> Output {
    let cmd = Command::StartTask {
        task_id: task.clone(),
        attempt,
        worker_id: "w1".into(),
        via: None,
        replaces: None,
    };
    core.handle(
        &[record(&format!("st-{attempt}"), Some("api"), cmd, None)],
        now,
    )
}

#[test]
fn a_registered_definition_starts_runs_whose_first_task_is_dispatched_and_answered() {
    // Given an engine
    // When a definition is registered, then it is appended with its version and answered
    let (mut core, out) = with_payments();
    let registered: Vec<DefinitionRegistered> = on(&out, &topics().definitions())
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(
        (registered[0].name.as_str(), registered[0].version),
        ("pay", 1)
    );
    assert_eq!(
        replies(&out)[0].outcome,
        Outcome::Accepted {
            seq: 0,
            result: Answer::Registered {
                name: "pay".into(),
                version: 1,
                unchanged: false,
            }
        }
    );

    // When a run starts, then its events, its first dispatch and its answer are appended
    let run = run_id(1);
    let out = core.handle(&[start("s1", run, "pay")], T0);
    assert_eq!(
        names(&out),
        ["workflow_started", "step_started", "task_scheduled"]
    );
    let offered = dispatches(&out, "payments");
    assert_eq!(offered.len(), 1);
    assert_eq!((offered[0].workflow_id, offered[0].attempt), (run, 1));
    assert_eq!(offered[0].input, json!({"amount": 5}));
    assert_eq!(
        replies(&out)[0].outcome,
        Outcome::Accepted {
            seq: 3,
            result: Answer::Started {
                workflow_id: run,
                status: Status::Running,
                existing: false
            }
        }
    );
    // And no timer is armed before a worker starts the attempt (its 1 s timeout counts from
    // the start)
    assert!(core.run(run).is_some());
    assert_eq!(core.next_deadline(), None);
}

#[test]
fn a_command_on_another_partition_than_its_runs_is_forwarded_unapplied() {
    let (mut core, _) = with_payments();
    let run = run_id(2);
    let home = partition_for(&run.to_string(), PARTITIONS);
    let stray = (home + 1) % PARTITIONS;
    // When a start arrives on a partition its run does not hash to
    let out = core.handle(
        &[record(
            "s2",
            Some("api"),
            Command::StartWorkflow {
                workflow_id: run,
                definition: "pay".into(),
                version: None,
                input: json!({}),
                idempotency_key: None,
                parent: None,
            },
            Some(stray),
        )],
        T0,
    );
    // Then it is re-published under the run's key, with where it came from, and nothing else
    assert_eq!(out.records.len(), 1);
    let forwarded = &out.records[0];
    assert_eq!(forwarded.topic, topics().commands());
    assert_eq!(forwarded.key, run.to_string());
    assert!(
        forwarded
            .headers
            .iter()
            .any(|(k, v)| k == "forwarded-from" && v.contains(&format!("[{stray}]")))
    );
    assert!(core.run(run).is_none(), "not applied here");
}

#[test]
fn what_can_never_succeed_is_dead_lettered_when_nobody_would_learn_of_it() {
    let (mut core, _) = with_payments();
    let dlq = topics().dlq();
    // When a record is not a command, then it goes to the DLQ with the reason
    let mut garbage = start_record("s3", run_id(3), "pay");
    garbage.payload = b"{not json".to_vec();
    let out = core.handle(&[garbage.into()], T0);
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.records[0].topic, dlq);
    assert!(
        out.records[0]
            .headers
            .iter()
            .any(|(k, v)| k == "reason" && v.starts_with("malformed command"))
    );

    // When a start without reply_to names an unknown definition, then it is dead-lettered
    let mut unknown = start_record("s4", run_id(4), "nope");
    let mut env: CommandEnvelope = serde_json::from_slice(&unknown.payload).unwrap();
    env.reply_to = None;
    unknown.payload = serde_json::to_vec(&env).unwrap();
    let out = core.handle(&[unknown.into()], T0);
    assert_eq!(on(&out, &dlq).len(), 1);

    // When the same start asks for a reply, then it is answered instead
    let out = core.handle(&[start("s5", run_id(5), "nope")], T0);
    assert!(on(&out, &dlq).is_empty());
    assert!(matches!(
        replies(&out)[0].outcome,
        Outcome::Rejected {
            rejection: Rejection::NotFound(_)
        }
    ));

    // When a worker reports on a stale attempt without reply_to (a conflict), then nothing
    // is dead-lettered: that is ordinary at-least-once traffic
    let run = run_id(6);
    let out = core.handle(&[start("s6", run, "pay")], T0);
    let task = dispatches(&out, "payments")[0].task_id.clone();
    let stale = record(
        "late",
        None,
        Command::CompleteTask {
            task_id: task,
            attempt: 7,
            output: json!({}),
            metrics: None,
        },
        None,
    );
    assert!(core.handle(&[stale], T0).records.is_empty());
}

#[test]
fn a_child_that_cannot_start_fails_its_parents_step_instead_of_a_dead_letter() {
    let (mut core, _) = with_payments();
    let (parent, child) = (run_id(7), run_id(8));
    // When a parent's child start names a definition that does not exist
    let out = core.handle(
        &[record(
            "child-start",
            None,
            Command::StartWorkflow {
                workflow_id: child,
                definition: "missing".into(),
                version: None,
                input: json!({}),
                idempotency_key: None,
                parent: Some(ParentRef {
                    workflow_id: parent,
                    step_key: "sub".into(),
                }),
            },
            None,
        )],
        T0,
    );
    // Then the parent is told, with the reason, and nothing goes to the DLQ
    assert!(on(&out, &topics().dlq()).is_empty());
    let notices = on(&out, &topics().commands());
    assert_eq!(notices.len(), 1);
    let notice: CommandEnvelope = serde_json::from_value(notices[0].clone()).unwrap();
    let Command::ChildFinished {
        workflow_id,
        step_key,
        child_id,
        error: Some(error),
        ..
    } = notice.command
    else {
        panic!("a ChildFinished with an error: {notice:?}")
    };
    assert_eq!(
        (workflow_id, step_key.as_str(), child_id),
        (parent, "sub", child)
    );
    assert_eq!(error.kind, "child.start");
    assert!(error.message.contains("missing"), "{}", error.message);
    assert!(!error.retryable);
}

#[test]
fn an_ended_run_keeps_only_what_answers_late_commands() {
    let (mut core, _) = with_payments();
    let run = run_id(9);
    let out = core.handle(&[start("s9", run, "pay")], T0);
    let task = dispatches(&out, "payments")[0].task_id.clone();
    start_task(&mut core, &task, 1, T0);
    // When the last task completes
    let complete = |id: &str| {
        record(
            id,
            Some("w"),
            Command::CompleteTask {
                task_id: task.clone(),
                attempt: 1,
                output: json!({"ok": true}),
                metrics: None,
            },
            None,
        )
    };
    let out = core.handle(&[complete("c1")], T0 + 10);
    assert_eq!(names(&out), ["task_completed", "workflow_completed"]);
    // Then the run's full state is dropped and its end kept
    assert!(core.run(run).is_none());
    let ended = core.ended(run).expect("kept");
    assert_eq!(ended.status, Status::Completed);

    // When the completion is delivered again under its id, a late report comes, and the
    // start is repeated, then each is answered from what is kept, appending no event
    let out = core.handle(
        &[
            complete("c1"),
            complete("c2"),
            start("s9-again", run, "pay"),
        ],
        T0 + 20,
    );
    assert!(events(&out).is_empty());
    let answers: Vec<Outcome> = replies(&out).into_iter().map(|r| r.outcome).collect();
    assert!(matches!(
        answers[0],
        Outcome::Rejected {
            rejection: Rejection::Conflict(_)
        }
    ));
    assert!(matches!(
        answers[1],
        Outcome::Rejected {
            rejection: Rejection::Conflict(_)
        }
    ));
    assert_eq!(
        answers[2],
        Outcome::Accepted {
            seq: ended.last_seq,
            result: Answer::Started {
                workflow_id: run,
                status: Status::Completed,
                existing: true
            }
        }
    );
}

#[test]
fn a_due_timer_fires_on_the_clock_and_the_retry_is_dispatched() {
    let (mut core, _) = with_payments();
    let run = run_id(10);
    let out = core.handle(&[start("s10", run, "pay")], T0);
    let task = dispatches(&out, "payments")[0].task_id.clone();
    // Given a started attempt with a 1 s timeout
    start_task(&mut core, &task, 1, T0);
    let deadline = core.next_deadline().expect("the timeout is armed");
    assert_eq!(deadline, T0 + 1_000);

    // When the clock passes it with no command, then the attempt times out
    let out = core.handle(&[], deadline + 1);
    assert_eq!(names(&out), ["task_failed"]);
    assert!(dispatches(&out, "payments").is_empty(), "backoff first");

    // When the backoff has passed, then attempt 2 is dispatched
    let retry_at = core.next_deadline().expect("the retry is armed");
    let out = core.handle(&[], retry_at);
    assert_eq!(names(&out), ["task_scheduled"]);
    assert_eq!(dispatches(&out, "payments")[0].attempt, 2);
}

#[test]
fn a_partition_restored_from_the_log_offers_waiting_attempts_and_arms_timers_again() {
    // Given what one engine appended for two runs: one waiting for a worker, one running
    let (mut first, registered) = with_payments();
    let (waiting, running) = (run_id(11), run_id(12));
    let mut log: Vec<EventEnvelope> = Vec::new();
    let out = first.handle(
        &[start("a", waiting, "pay"), start("b", running, "pay")],
        T0,
    );
    log.extend(events(&out));
    let task = dispatches(&out, "payments")
        .into_iter()
        .find(|d| d.workflow_id == running)
        .unwrap()
        .task_id;
    log.extend(events(&start_task(&mut first, &task, 1, T0)));

    // When another engine restores both runs' partitions from those events
    let mut next = core();
    for v in on(&registered, &topics().definitions()) {
        next.add_definition(&serde_json::from_value(v).unwrap());
    }
    for env in &log {
        next.fold(env);
    }
    let mut offers = Vec::new();
    let mut partitions: Vec<u32> = [waiting, running]
        .iter()
        .map(|r| partition_for(&r.to_string(), PARTITIONS))
        .collect();
    partitions.dedup();
    for p in partitions {
        offers.extend(dispatches(&next.acquired(p), "payments"));
    }
    // Then the waiting attempt is offered again, the running one is not, and the running
    // one's timeout is armed as the first engine had it
    assert_eq!(offers.len(), 1);
    assert_eq!((offers[0].workflow_id, offers[0].attempt), (waiting, 1));
    assert_eq!(next.next_deadline(), Some(T0 + 1_000));

    // When it releases them, then it forgets their runs and timers
    let all: Vec<u32> = (0..PARTITIONS).collect();
    assert_eq!(next.release(&all), 2);
    assert!(next.run(waiting).is_none() && next.run(running).is_none());
    assert_eq!(next.timer_count(), 0);
}

#[test]
fn a_snapshot_holds_a_partitions_live_and_ended_runs_only() {
    let (mut core, _) = with_payments();
    let run = run_id(13);
    core.handle(&[start("s13", run, "pay")], T0);
    let p = partition_for(&run.to_string(), PARTITIONS);
    let (runs, ended) = core.snapshot(p);
    assert_eq!((runs.len(), ended.len()), (1, 0));
    let (runs, _) = core.snapshot((p + 1) % PARTITIONS);
    assert!(
        runs.is_empty(),
        "another partition's snapshot does not hold it"
    );
}

#[test]
fn applying_an_unchanged_definition_again_answers_its_version_and_appends_nothing() {
    // Given "pay" registered as version 1
    let (mut core, _) = with_payments();
    let again = |id: &str, source: Value| {
        record(
            id,
            Some("api"),
            Command::RegisterDefinition { source },
            None,
        )
    };

    // When the same document is applied again (another command), then it is version 1 and
    // nothing is appended
    let out = core.handle(&[again("reg-2", payments())], T0 + 1);
    assert!(on(&out, &topics().definitions()).is_empty());
    assert_eq!(
        replies(&out)[0].outcome,
        Outcome::Accepted {
            seq: 0,
            result: Answer::Registered {
                name: "pay".into(),
                version: 1,
                unchanged: true,
            }
        }
    );

    // When a changed document is applied, then it becomes version 2
    let mut changed = payments();
    changed["steps"][0]["timeout"] = json!("2s");
    let out = core.handle(&[again("reg-3", changed.clone())], T0 + 2);
    let registered: Vec<DefinitionRegistered> = on(&out, &topics().definitions())
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].version, 2);

    // When version 1's document is applied after version 2, then it is a new version 3: only
    // the latest version is compared, so going back is a change like any other
    let out = core.handle(&[again("reg-4", payments())], T0 + 3);
    let registered: Vec<DefinitionRegistered> = on(&out, &topics().definitions())
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(registered[0].version, 3);
}
