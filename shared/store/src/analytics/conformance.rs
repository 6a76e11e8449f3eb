//! The conformance suite every [`Analytics`] backend runs (`tests/analytics_<backend>.rs`).
//!
//! Each check uses a fresh definition name and its own hour-long window at a random point
//! in time, so checks can share one store and run in any order; the figures they assert are
//! computed from the events the check itself recorded. They panic on a violation.

use super::{Analytics, CostRates, Window};
use distorch_domain::command::{ErrorInfo, TaskMetrics};
use distorch_domain::definition::Assignment;
use distorch_domain::event::{Event, EventEnvelope, TaskKind};
use distorch_domain::{TaskId, WorkflowId};
use serde_json::{Value, json};
use uuid::Uuid;

/// Runs every check against `analytics`.
pub async fn run_all(analytics: &dyn Analytics) {
    performance_per_definition_and_step(analytics).await;
    bottlenecks_split_where_time_went(analytics).await;
    cost_prices_usage_per_tenant(analytics).await;
    windows_include_from_and_exclude_to(analytics).await;
    replayed_batches_change_no_figure(analytics).await;
    reset_empties_and_replay_rebuilds(analytics).await;
}

const HOUR_MS: i64 = 3_600_000;
const GIB: u64 = 1 << 30;

/// The start of a random hour between 2023 and about 2045: a window no other check uses.
pub fn fresh_window() -> Window {
    let hours = (Uuid::new_v4().as_u128() % 190_000) as i64;
    let from_ms = 1_700_000_000_000 / HOUR_MS * HOUR_MS + hours * HOUR_MS;
    Window {
        from_ms,
        to_ms: from_ms + HOUR_MS,
    }
}

/// A name no other check uses: `prefix` and a random suffix (for definitions, tenants and queues).
pub fn fresh_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// Builds one run's events with consecutive sequence numbers at the times given.
pub struct Run {
    /// The run's id, random.
    pub id: WorkflowId,
    /// The events built so far, in order; `seq` starts at 1.
    pub events: Vec<EventEnvelope>,
    tasks: u32,
}

impl Run {
    /// A new run of `definition` (version 1), started at `at_ms` with `input`.
    pub fn start(definition: &str, input: Value, at_ms: i64) -> Self {
        let mut run = Self {
            id: WorkflowId(Uuid::new_v4()),
            events: Vec::new(),
            tasks: 0,
        };
        run.push(
            at_ms,
            Event::WorkflowStarted {
                definition: definition.into(),
                version: 1,
                input,
                idempotency_key: None,
                parent: None,
            },
        );
        run
    }

    /// Appends `event` at `at_ms` with the next sequence number.
    pub fn push(&mut self, at_ms: i64, event: Event) {
        self.events.push(EventEnvelope {
            workflow_id: self.id,
            seq: self.events.len() as u64 + 1,
            at_ms,
            command_id: None,
            v: 1,
            event,
        });
    }

    /// Schedules attempt 1 of a new worker task for `step_id`.
    pub fn schedule(&mut self, at_ms: i64, step_id: &str, task: &str, queue: &str) -> TaskId {
        self.tasks += 1;
        let id = TaskId::new(self.id, self.tasks);
        self.schedule_attempt(at_ms, &id, 1, step_id, task, queue);
        id
    }

    /// Schedules attempt `attempt` of the worker task `task_id` for `step_id` (an automatic or
    /// operator retry after attempt 1).
    pub fn schedule_attempt(
        &mut self,
        at_ms: i64,
        task_id: &TaskId,
        attempt: u32,
        step_id: &str,
        task: &str,
        queue: &str,
    ) {
        self.push(
            at_ms,
            Event::TaskScheduled {
                task_id: task_id.clone(),
                step_key: step_id.into(),
                step_id: step_id.into(),
                kind: TaskKind::Step,
                task: task.into(),
                queue: queue.into(),
                attempt,
                max_attempts: 3,
                input: json!({}),
                checkpoint: None,
                timeout_ms: 60_000,
                heartbeat_timeout_ms: None,
                schedule_to_start_timeout_ms: None,
                http: None,
            },
        );
    }

    /// Attempt `attempt` of `task_id` is taken by `worker-1`.
    pub fn begin(&mut self, at_ms: i64, task_id: &TaskId, attempt: u32) {
        let worker_id = "worker-1".into();
        let task_id = task_id.clone();
        self.push(
            at_ms,
            Event::TaskStarted {
                task_id,
                attempt,
                worker_id,
                via: None,
            },
        );
    }

    /// Attempt `attempt` of `task_id` completes, reporting `metrics` if any.
    pub fn complete(
        &mut self,
        at_ms: i64,
        task_id: &TaskId,
        attempt: u32,
        metrics: Option<TaskMetrics>,
    ) {
        let task_id = task_id.clone();
        self.push(
            at_ms,
            Event::TaskCompleted {
                task_id,
                attempt,
                output: json!({}),
                metrics,
                by: None,
            },
        );
    }

    /// Attempt `attempt` of `task_id` fails with error type `kind`; with `retry_at_ms` the engine
    /// retries it then.
    pub fn fail(
        &mut self,
        at_ms: i64,
        task_id: &TaskId,
        attempt: u32,
        kind: &str,
        retry_at_ms: Option<i64>,
    ) {
        let task_id = task_id.clone();
        self.push(
            at_ms,
            Event::TaskFailed {
                task_id,
                attempt,
                error: ErrorInfo::new(kind, "failed"),
                retry_at_ms,
                metrics: None,
            },
        );
    }

    /// Attempt `attempt` of `task_id` is deferred (circuit breaker open) until `retry_at_ms`.
    pub fn defer(&mut self, at_ms: i64, task_id: &TaskId, attempt: u32, retry_at_ms: i64) {
        let task_id = task_id.clone();
        self.push(
            at_ms,
            Event::TaskDeferred {
                task_id,
                attempt,
                retry_at_ms,
                reason: "breaker open".into(),
            },
        );
    }

    /// Creates a human task for `step_id`.
    pub fn human(&mut self, at_ms: i64, step_id: &str) -> TaskId {
        self.tasks += 1;
        let id = TaskId::new(self.id, self.tasks);
        self.push(
            at_ms,
            Event::HumanTaskCreated {
                task_id: id.clone(),
                step_key: step_id.into(),
                step_id: step_id.into(),
                title: "Review".into(),
                assign: Assignment {
                    assignee: Some("ann".into()),
                    group: None,
                },
                form: None,
                timeout_ms: None,
                escalate_after_ms: None,
                escalate_to: None,
            },
        );
        id
    }

    /// `ann` (the assignee of [`Run::human`]) claims the human task `task_id`.
    pub fn claim(&mut self, at_ms: i64, task_id: &TaskId) {
        let task_id = task_id.clone();
        self.push(
            at_ms,
            Event::HumanTaskClaimed {
                task_id,
                by: "ann".into(),
            },
        );
    }

    /// The run completes.
    pub fn completed(&mut self, at_ms: i64) {
        self.push(
            at_ms,
            Event::WorkflowCompleted {
                output: json!({}),
                parent: None,
            },
        );
    }

    /// The run fails.
    pub fn failed(&mut self, at_ms: i64) {
        self.push(
            at_ms,
            Event::WorkflowFailed {
                error: ErrorInfo::new("step_failed", "ship failed"),
                parent: None,
            },
        );
    }
}

fn metrics(cpu_ms: f64, peak_memory_bytes: u64) -> Option<TaskMetrics> {
    Some(TaskMetrics {
        cpu_ms: Some(cpu_ms),
        peak_memory_bytes: Some(peak_memory_bytes),
        ..TaskMetrics::default()
    })
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-9 * expected.abs().max(1.0),
        "{what}: expected {expected}, got {actual}"
    );
}

fn close_opt(actual: Option<f64>, expected: f64, what: &str) {
    close(
        actual.unwrap_or_else(|| panic!("{what}: missing")),
        expected,
        what,
    );
}

/// Three ended runs and one in flight; a step with a retried attempt, a step that fails.
/// Returns the runs' events.
fn performance_scenario(definition: &str, t: i64) -> Vec<EventEnvelope> {
    // run 1: charge waits 1 s, runs 100 ms; the run takes 2 s.
    let mut r1 = Run::start(definition, json!({}), t);
    let c = r1.schedule(t, "charge", "payments.charge", "payments");
    r1.begin(t + 1000, &c, 1);
    r1.complete(t + 1100, &c, 1, None);
    r1.completed(t + 2000);
    // run 2: charge fails after 200 ms (backoff to +1700), attempt 2 runs 300 ms; 3 s.
    let mut r2 = Run::start(definition, json!({}), t);
    let c = r2.schedule(t, "charge", "payments.charge", "payments");
    r2.begin(t + 1000, &c, 1);
    r2.fail(t + 1200, &c, 1, "gateway_timeout", Some(t + 1700));
    r2.schedule_attempt(t + 1700, &c, 2, "charge", "payments.charge", "payments");
    r2.begin(t + 1800, &c, 2);
    r2.complete(t + 2100, &c, 2, None);
    r2.completed(t + 3000);
    // run 3: charge runs 400 ms, ship fails for good after 100 ms; the run fails at 4 s.
    let mut r3 = Run::start(definition, json!({}), t);
    let c = r3.schedule(t, "charge", "payments.charge", "payments");
    r3.begin(t + 1000, &c, 1);
    r3.complete(t + 1400, &c, 1, None);
    let s = r3.schedule(t + 1400, "ship", "shipping.ship", "shipping");
    r3.begin(t + 1500, &s, 1);
    r3.fail(t + 1600, &s, 1, "no_stock", None);
    r3.failed(t + 4000);
    // run 4: still waiting for a worker; in no report yet.
    let mut r4 = Run::start(definition, json!({}), t);
    r4.schedule(t, "charge", "payments.charge", "payments");
    [r1, r2, r3, r4]
        .into_iter()
        .flat_map(|r| r.events)
        .collect()
}

/// Per-definition and per-step counts, rates and percentiles; state carried across many
/// small `record` calls (one event each).
pub async fn performance_per_definition_and_step(analytics: &dyn Analytics) {
    let w = fresh_window();
    let def = fresh_name("perf");
    for e in performance_scenario(&def, w.from_ms) {
        analytics.record(&[e]).await.expect("record");
    }
    let p = analytics.performance(w).await.expect("performance");

    assert_eq!(p.definitions.len(), 1, "{p:?}");
    let d = &p.definitions[0];
    assert_eq!(d.definition, def);
    assert_eq!((d.runs, d.completed, d.failed), (3, 2, 1));
    assert_eq!((d.compensated, d.cancelled), (0, 0));
    close(d.failure_rate, 1.0 / 3.0, "failure rate");
    close(d.throughput_per_s, 3.0 / 3600.0, "throughput");
    // Run durations 2000, 3000, 4000 ms.
    close_opt(d.end_to_end_ms.p50, 3000.0, "run p50");
    close_opt(d.end_to_end_ms.p95, 3900.0, "run p95");
    close_opt(d.end_to_end_ms.p99, 3980.0, "run p99");
    // Ended attempts: charge 4 (one retried), ship 1; the waiting one is not counted.
    assert_eq!((d.attempts, d.retries), (5, 1));
    close(d.retry_rate, 0.2, "retry rate");

    let steps: Vec<_> = p.steps.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(steps, ["charge", "ship"]);
    let charge = &p.steps[0];
    assert_eq!(charge.kind, "step");
    assert_eq!(
        (
            charge.attempts,
            charge.completed,
            charge.failed,
            charge.retries
        ),
        (4, 3, 1, 1)
    );
    close(charge.failure_rate, 0.25, "charge failure rate");
    close(charge.retry_rate, 0.25, "charge retry rate");
    close(charge.throughput_per_s, 3.0 / 3600.0, "charge throughput");
    // Attempt run times 100, 200, 300, 400 ms.
    close_opt(charge.run_ms.p50, 250.0, "charge run p50");
    close_opt(charge.run_ms.p95, 385.0, "charge run p95");
    close_opt(charge.run_ms.p99, 397.0, "charge run p99");
    // Tasks from first schedule to last end: 1100, 2100 (retry included), 1400 ms.
    close_opt(charge.end_to_end_ms.p50, 1400.0, "charge e2e p50");
    close_opt(charge.end_to_end_ms.p95, 2030.0, "charge e2e p95");
    close_opt(charge.end_to_end_ms.p99, 2086.0, "charge e2e p99");
    let ship = &p.steps[1];
    assert_eq!((ship.attempts, ship.completed, ship.failed), (1, 0, 1));
    close(ship.failure_rate, 1.0, "ship failure rate");
    close_opt(ship.run_ms.p99, 100.0, "ship run");
    close_opt(ship.end_to_end_ms.p50, 200.0, "ship e2e");
}

/// Queue wait, run time, backoff, breaker wait and human wait, each where it belongs.
pub async fn bottlenecks_split_where_time_went(analytics: &dyn Analytics) {
    let w = fresh_window();
    let t = w.from_ms;
    let def = fresh_name("slow");
    let mut r = Run::start(&def, json!({}), t);
    // fetch: 1 s in the queue, 2 s running.
    let f = r.schedule(t, "fetch", "fetch", "io");
    r.begin(t + 1000, &f, 1);
    r.complete(t + 3000, &f, 1, None);
    // call: deferred by an open breaker for 3 s, then fails (500 ms backoff), then succeeds.
    let c = r.schedule(t + 3000, "call", "http", "");
    r.begin(t + 3100, &c, 1);
    r.defer(t + 3200, &c, 1, t + 6200);
    r.schedule_attempt(t + 6200, &c, 2, "call", "http", "");
    r.begin(t + 6300, &c, 2);
    r.fail(t + 6500, &c, 2, "http.5xx", Some(t + 7000));
    r.schedule_attempt(t + 7000, &c, 3, "call", "http", "");
    r.begin(t + 7000, &c, 3);
    r.complete(t + 7400, &c, 3, None);
    // approve: 10 s with a person (2 s before anyone claimed it).
    let h = r.human(t + 7400, "approve");
    r.claim(t + 9400, &h);
    r.complete(t + 17_400, &h, 1, None);
    r.completed(t + 18_000);
    analytics.record(&r.events).await.expect("record");

    let b = analytics.bottlenecks(w).await.expect("bottlenecks");
    assert_eq!(b.total_ms, 17_400);
    let order: Vec<_> = b.steps.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(order, ["approve", "call", "fetch"], "largest share first");
    let [approve, call, fetch] = &b.steps[..] else {
        panic!("{b:?}")
    };
    assert!(b.steps.iter().all(|s| s.definition == def));
    assert_eq!(approve.kind, "human");
    assert_eq!(
        (approve.human_wait_ms, approve.queue_wait_ms, approve.run_ms),
        (10_000, 0, 0)
    );
    assert_eq!(approve.total_ms, 10_000);
    close(approve.share, 10_000.0 / 17_400.0, "approve share");
    assert_eq!(
        (
            call.queue_wait_ms,
            call.run_ms,
            call.backoff_ms,
            call.breaker_wait_ms
        ),
        (200, 700, 500, 3000)
    );
    assert_eq!((call.total_ms, call.attempts, call.retries), (4400, 2, 1));
    close(call.share, 4400.0 / 17_400.0, "call share");
    assert_eq!(
        (fetch.queue_wait_ms, fetch.run_ms, fetch.total_ms),
        (1000, 2000, 3000)
    );
    assert_eq!(
        (fetch.backoff_ms, fetch.human_wait_ms, fetch.breaker_wait_ms),
        (0, 0, 0)
    );
}

/// CPU and memory-seconds times the rates, plus fixed costs, per tenant from the input.
pub async fn cost_prices_usage_per_tenant(analytics: &dyn Analytics) {
    let w = fresh_window();
    let t = w.from_ms;
    let def = fresh_name("cost");
    let mut r1 = Run::start(&def, json!({"tenant": "acme"}), t);
    let x = r1.schedule(t, "render", "img.render", "gpu");
    r1.begin(t, &x, 1);
    // 1.5 CPU-s; 2 GiB held for 2 s = 4 GiB-s.
    r1.complete(t + 2000, &x, 1, metrics(1500.0, 2 * GIB));
    let h = r1.human(t + 2000, "review");
    r1.complete(t + 3000, &h, 1, None);
    r1.completed(t + 3000);
    let mut r2 = Run::start(&def, json!({"customer": "x"}), t);
    let x = r2.schedule(t, "render", "img.render", "gpu");
    r2.begin(t, &x, 1);
    // 0.5 CPU-s; 1 GiB for 1 s.
    r2.complete(t + 1000, &x, 1, metrics(500.0, GIB));
    r2.completed(t + 1000);
    let events: Vec<_> = r1.events.into_iter().chain(r2.events).collect();
    analytics.record(&events).await.expect("record");

    let rates = CostRates {
        per_cpu_second: 0.01,
        per_gib_second: 0.001,
        per_attempt: 0.0001,
        per_task: [("img.render".to_owned(), 0.05)].into(),
    };
    let cost = analytics.cost(w, &rates).await.expect("cost");
    assert_eq!(cost.rates, rates);
    let keys: Vec<_> = cost
        .rows
        .iter()
        .map(|r| {
            (
                r.step_id.as_str(),
                r.task.as_str(),
                r.queue.as_str(),
                r.tenant.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("render", "img.render", "gpu", "acme"),
            ("render", "img.render", "gpu", "default"),
            ("review", "human", "", "acme"),
        ]
    );
    let [acme, other, review] = &cost.rows[..] else {
        panic!("{cost:?}")
    };
    assert_eq!(acme.attempts, 1);
    close(acme.cpu_seconds, 1.5, "acme cpu s");
    close(acme.gib_seconds, 4.0, "acme GiB s");
    close(acme.cpu_cost, 0.015, "acme cpu cost");
    close(acme.memory_cost, 0.004, "acme memory cost");
    close(acme.fixed_cost, 0.0501, "acme fixed cost");
    close(acme.total, 0.0691, "acme total");
    close(other.cpu_seconds, 0.5, "default cpu s");
    close(other.gib_seconds, 1.0, "default GiB s");
    close(other.total, 0.005 + 0.001 + 0.0501, "default total");
    assert_eq!(review.attempts, 1);
    close(review.total, 0.0001, "review total");
    close(cost.total, 0.0691 + 0.0561 + 0.0001, "total");
}

/// A fact that ends exactly at `from` is in the window; one that ends at `to` is not.
pub async fn windows_include_from_and_exclude_to(analytics: &dyn Analytics) {
    let w = fresh_window();
    let def = fresh_name("edge");
    let mut at_from = Run::start(&def, json!({}), w.from_ms - 500);
    let a = at_from.schedule(w.from_ms - 500, "edge", "edge", "q");
    at_from.begin(w.from_ms - 100, &a, 1);
    at_from.complete(w.from_ms, &a, 1, None);
    at_from.completed(w.from_ms);
    let mut at_to = Run::start(&def, json!({}), w.to_ms - 500);
    let b = at_to.schedule(w.to_ms - 500, "edge", "edge", "q");
    at_to.begin(w.to_ms - 100, &b, 1);
    at_to.complete(w.to_ms, &b, 1, None);
    at_to.completed(w.to_ms);
    let events: Vec<_> = at_from.events.into_iter().chain(at_to.events).collect();
    analytics.record(&events).await.expect("record");

    let p = analytics.performance(w).await.expect("performance");
    assert_eq!(p.definitions.len(), 1, "{p:?}");
    assert_eq!((p.definitions[0].runs, p.steps[0].attempts), (1, 1));
    close_opt(
        p.definitions[0].end_to_end_ms.p50,
        500.0,
        "the run ending at `from`",
    );
    let b = analytics.bottlenecks(w).await.expect("bottlenecks");
    assert_eq!(b.total_ms, 500);
    let c = analytics
        .cost(w, &CostRates::default())
        .await
        .expect("cost");
    assert_eq!(c.rows.len(), 1);
    assert_eq!(c.rows[0].attempts, 1);
}

/// Recording the same events again, in other batch boundaries, changes no figure.
pub async fn replayed_batches_change_no_figure(analytics: &dyn Analytics) {
    let w = fresh_window();
    let def = fresh_name("replay");
    let events = performance_scenario(&def, w.from_ms);
    analytics.record(&events).await.expect("record");
    let rates = CostRates {
        per_cpu_second: 1.0,
        per_attempt: 1.0,
        ..CostRates::default()
    };
    let before = (
        analytics.performance(w).await.expect("performance"),
        analytics.bottlenecks(w).await.expect("bottlenecks"),
        analytics.cost(w, &rates).await.expect("cost"),
    );
    assert_eq!(before.0.definitions[0].runs, 3);

    analytics.record(&events).await.expect("replay whole");
    for chunk in events.chunks(3) {
        analytics.record(chunk).await.expect("replay in chunks");
    }
    // A batch where every event comes twice.
    let doubled: Vec<_> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    analytics.record(&doubled).await.expect("doubled");

    let after = (
        analytics.performance(w).await.expect("performance"),
        analytics.bottlenecks(w).await.expect("bottlenecks"),
        analytics.cost(w, &rates).await.expect("cost"),
    );
    assert_eq!(before, after);
}

/// After `reset` every report is empty; recording the same events again gives the same
/// figures. It wipes the whole store, so [`run_all`] runs it last.
pub async fn reset_empties_and_replay_rebuilds(analytics: &dyn Analytics) {
    let w = fresh_window();
    let def = fresh_name("reset");
    let events = performance_scenario(&def, w.from_ms);
    let rates = CostRates {
        per_cpu_second: 1.0,
        per_attempt: 1.0,
        ..CostRates::default()
    };
    analytics.record(&events).await.expect("record");
    let reports = || async {
        (
            analytics.performance(w).await.expect("performance"),
            analytics.bottlenecks(w).await.expect("bottlenecks"),
            analytics.cost(w, &rates).await.expect("cost"),
        )
    };
    let before = reports().await;
    assert_eq!(before.0.definitions[0].runs, 3);

    analytics.reset().await.expect("reset");
    let empty = reports().await;
    assert!(empty.0.definitions.is_empty(), "{:?}", empty.0);
    assert_eq!(empty.2.rows.len(), 0);
    // Nothing of the old runs is left to fold on: a replay starts from scratch.
    for chunk in events.chunks(5) {
        analytics.record(chunk).await.expect("replay");
    }
    assert_eq!(reports().await, before);
}
