//! Given/when/then tests: how defaults resolve, and one test for every way a document can
//! be rejected, asserting where (the JSON path) and the gist of why.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::definition::Join;

/// Given: a valid document with one task step, changed by `edit`.
fn doc(edit: impl FnOnce(&mut Value)) -> Value {
    let mut d = json!({
        "name": "t",
        "steps": [{"id": "a", "task": "work"}]
    });
    edit(&mut d);
    d
}

/// Given: a valid document whose only step is `step`.
fn with_step(step: Value) -> Value {
    doc(|d| d["steps"] = json!([step]))
}

/// Then: it is rejected at `path` with a message containing every `gist`.
#[track_caller]
fn assert_rejected(source: Value, path: &str, gist: &[&str]) {
    let err = Definition::from_source(&source, 1).expect_err("definition should be rejected");
    assert_eq!(err.path, path, "wrong path; message: {}", err.message);
    for g in gist {
        assert!(
            err.message.contains(g),
            "message {:?} does not mention {g:?}",
            err.message
        );
    }
}

fn parse(source: Value) -> Definition {
    Definition::from_source(&source, 1).unwrap_or_else(|e| panic!("{e}"))
}

fn task(step: &Step) -> &TaskSpec {
    match &step.kind {
        StepKind::Task(t) => t,
        other => panic!("not a task: {other:?}"),
    }
}

// ---- resolution of defaults ----

#[test]
fn minimal_definition_gets_builtin_defaults() {
    let def = parse(doc(|_| {}));
    let a = task(&def.steps[0]);
    assert_eq!(a.queue, "work", "queue defaults to the task type");
    assert_eq!(a.retry, RetryPolicy::default());
    assert_eq!(a.timeout, DEFAULT_TIMEOUT);
    assert_eq!(def.steps[0].on_failure, OnFailure::Fail);
    assert!(def.output.is_none() && def.input_schema.is_none());
    assert_eq!(def.source, doc(|_| {}));
    assert_eq!(def.version, 1);
}

#[test]
fn on_failure_is_compensate_when_compensations_exist() {
    let def = parse(doc(|d| {
        d["compensations"] = json!({"undo": {"task": "undo"}})
    }));
    assert_eq!(def.steps[0].on_failure, OnFailure::Compensate);
}

#[test]
fn on_failure_prefers_step_then_defaults() {
    let def = parse(doc(|d| {
        d["compensations"] = json!({"undo": {"task": "undo"}});
        d["defaults"] = json!({"on_failure": "park"});
        d["steps"] = json!([
            {"id": "a", "task": "w"},
            {"id": "b", "task": "w", "on_failure": "continue"}
        ]);
    }));
    assert_eq!(def.steps[0].on_failure, OnFailure::Park);
    assert_eq!(def.steps[1].on_failure, OnFailure::Continue);
}

#[test]
fn retry_merges_field_by_field_through_containers() {
    let def = parse(doc(|d| {
        d["defaults"] = json!({"retry": {"max_attempts": 5, "jitter": 0.5}, "timeout": "10s"});
        d["compensations"] = json!({"undo": {"task": "undo", "retry": {"initial_interval": "2s"}}});
        d["steps"] = json!([{
            "id": "each",
            "retry": {"backoff_coefficient": 3},
            "timeout": "20s",
            "foreach": {"items": ".input", "steps": [
                {"id": "inner", "task": "w", "retry": {"max_attempts": 2}}
            ]}
        }]);
    }));
    let StepKind::Foreach {
        steps,
        max_concurrency,
        ..
    } = &def.steps[0].kind
    else {
        panic!("not a foreach")
    };
    assert_eq!(*max_concurrency, u32::MAX);
    let inner = task(&steps[0]);
    assert_eq!(
        inner.retry,
        RetryPolicy {
            max_attempts: 2,
            backoff_coefficient: 3.0,
            jitter: 0.5,
            ..RetryPolicy::default()
        }
    );
    assert_eq!(inner.timeout, Duration::from_secs(20));
    let undo = &def.compensations["undo"];
    assert_eq!(undo.retry.initial_interval, Duration::from_secs(2));
    assert_eq!(undo.retry.max_attempts, 5);
    assert_eq!(undo.timeout, Duration::from_secs(10));
    assert_eq!(undo.queue, "undo");
}

#[test]
fn yaml_anchors_and_merge_keys_are_resolved() {
    let yaml = "
name: t
x-base: &base {task: work, queue: q}
steps:
  - {id: a, <<: *base}
";
    // `x-base` is not a known field: anchors must live inside known fields...
    let err = Definition::from_text(yaml, SourceFormat::Yaml, 1).unwrap_err();
    assert_eq!(err.path, "x-base");
    // ...such as a step that others merge from.
    let yaml = "
name: t
steps:
  - &first {id: a, task: work, queue: q}
  - {<<: *first, id: b}
";
    let def = Definition::from_text(yaml, SourceFormat::Yaml, 1).unwrap();
    assert_eq!(task(&def.steps[1]).queue, "q");
    assert_eq!(def.source["steps"][1]["task"], "work");
}

#[test]
fn parallel_join_defaults_to_all() {
    let def = parse(with_step(json!({
        "id": "p", "parallel": {"branches": [{"steps": [{"id": "a", "task": "w"}]}]}
    })));
    assert!(matches!(
        def.steps[0].kind,
        StepKind::Parallel {
            join: Join::All,
            ..
        }
    ));
}

// ---- malformed input ----

#[test]
fn malformed_json_is_rejected_with_its_position() {
    let err = Definition::from_text("{\"name\": ", SourceFormat::Json, 1).unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.message.contains("invalid JSON") && err.message.contains("line 1"));
}

#[test]
fn malformed_yaml_is_rejected_with_its_position() {
    let err = Definition::from_text("name: t\nsteps: [\n", SourceFormat::Yaml, 1).unwrap_err();
    assert_eq!(err.path, "");
    assert!(
        err.message.contains("invalid YAML") && err.message.contains("line 3"),
        "{}",
        err.message
    );
}

#[test]
fn a_document_that_is_not_an_object_is_rejected() {
    assert_rejected(json!([1]), "", &["expected a definition object", "array"]);
    let err = Definition::from_text("", SourceFormat::Yaml, 1).unwrap_err();
    assert!(err.message.contains("found null"), "{}", err.message);
}

// ---- unknown fields ----

#[test]
fn unknown_top_level_field_is_named_with_the_allowed_ones() {
    assert_rejected(
        doc(|d| d["colour"] = json!("red")),
        "colour",
        &["unknown field `colour`", "allowed: name, description"],
    );
}

#[test]
fn unknown_field_in_defaults_and_retry() {
    assert_rejected(
        doc(|d| d["defaults"] = json!({"timeouts": "1s"})),
        "defaults.timeouts",
        &["unknown field", "allowed: retry, timeout, on_failure"],
    );
    assert_rejected(
        doc(|d| d["defaults"] = json!({"retry": {"max_attempt": 2}})),
        "defaults.retry.max_attempt",
        &["unknown field `max_attempt`", "max_attempts"],
    );
}

#[test]
fn unknown_field_in_a_nested_step() {
    assert_rejected(
        with_step(json!({"id": "p", "parallel": {"branches": [
            {"steps": [{"id": "a", "task": "w"}]},
            {"steps": [{"id": "b", "task": "w", "queues": "q"}]}
        ]}})),
        "steps[0].parallel.branches[1].steps[0].queues",
        &["unknown field `queues`", "queue"],
    );
}

#[test]
fn task_fields_on_other_step_kinds_are_unknown() {
    assert_rejected(
        with_step(json!({"id": "w", "wait": "1s", "queue": "q"})),
        "steps[0].queue",
        &[
            "unknown field `queue`",
            "allowed: id, when, on_failure, sla, wait",
        ],
    );
    assert_rejected(
        with_step(json!({"id": "w", "wait": "1s", "retry": {"max_attempts": 2}})),
        "steps[0].retry",
        &["unknown field `retry`"],
    );
}

#[test]
fn unknown_fields_in_kind_objects() {
    assert_rejected(
        with_step(json!({"id": "s", "switch": {"cases": [], "otherwise": []}})),
        "steps[0].switch.otherwise",
        &["allowed: cases, default"],
    );
    assert_rejected(
        with_step(json!({"id": "s", "switch": {"cases": [{"if": ".x", "steps": []}]}})),
        "steps[0].switch.cases[0].if",
        &["allowed: when, steps"],
    );
    assert_rejected(
        with_step(json!({"id": "p", "parallel": {"branches": [{"tasks": []}]}})),
        "steps[0].parallel.branches[0].tasks",
        &["allowed: steps"],
    );
    assert_rejected(
        with_step(json!({"id": "f", "foreach": {"items": ".x", "steps": [], "concurrency": 2}})),
        "steps[0].foreach.concurrency",
        &["max_concurrency"],
    );
    assert_rejected(
        with_step(json!({"id": "c", "workflow": {"name": "x", "args": 1}})),
        "steps[0].workflow.args",
        &["allowed: name, version, input"],
    );
    assert_rejected(
        doc(|d| d["compensations"] = json!({"undo": {"task": "u", "when": ".x"}})),
        "compensations.undo.when",
        &["allowed: task, queue, input, retry, timeout"],
    );
}

// ---- step kinds ----

#[test]
fn unknown_step_kind() {
    assert_rejected(
        with_step(json!({"id": "h", "grpc": {"url": "x"}})),
        "steps[0].grpc",
        &["unknown step kind `grpc`", "task, switch, parallel"],
    );
}

#[test]
fn missing_step_kind() {
    assert_rejected(
        with_step(json!({"id": "a", "queue": "q"})),
        "steps[0]",
        &["missing step kind", "task, switch"],
    );
}

#[test]
fn ambiguous_step_kind() {
    assert_rejected(
        with_step(json!({"id": "a", "task": "w", "wait": "1s"})),
        "steps[0]",
        &["ambiguous step kind", "`task` and `wait`"],
    );
}

#[test]
fn a_step_must_be_an_object() {
    assert_rejected(
        with_step(json!("reserve")),
        "steps[0]",
        &["expected a step object", "string"],
    );
}

// ---- ids ----

#[test]
fn step_id_is_required_and_well_formed() {
    assert_rejected(
        with_step(json!({"task": "w"})),
        "steps[0]",
        &["missing required field `id`"],
    );
    assert_rejected(
        with_step(json!({"id": "", "task": "w"})),
        "steps[0].id",
        &["must not be empty"],
    );
    assert_rejected(
        with_step(json!({"id": "a.b", "task": "w"})),
        "steps[0].id",
        &["'.'", "letters, digits"],
    );
    assert_rejected(
        with_step(json!({"id": "a[0]", "task": "w"})),
        "steps[0].id",
        &["'['"],
    );
    assert_rejected(
        with_step(json!({"id": 7, "task": "w"})),
        "steps[0].id",
        &["expected a string", "number 7"],
    );
}

#[test]
fn duplicate_ids_name_both_places() {
    assert_rejected(
        doc(|d| {
            d["steps"] = json!([
                {"id": "a", "task": "w"},
                {"id": "p", "parallel": {"branches": [{"steps": [{"id": "a", "task": "w"}]}]}}
            ])
        }),
        "steps[1].parallel.branches[0].steps[0].id",
        &["duplicate step id `a`", "steps[0].id"],
    );
    assert_rejected(
        doc(|d| {
            d["steps"] = json!([
                {"id": "s", "switch": {"cases": [{"when": "true", "steps": [{"id": "x", "task": "w"}]}],
                                       "default": [{"id": "x", "task": "w"}]}}
            ])
        }),
        "steps[0].switch.default[0].id",
        &["steps[0].switch.cases[0].steps[0].id"],
    );
}

// ---- references ----

#[test]
fn unknown_compensation_name() {
    assert_rejected(
        doc(|d| {
            d["compensations"] = json!({"refund": {"task": "refund"}});
            d["steps"][0]["compensate"] = json!("refnd");
        }),
        "steps[0].compensate",
        &["unknown compensation `refnd`", "defined: refund"],
    );
    assert_rejected(
        doc(|d| d["steps"][0]["compensate"] = json!("refund")),
        "steps[0].compensate",
        &["no `compensations`"],
    );
}

// ---- jq ----

#[test]
fn invalid_jq_reports_the_jq_error() {
    assert_rejected(
        doc(|d| d["steps"][0]["when"] = json!(".x ==")),
        "steps[0].when",
        &["invalid jq", "expected term"],
    );
    assert_rejected(
        doc(|d| d["output"] = json!("{a: .x")),
        "output",
        &["closing brace"],
    );
    assert_rejected(
        doc(|d| d["steps"][0]["input"] = json!("nosuchfn")),
        "steps[0].input",
        &["undefined filter `nosuchfn/0`"],
    );
    assert_rejected(
        with_step(
            json!({"id": "f", "foreach": {"items": "[", "steps": [{"id": "i", "task": "w"}]}}),
        ),
        "steps[0].foreach.items",
        &["invalid jq"],
    );
    assert_rejected(
        with_step(json!({"id": "s", "switch": {"cases": [{"when": "now", "steps": []}]}})),
        "steps[0].switch.cases[0].when",
        &["undefined filter `now/0`"],
    );
    assert_rejected(
        doc(|d| d["compensations"] = json!({"undo": {"task": "u", "input": ""}})),
        "compensations.undo.input",
        &["must not be empty"],
    );
    assert_rejected(
        with_step(json!({"id": "c", "workflow": {"name": "x", "input": "{"}})),
        "steps[0].workflow.input",
        &["invalid jq"],
    );
}

// ---- durations ----

#[test]
fn invalid_durations() {
    assert_rejected(
        doc(|d| d["steps"][0]["timeout"] = json!("30 parsecs")),
        "steps[0].timeout",
        &["invalid duration \"30 parsecs\"", "30s"],
    );
    assert_rejected(
        doc(|d| d["steps"][0]["heartbeat_timeout"] = json!("0s")),
        "steps[0].heartbeat_timeout",
        &["greater than zero"],
    );
    assert_rejected(
        doc(|d| d["defaults"] = json!({"timeout": 30})),
        "defaults.timeout",
        &["expected a duration", "number 30"],
    );
    assert_rejected(
        with_step(json!({"id": "w", "wait": "soon"})),
        "steps[0].wait",
        &["invalid duration"],
    );
    assert_rejected(
        doc(|d| d["defaults"] = json!({"retry": {"initial_interval": "-1s"}})),
        "defaults.retry.initial_interval",
        &["invalid duration"],
    );
}

// ---- policies and enums ----

#[test]
fn invalid_retry_policies() {
    let retry = |r: Value| doc(|d| d["steps"][0]["retry"] = r);
    assert_rejected(
        retry(json!({"max_attempts": 0})),
        "steps[0].retry.max_attempts",
        &["at least 1"],
    );
    assert_rejected(
        retry(json!({"max_attempts": 2.5})),
        "steps[0].retry.max_attempts",
        &["expected a non-negative integer"],
    );
    assert_rejected(
        retry(json!({"backoff_coefficient": 0.5})),
        "steps[0].retry.backoff_coefficient",
        &["at least 1.0"],
    );
    assert_rejected(
        retry(json!({"jitter": 1.5})),
        "steps[0].retry.jitter",
        &["between 0.0 and 1.0"],
    );
    assert_rejected(
        retry(json!({"non_retryable": ["ok", 3]})),
        "steps[0].retry.non_retryable[1]",
        &["expected a string"],
    );
    assert_rejected(
        retry(json!("always")),
        "steps[0].retry",
        &["expected a retry policy object"],
    );
}

#[test]
fn max_interval_below_initial_interval_blames_the_field_that_was_set() {
    assert_rejected(
        doc(|d| {
            d["defaults"] = json!({"retry": {"initial_interval": "10s", "max_interval": "5s"}})
        }),
        "defaults.retry.max_interval",
        &["max_interval (5s) must be at least initial_interval (10s)"],
    );
    // The step inherits max_interval 1m and raises only initial_interval above it.
    assert_rejected(
        doc(|d| d["steps"][0]["retry"] = json!({"initial_interval": "2m"})),
        "steps[0].retry.initial_interval",
        &["max_interval (1m)", "initial_interval (2m)"],
    );
}

#[test]
fn invalid_enums() {
    assert_rejected(
        doc(|d| d["steps"][0]["on_failure"] = json!("retry")),
        "steps[0].on_failure",
        &[
            "unknown value \"retry\"",
            "compensate | park | fail | continue",
        ],
    );
    assert_rejected(
        doc(|d| d["defaults"] = json!({"on_failure": true})),
        "defaults.on_failure",
        &["expected one of compensate"],
    );
    assert_rejected(
        with_step(
            json!({"id": "p", "parallel": {"join": "some", "branches": [{"steps": [{"id": "a", "task": "w"}]}]}}),
        ),
        "steps[0].parallel.join",
        &["all | any"],
    );
}

#[test]
fn foreach_and_child_numbers_must_be_positive() {
    assert_rejected(
        with_step(
            json!({"id": "f", "foreach": {"items": ".x", "max_concurrency": 0, "steps": [{"id": "i", "task": "w"}]}}),
        ),
        "steps[0].foreach.max_concurrency",
        &["at least 1"],
    );
    assert_rejected(
        with_step(json!({"id": "c", "workflow": {"name": "x", "version": 0}})),
        "steps[0].workflow.version",
        &["at least 1"],
    );
}

// ---- wrong types, names and empty lists ----

#[test]
fn wrong_types() {
    assert_rejected(
        doc(|d| d["steps"] = json!({"a": {}})),
        "steps",
        &["expected an array", "object"],
    );
    assert_rejected(
        doc(|d| d["description"] = json!(3)),
        "description",
        &["expected a string"],
    );
    assert_rejected(
        doc(|d| d["compensations"] = json!([])),
        "compensations",
        &["expected an object"],
    );
    assert_rejected(
        doc(|d| d["steps"][0]["task"] = json!(null)),
        "steps[0].task",
        &["found null"],
    );
    assert_rejected(
        doc(|d| d["input_schema"] = json!("object")),
        "input_schema",
        &["expected a JSON Schema"],
    );
}

#[test]
fn names_are_required_and_well_formed() {
    assert_rejected(
        doc(|d| {
            d.as_object_mut().unwrap().remove("name");
        }),
        "",
        &["missing required field `name`"],
    );
    assert_rejected(
        doc(|d| d["name"] = json!("order fulfilment")),
        "name",
        &["' '", "letters, digits"],
    );
    assert_rejected(
        doc(|d| d["steps"][0]["queue"] = json!("a/b")),
        "steps[0].queue",
        &["queue `a/b`"],
    );
    assert_rejected(
        doc(|d| d["compensations"] = json!({"undo": {"queue": "q"}})),
        "compensations.undo",
        &["missing required field `task`"],
    );
}

#[test]
fn step_lists_that_may_not_be_empty() {
    assert_rejected(
        doc(|d| d["steps"] = json!([])),
        "steps",
        &["at least one step"],
    );
    assert_rejected(
        doc(|d| {
            d.as_object_mut().unwrap().remove("steps");
        }),
        "",
        &["missing required field `steps`"],
    );
    assert_rejected(
        with_step(json!({"id": "s", "switch": {"cases": []}})),
        "steps[0].switch.cases",
        &["at least one case"],
    );
    assert_rejected(
        with_step(json!({"id": "p", "parallel": {"branches": []}})),
        "steps[0].parallel.branches",
        &["at least one branch"],
    );
    assert_rejected(
        with_step(json!({"id": "p", "parallel": {"branches": [{"steps": []}]}})),
        "steps[0].parallel.branches[0].steps",
        &["a branch needs at least one step"],
    );
    assert_rejected(
        with_step(json!({"id": "f", "foreach": {"items": ".x", "steps": []}})),
        "steps[0].foreach.steps",
        &["at least one step"],
    );
}

#[test]
fn input_schema_must_compile() {
    assert_rejected(
        doc(|d| d["input_schema"] = json!({"type": "objekt"})),
        "input_schema",
        &["invalid JSON Schema at /type", "objekt"],
    );
}

// ---- ad-hoc steps ----

fn registered() -> Definition {
    parse(doc(|d| {
        d["defaults"] =
            json!({"retry": {"max_attempts": 7}, "timeout": "9s", "on_failure": "park"});
        d["compensations"] = json!({"undo": {"task": "undo"}});
        d["steps"] = json!([
            {"id": "a", "task": "w"},
            {"id": "p", "parallel": {"branches": [{"steps": [{"id": "b", "task": "w"}]}]}}
        ]);
    }))
}

#[test]
fn added_step_uses_the_definition_defaults() {
    let step = registered()
        .parse_step(
            &json!({"id": "extra", "task": "audit", "compensate": "undo", "retry": {"jitter": 0.1}}),
            &[],
        )
        .unwrap();
    let t = task(&step);
    assert_eq!(t.queue, "audit");
    assert_eq!(t.retry.max_attempts, 7);
    assert_eq!(t.retry.jitter, 0.1);
    assert_eq!(t.timeout, Duration::from_secs(9));
    assert_eq!(step.on_failure, OnFailure::Park);
}

#[test]
fn added_step_must_be_a_task() {
    let err = registered()
        .parse_step(&json!({"id": "z", "wait": "1s"}), &[])
        .unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.message.contains("must be a task step"), "{err}");
}

#[test]
fn added_step_id_must_be_new() {
    let def = registered();
    let err = def
        .parse_step(&json!({"id": "b", "task": "w"}), &[])
        .unwrap_err();
    assert_eq!(err.path, "id");
    assert!(
        err.message
            .contains("already used at steps[1].parallel.branches[0].steps[0].id"),
        "{err}"
    );
    let err = def
        .parse_step(&json!({"id": "c", "task": "w"}), &["c".to_string()])
        .unwrap_err();
    assert!(err.message.contains("added earlier"), "{err}");
}

#[test]
fn added_step_id_must_not_be_a_fallback_id() {
    // A step found by id would otherwise resolve to the fallback (its retry, SLA and
    // compensation would be the fallback's).
    let def = parse(doc(|d| {
        d["steps"] = json!([{"id": "a", "http": {"url": "https://example.com"}, "fallback": "fb"}]);
        d["fallbacks"] = json!([{"id": "fb", "task": "w"}]);
    }));
    let err = def
        .parse_step(&json!({"id": "fb", "task": "w"}), &[])
        .unwrap_err();
    assert_eq!(err.path, "id");
    assert!(
        err.message.contains("already used at fallbacks[0].id"),
        "{err}"
    );
}

#[test]
fn added_step_is_validated_like_a_definition_step() {
    let def = registered();
    let err = def
        .parse_step(&json!({"id": "c", "task": "w", "compensate": "nope"}), &[])
        .unwrap_err();
    assert_eq!(err.path, "compensate");
    let err = def
        .parse_step(&json!({"id": "c", "task": "w", "colour": 1}), &[])
        .unwrap_err();
    assert_eq!(err.path, "colour");
    let err = def
        .parse_step(
            &json!({"id": "c", "task": "w", "retry": {"jitter": 2}}),
            &[],
        )
        .unwrap_err();
    assert_eq!(err.path, "retry.jitter");
}
