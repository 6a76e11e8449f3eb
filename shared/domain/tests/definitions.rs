//! The published examples and JSON Schema under `schemas/` against the definition parser:
//! the examples compile into the expected model, and the schema agrees with the parser on
//! what is a valid document.

use std::path::PathBuf;
use std::time::Duration;

use distorch_domain::definition::{
    Definition, Join, OnFailure, RetryPolicy, SourceFormat, Step, StepKind, TaskSpec,
};
use serde_json::{Value, json};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn read(path: &str) -> String {
    let path = schemas_dir().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn order_fulfilment() -> Definition {
    Definition::from_text(
        &read("examples/order-fulfilment.yaml"),
        SourceFormat::Yaml,
        1,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn invoicing() -> Definition {
    Definition::from_text(&read("examples/invoicing.json"), SourceFormat::Json, 3)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&read("definition.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("definition.schema.json is a valid JSON Schema")
}

fn task(step: &Step) -> &TaskSpec {
    match &step.kind {
        StepKind::Task(t) => t,
        other => panic!("{} is not a task: {other:?}", step.id),
    }
}

fn defaults_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_interval: Duration::from_secs(1),
        backoff_coefficient: 2.0,
        max_interval: Duration::from_secs(60),
        jitter: 0.2,
        non_retryable: vec!["card_declined".into()],
    }
}

#[test]
fn order_fulfilment_compiles_with_defaults_resolved() {
    let def = order_fulfilment();
    assert_eq!(def.name, "order-fulfilment");
    assert_eq!(def.version, 1);
    assert_eq!(
        def.description.as_deref(),
        Some("reserve stock, charge, ship; undo on failure")
    );
    let ids: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "reserve", "charge", "route", "notify", "pack", "ship", "cooldown", "invoice"
        ]
    );
    // Every step inherits `defaults.on_failure`.
    for id in ["reserve", "manual-check", "sms", "pack-item", "invoice"] {
        assert_eq!(
            def.step(id).unwrap().on_failure,
            OnFailure::Compensate,
            "{id}"
        );
    }

    let reserve = task(&def.steps[0]);
    assert_eq!(reserve.task, "reserve-stock");
    assert_eq!(reserve.queue, "inventory");
    assert_eq!(reserve.retry, defaults_retry());
    assert_eq!(reserve.timeout, Duration::from_secs(30));
    assert_eq!(reserve.heartbeat_timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        reserve.schedule_to_start_timeout,
        Some(Duration::from_secs(60))
    );
    assert_eq!(reserve.compensate.as_deref(), Some("release-stock"));
    let ctx = json!({"input": {"order_id": "o-1", "items": [1]}});
    assert_eq!(
        reserve.input.as_ref().unwrap().eval(&ctx).unwrap(),
        json!({"order": "o-1", "items": [1]})
    );

    let charge = task(&def.steps[1]);
    assert_eq!(
        charge.retry,
        RetryPolicy {
            max_attempts: 3,
            ..defaults_retry()
        },
        "a partial retry is merged over defaults.retry"
    );
    assert_eq!(charge.heartbeat_timeout, None);

    let StepKind::Switch { cases, default } = &def.steps[2].kind else {
        panic!("route")
    };
    assert_eq!(cases.len(), 1);
    assert!(default.is_empty());
    assert!(
        cases[0]
            .0
            .eval_bool(&json!({"steps": {"charge": {"output": {"risk": "high"}}}}))
            .unwrap()
    );
    assert_eq!(task(&cases[0].1[0]).queue, "risk");

    let StepKind::Parallel { join, branches } = &def.steps[3].kind else {
        panic!("notify")
    };
    assert_eq!(*join, Join::All);
    assert_eq!(branches.len(), 2);
    assert!(branches[0][0].when.is_none());
    assert!(
        !branches[1][0]
            .when
            .as_ref()
            .unwrap()
            .eval_bool(&json!({"input": {}}))
            .unwrap()
    );

    let StepKind::Foreach {
        items,
        max_concurrency,
        steps,
    } = &def.steps[4].kind
    else {
        panic!("pack")
    };
    assert_eq!(items.source(), ".input.items");
    assert_eq!(*max_concurrency, 4);
    assert_eq!(task(&steps[0]).queue, "warehouse");

    assert_eq!(task(&def.steps[5]).queue, "shipping");
    assert!(matches!(def.steps[6].kind, StepKind::Wait(d) if d == Duration::from_secs(5)));
    let StepKind::Workflow {
        name,
        version,
        input,
    } = &def.steps[7].kind
    else {
        panic!("invoice")
    };
    assert_eq!((name.as_str(), *version), ("invoicing", None));
    assert!(input.is_some());

    let release = &def.compensations["release-stock"];
    assert_eq!(
        (release.task.as_str(), release.queue.as_str()),
        ("release-stock", "inventory")
    );
    assert_eq!(release.retry, defaults_retry());
    assert_eq!(release.timeout, Duration::from_secs(30));
    assert_eq!(def.compensations["refund"].queue, "payments");

    let schema = def.input_schema.as_ref().unwrap();
    assert!(
        schema
            .validate(&json!({"order_id": "o-1", "amount": 3}))
            .is_ok()
    );
    assert!(
        schema
            .validate(&json!({"order_id": "o-1"}))
            .unwrap_err()
            .contains("amount")
    );
    assert_eq!(
        def.output.as_ref().unwrap()
            .eval(&json!({"input": {"order_id": "o-1"}, "steps": {"ship": {"output": {"tracking": "T"}}}}))
            .unwrap(),
        json!({"order": "o-1", "tracking": "T"})
    );
}

#[test]
fn yaml_source_is_stored_as_normalised_json() {
    let def = order_fulfilment();
    assert_eq!(def.source["defaults"]["retry"]["max_attempts"], 5);
    assert_eq!(def.source["steps"][0]["id"], "reserve");
    let again = Definition::from_source(&def.source, 2).unwrap();
    assert_eq!(again.source, def.source);
}

#[test]
fn invoicing_uses_builtin_defaults() {
    let def = invoicing();
    assert_eq!(def.version, 3);
    let render = task(&def.steps[0]);
    assert_eq!(
        render.queue, "render-invoice",
        "queue defaults to the task type"
    );
    assert_eq!(render.timeout, Duration::from_secs(120));
    assert_eq!(render.retry, RetryPolicy::default());
    assert_eq!(
        def.steps[0].on_failure,
        OnFailure::Fail,
        "no compensations: fail"
    );
    assert_eq!(def.steps[1].on_failure, OnFailure::Continue);
    assert_eq!(
        task(&def.steps[1]).timeout,
        distorch_domain::definition::DEFAULT_TIMEOUT
    );
}

#[test]
fn examples_validate_against_the_schema() {
    let schema = schema();
    for def in [order_fulfilment(), invoicing()] {
        let errors: Vec<String> = schema
            .iter_errors(&def.source)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", def.name);
    }
}

#[test]
fn schema_rejects_what_the_parser_rejects() {
    let schema = schema();
    let valid = json!({"name": "t", "steps": [{"id": "a", "task": "w"}]});
    assert!(schema.is_valid(&valid));
    let invalid = [
        json!({"name": "t", "steps": [{"id": "a", "task": "w"}], "colour": 1}),
        json!({"name": "t", "steps": []}),
        json!({"name": "t b", "steps": [{"id": "a", "task": "w"}]}),
        json!({"name": "t", "steps": [{"id": "a.b", "task": "w"}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "wait": "1s"}]}),
        json!({"name": "t", "steps": [{"id": "a"}]}),
        json!({"name": "t", "steps": [{"id": "a", "wait": "1s", "queue": "q"}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "on_failure": "retry"}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "timeout": 30}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "retry": {"jitter": 2}}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "retry": {"max_attempts": 0}}]}),
        json!({"name": "t", "steps": [{"id": "p", "parallel": {"join": "some", "branches": [{"steps": [{"id": "a", "task": "w"}]}]}}]}),
        json!({"name": "t", "steps": [{"id": "f", "foreach": {"items": ".x", "max_concurrency": 0, "steps": [{"id": "a", "task": "w"}]}}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w"}], "compensations": {"u": {"queue": "q"}}}),
    ];
    for doc in invalid {
        assert!(
            Definition::from_source(&doc, 1).is_err(),
            "parser accepted {doc}"
        );
        assert!(!schema.is_valid(&doc), "schema accepted {doc}");
    }
}
