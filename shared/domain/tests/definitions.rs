//! The published examples and JSON Schema under `schemas/` against the definition parser:
//! the examples compile into the expected model, and the schema agrees with the parser on
//! what is a valid document.

use std::path::PathBuf;
use std::time::Duration;

use distorch_domain::definition::{
    Assignment, BreakerSpec, Definition, Join, OnFailure, RetryPolicy, Sla, SourceFormat, Step,
    StepKind, TaskSpec,
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

fn refund_approval() -> Definition {
    Definition::from_text(
        &read("examples/refund-approval.yaml"),
        SourceFormat::Yaml,
        1,
    )
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
    for def in [order_fulfilment(), invoicing(), refund_approval()] {
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

#[test]
fn refund_approval_compiles_the_new_step_kinds() {
    let def = refund_approval();
    let ids: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["approve", "decide", "confirmation", "payout"]);
    assert_eq!(
        def.sla,
        Some(Sla {
            duration: Duration::from_secs(2 * 86_400),
            warn_at: Some(0.75),
        })
    );
    assert_eq!(
        def.sla.as_ref().unwrap().warn_after(),
        Some(Duration::from_secs(36 * 3600))
    );

    let approve = &def.steps[0];
    assert_eq!(
        approve.sla,
        Some(Sla {
            duration: Duration::from_secs(4 * 3600),
            warn_at: None,
        })
    );
    let StepKind::Human(human) = &approve.kind else {
        panic!("approve is not a human step: {:?}", approve.kind)
    };
    assert_eq!(
        human
            .title
            .render(&json!({"input": {"amount": 12.5, "currency": "EUR", "order_id": "o-1"}}))
            .unwrap(),
        "Refund 12.5 EUR for order o-1"
    );
    assert_eq!(
        human.assign,
        Assignment {
            assignee: None,
            group: Some("support-agents".into()),
        }
    );
    assert_eq!(human.timeout, Some(Duration::from_secs(86_400)));
    let (form, form_source) = human.form.as_ref().unwrap();
    assert_eq!(form_source["required"], json!(["approved"]));
    assert!(form.validate(&json!({"approved": true})).is_ok());
    assert!(form.validate(&json!({"reason": "no"})).is_err());
    assert_eq!(
        human.escalate,
        Some((
            Duration::from_secs(2 * 3600),
            Assignment {
                assignee: Some("duty-lead".into()),
                group: Some("support-leads".into()),
            }
        ))
    );

    let confirmation = &def.steps[2];
    assert_eq!(confirmation.sla.as_ref().unwrap().warn_at, Some(0.5));
    let StepKind::Signal { name, timeout } = &confirmation.kind else {
        panic!("confirmation is not a signal step")
    };
    assert_eq!(
        (name.as_str(), *timeout),
        ("customer-confirmed", Some(Duration::from_secs(2 * 86_400)))
    );

    let payout = &def.steps[3];
    assert_eq!(payout.on_failure, OnFailure::Park);
    assert_eq!(payout.sla.as_ref().unwrap().warn_at, Some(0.8));
    let spec = task(payout);
    assert_eq!(spec.fallback.as_deref(), Some("queue-refund"));
    assert_eq!(spec.compensate.as_deref(), Some("reverse-refund"));
    assert_eq!(spec.timeout, Duration::from_secs(15));
    assert_eq!(
        spec.retry,
        RetryPolicy {
            max_attempts: 6,
            initial_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(30),
            ..RetryPolicy::default()
        }
    );
    let http = spec.http.as_ref().expect("payout is an http step");
    assert_eq!(
        http.method, "POST",
        "the method is normalised to upper case"
    );
    assert_eq!(http.url.source(), "https://payments.example.com/v1/refunds");
    let headers: Vec<&str> = http.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(headers, ["Idempotency-Key", "X-Order"]);
    assert_eq!(
        http.headers[0]
            .1
            .render(&json!({"task_id": "t-9"}))
            .unwrap(),
        "t-9"
    );
    assert_eq!(http.success, [200, 201, 202]);
    assert_eq!(http.timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        http.breaker,
        Some(BreakerSpec {
            consecutive_failures: Some(5),
            failure_ratio: Some(0.5),
            min_calls: Some(10),
            window_ms: Some(60_000),
            cooldown_ms: Some(30_000),
        })
    );

    assert_eq!(def.fallbacks.len(), 1);
    let fallback = def.step("queue-refund").expect("fallbacks are found by id");
    let queued = task(fallback);
    assert_eq!(
        (queued.task.as_str(), queued.queue.as_str()),
        ("refund-later", "payments")
    );
    assert!(queued.http.is_none());
    assert_eq!(
        queued.timeout,
        Duration::from_secs(20),
        "fallbacks inherit defaults"
    );
}

/// Documents using the new features that both the parser and the schema accept.
#[test]
fn schema_accepts_the_new_features_the_parser_accepts() {
    let schema = schema();
    let valid = [
        json!({"name": "t", "sla": "10m", "steps": [{"id": "a", "task": "w", "sla": {"duration": "1m", "warn_at": " 99.5 %"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "wait": "1s", "sla": {"duration": "1m", "warn_at": ".5%"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "human": {"title": "t", "assignee": "ada"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "http": {"url": "{.input.base}/x", "method": "Delete", "success": []}}]}),
        json!({"name": "t", "fallbacks": [], "steps": [{"id": "a", "signal": {"name": "go"}}]}),
    ];
    for doc in valid {
        if let Err(e) = Definition::from_source(&doc, 1) {
            panic!("parser rejected {doc}: {e}");
        }
        let errors: Vec<String> = schema
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "schema rejected {doc}: {errors:?}");
    }
}

#[test]
fn schema_rejects_what_the_parser_rejects_in_new_features() {
    let schema = schema();
    let http = |http: Value| json!({"name": "t", "steps": [{"id": "a", "http": http}]});
    let human = |human: Value| json!({"name": "t", "steps": [{"id": "a", "human": human}]});
    let sla = |sla: Value| json!({"name": "t", "sla": sla, "steps": [{"id": "a", "task": "w"}]});
    let invalid = [
        // human
        human(json!({"title": "approve"})),
        human(json!({"title": "approve", "assignee": " "})),
        human(json!({"assignee": "ada"})),
        human(json!({"title": "x", "group": "g", "escalate": {"after": "1h", "to": {}}})),
        human(json!({"title": "x", "group": "g", "escalate": {"to": {"group": "h"}}})),
        human(json!({"title": "x", "group": "g", "form": "object"})),
        human(json!({"title": "x", "group": "g", "priority": 1})),
        json!({"name": "t", "steps": [{"id": "a", "human": {"title": "x", "group": "g"}, "retry": {}}]}),
        // signal
        json!({"name": "t", "steps": [{"id": "a", "signal": {"timeout": "1m"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "signal": {"name": "a b"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "signal": {"name": "go"}, "timeout": "1m"}]}),
        // sla
        sla(json!({"duration": "1m", "warn_at": "150%"})),
        sla(json!({"duration": "1m", "warn_at": "0%"})),
        sla(json!({"duration": "1m", "warn_at": "100%"})),
        sla(json!({"duration": "1m", "warn_at": "80"})),
        sla(json!({"duration": "1m", "warn_at": 1})),
        sla(json!({"duration": "1m", "warn_at": 0})),
        sla(json!({"warn_at": "80%"})),
        sla(json!(600)),
        // http
        http(json!({"url": "payments.example.com/refunds"})),
        http(json!({"url": "ftp://example.com/x"})),
        http(json!({"url": "https://example.com", "method": "FETCH"})),
        http(json!({"method": "GET"})),
        http(json!({"url": "https://example.com", "success": [99]})),
        http(json!({"url": "https://example.com", "success": [600]})),
        http(json!({"url": "https://example.com", "headers": {"X-N": 1}})),
        http(json!({"url": "https://example.com", "breaker": {"failure_ratio": 0}})),
        http(json!({"url": "https://example.com", "breaker": {"failure_ratio": 1.5}})),
        http(json!({"url": "https://example.com", "breaker": {"consecutive_failures": 0}})),
        http(json!({"url": "https://example.com", "breaker": {"half_open": 1}})),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "http": {"url": "https://example.com"}}]}),
        json!({"name": "t", "steps": [{"id": "a", "http": {"url": "https://example.com"}, "queue": "q"}]}),
        json!({"name": "t", "steps": [{"id": "a", "http": {"url": "https://example.com"}, "heartbeat_timeout": "1m"}]}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w", "fallback": "b"}], "fallbacks": [{"id": "b", "task": "v"}]}),
        // fallbacks
        json!({"name": "t", "steps": [{"id": "a", "task": "w"}], "fallbacks": {"id": "b", "task": "v"}}),
        json!({"name": "t", "steps": [{"id": "a", "task": "w"}], "fallbacks": [{"id": "b"}]}),
    ];
    for doc in invalid {
        assert!(
            Definition::from_source(&doc, 1).is_err(),
            "parser accepted {doc}"
        );
        assert!(!schema.is_valid(&doc), "schema accepted {doc}");
    }
}

/// Rules the schema cannot express: the parser alone rejects these.
#[test]
fn parser_rejects_unknown_fallbacks_and_bad_templates() {
    let fallback = |fallback: &str, fallbacks: Value| {
        json!({"name": "t", "fallbacks": fallbacks, "steps": [
            {"id": "a", "http": {"url": "https://example.com"}, "fallback": fallback}
        ]})
    };
    let cases = [
        (
            fallback("nope", json!([{"id": "b", "task": "v"}])),
            "steps[0].fallback",
            "unknown fallback `nope`; defined in `fallbacks`: b",
        ),
        (
            fallback("b", json!([])),
            "steps[0].fallback",
            "the definition has no `fallbacks`",
        ),
        (
            // A fallback is a top-level `fallbacks` step, not any step.
            json!({"name": "t", "steps": [
                {"id": "b", "task": "v"},
                {"id": "a", "http": {"url": "https://example.com"}, "fallback": "b"}
            ]}),
            "steps[1].fallback",
            "the definition has no `fallbacks`",
        ),
        (
            json!({"name": "t", "steps": [{"id": "a", "task": "w"}], "fallbacks": [{"id": "a", "task": "v"}]}),
            "steps[0].id",
            "duplicate step id `a`",
        ),
        (
            json!({"name": "t", "steps": [{"id": "a", "human": {"title": "x {.input", "group": "g"}}]}),
            "steps[0].human.title",
            "unclosed",
        ),
        (
            json!({"name": "t", "steps": [{"id": "a", "http": {"url": "{.input.base | (}"}}]}),
            "steps[0].http.url",
            "placeholder",
        ),
    ];
    let schema = schema();
    for (doc, path, message) in cases {
        let err = Definition::from_source(&doc, 1).expect_err(&doc.to_string());
        assert_eq!(err.path, path, "{doc}: {err}");
        assert!(err.message.contains(message), "{doc}: {err}");
        if path.ends_with("fallback") || path.ends_with(".id") {
            assert!(
                schema.is_valid(&doc),
                "only the parser checks references: {doc}"
            );
        }
    }
}
