//! The JSON Schemas of what travels on DisTorch's topics (`schemas/*.schema.json`) against the
//! Rust types: every example validates, decodes and encodes again to valid JSON; every variant
//! has its schema and an example; schema and decoder agree field by field on what they accept;
//! bad payloads get an error that says where and why. (The workflow harness also checks every
//! command and event of the state machine tests against these schemas.)

#[path = "support/schemas.rs"]
mod support;

use std::collections::BTreeSet;

use distorch_domain::command::{Answer, Command, CommandEnvelope, Outcome, Rejection, Reply};
use distorch_domain::event::{Event, EventEnvelope, SCHEMA_VERSION, TaskKind};
use distorch_domain::ids::{CommandId, TaskId, WorkflowId};
use distorch_domain::workflow::{Status, Timer};
use serde_json::{Value, json};
use support::{Wire, check_written, closed, published, read_json, schemas_dir};

/// Directories under `schemas/examples/` and what their files hold. A file is named
/// `<type>.json`, or `<type>.<case>.json` for more examples of one type.
const EXAMPLES: [(&str, Wire); 6] = [
    ("commands", Wire::Command),
    ("events", Wire::Event),
    ("events-unversioned", Wire::Event),
    ("task-dispatch", Wire::TaskDispatch),
    ("replies", Wire::Reply),
    ("definition-registered", Wire::DefinitionRegistered),
];

struct Example {
    dir: &'static str,
    /// `<type>` of `<type>[.<case>].json`.
    kind: String,
    path: String,
    wire: Wire,
    json: Value,
}

fn examples() -> Vec<Example> {
    let mut all = Vec::new();
    for (dir, wire) in EXAMPLES {
        let mut names: Vec<String> = std::fs::read_dir(schemas_dir().join("examples").join(dir))
            .unwrap_or_else(|e| panic!("examples/{dir}: {e}"))
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(!names.is_empty(), "examples/{dir} is empty");
        for name in names {
            assert!(
                name.ends_with(".json"),
                "examples/{dir}/{name}: not a .json file"
            );
            let path = format!("examples/{dir}/{name}");
            all.push(Example {
                dir,
                kind: name.split('.').next().unwrap().to_string(),
                json: read_json(&path),
                path,
                wire,
            });
        }
    }
    all
}

fn examples_in(dir: &str) -> Vec<Example> {
    examples().into_iter().filter(|e| e.dir == dir).collect()
}

#[test]
fn every_example_validates_decodes_and_encodes_to_valid_json() {
    for ex in examples() {
        let path = &ex.path;
        let errors = published().errors(ex.wire, &ex.json);
        assert!(errors.is_empty(), "{path}: {errors:#?}");
        let errors = closed().errors(ex.wire, &ex.json);
        assert!(
            errors.is_empty(),
            "{path} has a field its schema does not name: {errors:#?}"
        );
        let again = ex
            .wire
            .round_trip(&ex.json)
            .unwrap_or_else(|e| panic!("{path} does not decode: {e}"));
        for schemas in [published(), closed()] {
            let errors = schemas.errors(ex.wire, &again);
            assert!(
                errors.is_empty(),
                "{path} encoded again: {errors:#?}\n{again:#}"
            );
        }
        assert_eq!(
            ex.wire.round_trip(&again).unwrap(),
            again,
            "{path}: not stable"
        );
        match (ex.wire, ex.dir) {
            // Clients may write a command in any valid form; see below for old events.
            (Wire::Command, _) | (_, "events-unversioned") => {}
            // The others show exactly what the engine writes.
            _ => assert_eq!(again, ex.json, "{path} is not what the engine writes"),
        }
    }
}

#[test]
fn events_written_before_versioning_decode_as_version_1() {
    let old = examples_in("events-unversioned");
    assert!(!old.is_empty());
    for ex in old {
        assert!(ex.json.get("v").is_none(), "{}: has a `v`", ex.path);
        let env: EventEnvelope = serde_json::from_value(ex.json.clone()).unwrap();
        assert_eq!(env.v, 1, "{}", ex.path);
        // Encoded again, it is the same event with its version written out.
        let mut expected = ex.json.clone();
        expected["v"] = json!(1);
        assert_eq!(serde_json::to_value(&env).unwrap(), expected, "{}", ex.path);
    }
    assert_eq!(
        SCHEMA_VERSION, 1,
        "a new version needs its schema and examples"
    );
}

// ----- every variant has a schema and an example -----

/// One arm per `Command` variant. A new variant breaks this match: give it the next number
/// and bump `COMMANDS`; the test then asks for its example, which needs its schema.
fn command_variant(command: &Command) -> usize {
    use Command::*;
    match command {
        RegisterDefinition { .. } => 0,
        StartWorkflow { .. } => 1,
        CancelWorkflow { .. } => 2,
        PauseWorkflow { .. } => 3,
        ResumeWorkflow { .. } => 4,
        AddTask { .. } => 5,
        StartTask { .. } => 6,
        CompleteTask { .. } => 7,
        FailTask { .. } => 8,
        Heartbeat { .. } => 9,
        RetryTask { .. } => 10,
        SkipTask { .. } => 11,
        DeferTask { .. } => 12,
        ChildFinished { .. } => 13,
        SendSignal { .. } => 14,
        ClaimHumanTask { .. } => 15,
        ReleaseHumanTask { .. } => 16,
        ReassignHumanTask { .. } => 17,
        CompleteHumanTask { .. } => 18,
        FireTimer { .. } => 19,
    }
}
const COMMANDS: usize = 20;

/// One arm per `Event` variant; see [`command_variant`].
fn event_variant(event: &Event) -> usize {
    use Event::*;
    match event {
        WorkflowStarted { .. } => 0,
        StepStarted { .. } => 1,
        StepSkipped { .. } => 2,
        StepCompleted { .. } => 3,
        StepFailed { .. } => 4,
        BranchChosen { .. } => 5,
        ForeachStarted { .. } => 6,
        TimerStarted { .. } => 7,
        ChildWorkflowRequested { .. } => 8,
        ChildCancelRequested { .. } => 9,
        TaskScheduled { .. } => 10,
        TaskDeferred { .. } => 11,
        FallbackTaken { .. } => 12,
        TaskStarted { .. } => 13,
        TaskHeartbeat { .. } => 14,
        TaskCompleted { .. } => 15,
        TaskFailed { .. } => 16,
        TaskParked { .. } => 17,
        TaskCancelled { .. } => 18,
        TaskSkipped { .. } => 19,
        TaskRetried { .. } => 20,
        TaskAdded { .. } => 21,
        SignalReceived { .. } => 22,
        HumanTaskCreated { .. } => 23,
        HumanTaskClaimed { .. } => 24,
        HumanTaskReleased { .. } => 25,
        HumanTaskReassigned { .. } => 26,
        SlaWarned { .. } => 27,
        SlaBreached { .. } => 28,
        WorkflowPaused => 29,
        WorkflowResumed => 30,
        CompensationStarted { .. } => 31,
        WorkflowCompleted { .. } => 32,
        WorkflowFailed { .. } => 33,
        WorkflowCompensated { .. } => 34,
        WorkflowCancelled { .. } => 35,
    }
}
const EVENTS: usize = 36;

fn assert_every_variant(what: &str, indexes: impl IntoIterator<Item = usize>, count: usize) {
    let seen: BTreeSet<usize> = indexes.into_iter().collect();
    let missing: Vec<usize> = (0..count).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{what}: no example of variants {missing:?}"
    );
}

/// The `type` values a schema lists, checked to be dispatched one by one to `$defs/<type>`.
fn schema_types(wire: Wire) -> BTreeSet<String> {
    let schema = read_json(wire.file());
    let listed: Vec<String> = schema["properties"]["type"]["enum"]
        .as_array()
        .expect("a `type` enum")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let types: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        types.len(),
        listed.len(),
        "{}: a type listed twice",
        wire.file()
    );
    let mut dispatched = BTreeSet::new();
    for branch in schema["allOf"].as_array().expect("allOf") {
        let t = branch["if"]["properties"]["type"]["const"]
            .as_str()
            .unwrap();
        assert_eq!(
            branch["then"]["$ref"],
            json!(format!("#/$defs/{t}")),
            "{}: {t}",
            wire.file()
        );
        let def = &schema["$defs"][t];
        assert!(
            def["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{}: $defs/{t} needs a description",
            wire.file()
        );
        dispatched.insert(t.to_string());
    }
    assert_eq!(dispatched, types, "{}: `type` enum vs allOf", wire.file());
    types
}

#[test]
fn every_command_variant_has_a_schema_and_an_example() {
    let types = schema_types(Wire::Command);
    let examples = examples_in("commands");
    let named: BTreeSet<String> = examples.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(named, types, "example files vs the schema's types");
    let mut indexes = Vec::new();
    for ex in &examples {
        let env: CommandEnvelope = serde_json::from_value(ex.json.clone()).unwrap();
        assert_eq!(env.command.name(), ex.kind, "{}", ex.path);
        indexes.push(command_variant(&env.command));
    }
    assert_every_variant("Command", indexes, COMMANDS);
}

#[test]
fn every_event_variant_has_a_schema_and_an_example() {
    let types = schema_types(Wire::Event);
    let examples = examples_in("events");
    let named: BTreeSet<String> = examples.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(named, types, "example files vs the schema's types");
    let mut indexes = Vec::new();
    for ex in &examples {
        let env: EventEnvelope = serde_json::from_value(ex.json.clone()).unwrap();
        assert_eq!(env.event.name(), ex.kind, "{}", ex.path);
        indexes.push(event_variant(&env.event));
    }
    assert_every_variant("Event", indexes, EVENTS);
}

fn wf() -> WorkflowId {
    WorkflowId(uuid::Uuid::from_u128(
        0x0196_0000_0000_7000_8000_0000_0000_0001,
    ))
}

fn task() -> TaskId {
    TaskId::new(wf(), 1)
}

/// Nested enums: one value of each variant, written by the code, checked by the schemas.
#[test]
fn every_timer_task_kind_and_reply_outcome_matches_the_schemas() {
    let timers = [
        Timer::Retry {
            task_id: task(),
            attempt: 2,
        },
        Timer::ScheduleToStart {
            task_id: task(),
            attempt: 1,
        },
        Timer::StartToClose {
            task_id: task(),
            attempt: 1,
        },
        Timer::Heartbeat {
            task_id: task(),
            attempt: 1,
        },
        Timer::Wait {
            step_key: "cooldown".into(),
        },
        Timer::Escalate { task_id: task() },
        Timer::HumanTimeout { task_id: task() },
        Timer::Sla {
            step_key: None,
            breach: false,
        },
    ];
    let timer_variant = |t: &Timer| match t {
        Timer::Retry { .. } => 0,
        Timer::ScheduleToStart { .. } => 1,
        Timer::StartToClose { .. } => 2,
        Timer::Heartbeat { .. } => 3,
        Timer::Wait { .. } => 4,
        Timer::Escalate { .. } => 5,
        Timer::HumanTimeout { .. } => 6,
        Timer::Sla { .. } => 7,
    };
    assert_every_variant("Timer", timers.iter().map(timer_variant), 8);
    for timer in timers {
        check_written(
            Wire::Command,
            &CommandEnvelope {
                id: CommandId("timer".into()),
                reply_to: None,
                command: Command::FireTimer {
                    workflow_id: wf(),
                    timer,
                },
            },
        );
    }

    let kinds = [TaskKind::Step, TaskKind::Compensation, TaskKind::Human];
    let kind_variant = |k: &TaskKind| match k {
        TaskKind::Step => 0,
        TaskKind::Compensation => 1,
        TaskKind::Human => 2,
    };
    assert_every_variant("TaskKind", kinds.iter().map(kind_variant), 3);
    let scheduled = read_json("examples/events/task_scheduled.json");
    for kind in kinds {
        let mut env: EventEnvelope = serde_json::from_value(scheduled.clone()).unwrap();
        let Event::TaskScheduled { kind: k, .. } = &mut env.event else {
            panic!("task_scheduled.json holds another event")
        };
        *k = kind;
        check_written(Wire::Event, &env);
    }

    let outcomes = [
        Outcome::Accepted {
            seq: 0,
            result: Answer::Noted,
        },
        Outcome::Accepted {
            seq: 3,
            result: Answer::Started {
                workflow_id: wf(),
                status: Status::Running,
                existing: false,
            },
        },
        Outcome::Accepted {
            seq: 0,
            result: Answer::Registered {
                name: "orders".into(),
                version: 2,
                unchanged: true,
            },
        },
        Outcome::Accepted {
            seq: 9,
            result: Answer::TaskAdded { task_id: task() },
        },
        Outcome::Accepted {
            seq: 4,
            result: Answer::Applied {
                workflow_id: wf(),
                status: Status::Paused,
            },
        },
        Outcome::Accepted {
            seq: 0,
            result: Answer::CancelRequested {
                workflow_id: wf(),
                status: Status::Cancelled,
            },
        },
        Outcome::Rejected {
            rejection: Rejection::Invalid("input does not match".into()),
        },
        Outcome::Rejected {
            rejection: Rejection::NotFound("workflow not found".into()),
        },
        Outcome::Rejected {
            rejection: Rejection::Conflict("stale attempt".into()),
        },
    ];
    let outcome_variant = |o: &Outcome| match o {
        Outcome::Accepted { .. } => 0,
        Outcome::Rejected {
            rejection: Rejection::Invalid(_),
        } => 1,
        Outcome::Rejected {
            rejection: Rejection::NotFound(_),
        } => 2,
        Outcome::Rejected {
            rejection: Rejection::Conflict(_),
        } => 3,
    };
    assert_every_variant("Outcome", outcomes.iter().map(outcome_variant), 4);
    let answer_variant = |o: &Outcome| match o {
        Outcome::Accepted { result, .. } => Some(match result {
            Answer::Started { .. } => 0,
            Answer::Registered { .. } => 1,
            Answer::TaskAdded { .. } => 2,
            Answer::Applied { .. } => 3,
            Answer::Noted => 4,
            Answer::CancelRequested { .. } => 5,
        }),
        Outcome::Rejected { .. } => None,
    };
    assert_every_variant("Answer", outcomes.iter().filter_map(answer_variant), 6);
    for outcome in outcomes {
        check_written(
            Wire::Reply,
            &Reply {
                command_id: CommandId("c1".into()),
                outcome,
            },
        );
    }
}

#[test]
fn command_examples_follow_the_documented_record_key() {
    for ex in examples_in("commands") {
        let j = &ex.json;
        // The rule as commands.schema.json states it.
        let documented = if ex.kind == "register_definition" {
            format!("definition/{}", j["source"]["name"].as_str().unwrap())
        } else if let Some(w) = j.get("workflow_id") {
            w.as_str().unwrap().to_string()
        } else {
            let t = j["task_id"].as_str().unwrap();
            t.rsplit_once('.').unwrap().0.to_string()
        };
        let env: CommandEnvelope = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(env.command.key(), Some(documented), "{}", ex.path);
    }
}

// ----- schema and decoder agree, field by field -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    Remove,
    Null,
    /// Another JSON type: a string becomes a number, a number a string, and so on.
    WrongType,
    Negative,
    AboveU32,
    Fraction,
    /// Another string.
    OtherString,
}

const MUTATIONS: [Mutation; 7] = [
    Mutation::Remove,
    Mutation::Null,
    Mutation::WrongType,
    Mutation::Negative,
    Mutation::AboveU32,
    Mutation::Fraction,
    Mutation::OtherString,
];

/// Where the schema is stricter than the decoder on purpose: (field, mutation, why).
const NARROWER: [(&str, Mutation, &str); 7] = [
    (
        "type",
        Mutation::WrongType,
        "serde also takes a number as the tag: the index of a variant in declaration order",
    ),
    (
        "kind",
        Mutation::WrongType,
        "the same, for a timer's `kind`",
    ),
    (
        "task_id",
        Mutation::OtherString,
        "the engine decodes any string, then refuses a task id it cannot route",
    ),
    (
        "source",
        Mutation::Null,
        "a definition document: the engine decodes any JSON, its parser refuses the rest",
    ),
    ("source", Mutation::WrongType, "as above"),
    (
        "step",
        Mutation::Null,
        "a task step: the engine decodes any JSON, its parser refuses the rest",
    ),
    ("step", Mutation::WrongType, "as above"),
];

/// Fields of free-form JSON (or documents the engine's parser checks): mutated as a whole,
/// not inside.
const FREE_FORM: [&str; 10] = [
    "input",
    "output",
    "payload",
    "checkpoint",
    "source",
    "step",
    "form",
    "items",
    "result",
    "body",
];

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every value to mutate.
fn targets(value: &Value, pointer: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let p = format!("{pointer}/{}", escape(key));
                out.push(p.clone());
                if !FREE_FORM.contains(&key.as_str()) {
                    targets(v, &p, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{pointer}/{i}");
                out.push(p.clone());
                targets(v, &p, out);
            }
        }
        _ => {}
    }
}

fn mutate(doc: &Value, pointer: &str, mutation: Mutation) -> Option<Value> {
    let mut doc = doc.clone();
    let target = doc.pointer(pointer)?.clone();
    let replacement = match (mutation, &target) {
        (Mutation::Remove, _) => {
            let (parent, key) = pointer.rsplit_once('/')?;
            let key = key.replace("~1", "/").replace("~0", "~");
            doc.pointer_mut(parent)?.as_object_mut()?.remove(&key);
            return Some(doc);
        }
        (Mutation::Null, Value::Null) => return None,
        (Mutation::Null, _) => Value::Null,
        (Mutation::WrongType, Value::String(_)) => json!(7),
        (Mutation::WrongType, Value::Number(_)) => json!("7"),
        (Mutation::WrongType, Value::Bool(_)) => json!("true"),
        (Mutation::WrongType, Value::Object(_) | Value::Array(_)) => json!("x"),
        (Mutation::Negative, Value::Number(_)) => json!(-1),
        (Mutation::AboveU32, Value::Number(_)) => json!(4_294_967_296_u64),
        (Mutation::Fraction, Value::Number(_)) => json!(1.5),
        (Mutation::OtherString, Value::String(_)) => json!("zzz"),
        _ => return None,
    };
    *doc.pointer_mut(pointer)? = replacement;
    Some(doc)
}

/// For every field of every example, and every way of breaking it, the schema accepts the
/// result exactly when the Rust type decodes it: no required field is optional in one and not
/// the other, every `null` the decoder takes the schema takes, integer ranges match (u32,
/// u64, i64), and so on. The exceptions are the deliberate ones in `NARROWER`.
#[test]
fn schema_and_decoder_agree_on_every_field() {
    let mut disagreements = Vec::new();
    let mut narrowings_seen = BTreeSet::new();
    let mut checked = 0;
    for ex in examples() {
        let mut pointers = Vec::new();
        targets(&ex.json, "", &mut pointers);
        for pointer in &pointers {
            for mutation in MUTATIONS {
                let Some(doc) = mutate(&ex.json, pointer, mutation) else {
                    continue;
                };
                checked += 1;
                let schema_ok = published().get(ex.wire).is_valid(&doc);
                let decoded = ex.wire.round_trip(&doc);
                if schema_ok == decoded.is_ok() {
                    continue;
                }
                let field = pointer.rsplit('/').next().unwrap();
                let narrower = NARROWER
                    .iter()
                    .position(|(f, m, _)| *f == field && *m == mutation);
                match (narrower, schema_ok) {
                    (Some(i), false) => {
                        narrowings_seen.insert(i);
                    }
                    _ => disagreements.push(format!(
                        "{} {pointer} {mutation:?}: schema {}, decoder {}",
                        ex.path,
                        if schema_ok { "accepts" } else { "rejects" },
                        match &decoded {
                            Ok(_) => "accepts".to_string(),
                            Err(e) => format!("rejects ({e})"),
                        },
                    )),
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "schema and decoder disagree ({} of {checked} cases):\n  {}",
        disagreements.len(),
        disagreements.join("\n  ")
    );
    let unused: Vec<_> = (0..NARROWER.len())
        .filter(|i| !narrowings_seen.contains(i))
        .map(|i| NARROWER[i])
        .collect();
    assert!(
        unused.is_empty(),
        "NARROWER lists cases that no longer differ: {unused:?}"
    );
}

// ----- bad payloads -----

/// Validates `doc`, expecting one error, at `path`, whose message contains `says`: one
/// mistake gives one error that names it.
fn assert_rejected(wire: Wire, doc: Value, path: &str, says: &str) {
    let errors = published().errors(wire, &doc);
    assert!(
        errors.len() == 1
            && errors[0].starts_with(&format!("{path}: "))
            && errors[0].contains(says),
        "expected one error at {path} saying {says:?}, got {errors:#?}\nfor {doc:#}"
    );
}

fn command(kind: &str) -> Value {
    read_json(&format!("examples/commands/{kind}.json"))
}

#[test]
fn bad_commands_are_rejected_with_an_error_that_says_where_and_why() {
    let mut doc = command("complete_task");
    doc.as_object_mut().unwrap().remove("type");
    assert_rejected(
        Wire::Command,
        doc.clone(),
        "/",
        "\"type\" is a required property",
    );
    assert!(Wire::Command.round_trip(&doc).is_err());

    let mut doc = command("complete_task");
    doc["type"] = json!("complete_tasks");
    assert_rejected(Wire::Command, doc, "/type", "is not one of");

    let mut doc = command("complete_task");
    doc["attempt"] = json!("1");
    assert_rejected(
        Wire::Command,
        doc.clone(),
        "/attempt",
        "is not of type \"integer\"",
    );
    assert!(Wire::Command.round_trip(&doc).is_err());

    let mut doc = command("complete_task");
    doc["attempt"] = json!(0);
    assert_rejected(Wire::Command, doc, "/attempt", "less than the minimum of 1");

    let mut doc = command("start_workflow");
    doc["workflow_id"] = json!("order-42");
    assert_rejected(Wire::Command, doc.clone(), "/workflow_id", "does not match");
    assert!(Wire::Command.round_trip(&doc).is_err());

    let mut doc = command("start_task");
    doc["task_id"] = json!("42");
    assert_rejected(Wire::Command, doc, "/task_id", "does not match");

    let mut doc = command("fail_task");
    doc["error"].as_object_mut().unwrap().remove("type");
    assert_rejected(
        Wire::Command,
        doc,
        "/error",
        "\"type\" is a required property",
    );

    // A misspelt field: the engine would ignore it, the schema says so.
    let mut doc = command("fail_task");
    let retry_after = doc
        .as_object_mut()
        .unwrap()
        .remove("retry_after_ms")
        .unwrap();
    doc["retry_after"] = retry_after;
    assert_rejected(
        Wire::Command,
        doc.clone(),
        "/",
        "Additional properties are not allowed ('retry_after' was unexpected)",
    );
    assert!(Wire::Command.round_trip(&doc).is_ok());
    let mut doc = command("fail_task");
    doc["error"]["retriable"] = json!(false);
    assert_rejected(Wire::Command, doc, "/error", "'retriable' was unexpected");

    let mut doc = command("reassign_human_task");
    let o = doc.as_object_mut().unwrap();
    o.remove("assignee");
    o.remove("group");
    assert_rejected(Wire::Command, doc, "/", "\"group\" is a required property");

    let mut doc = command("register_definition");
    doc["source"]["steps"] = json!([]);
    assert_rejected(Wire::Command, doc, "/source/steps", "has less than 1 item");
}

#[test]
fn bad_events_are_rejected_with_an_error_that_says_where_and_why() {
    let event = |kind: &str| read_json(&format!("examples/events/{kind}.json"));

    let mut doc = event("task_scheduled");
    doc["kind"] = json!("worker");
    assert_rejected(Wire::Event, doc, "/kind", "is not one of");

    let mut doc = event("task_completed");
    doc.as_object_mut().unwrap().remove("output");
    assert_rejected(Wire::Event, doc, "/", "\"output\" is a required property");

    let mut doc = event("workflow_started");
    doc["seq"] = json!(0);
    assert_rejected(Wire::Event, doc, "/seq", "less than the minimum of 1");

    // A version newer than this code: the schema and the decoder both refuse it, so it is
    // never misread as the version this code knows.
    let mut doc = event("task_completed");
    doc["v"] = json!(2);
    assert_rejected(Wire::Event, doc.clone(), "/v", "1 was expected");
    assert!(Wire::Event.round_trip(&doc).is_err());

    // Event readers tolerate fields added later; only the closed schema (tests) rejects them.
    let mut doc = event("task_completed");
    doc["added_later"] = json!(true);
    assert!(published().get(Wire::Event).is_valid(&doc));
    assert!(!closed().get(Wire::Event).is_valid(&doc));
    assert!(Wire::Event.round_trip(&doc).is_ok());
}
