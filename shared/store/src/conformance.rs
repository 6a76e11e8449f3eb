//! The conformance suite every [`ReadStore`] backend runs (`tests/<backend>_conformance.rs`).
//!
//! Each check names its runs and definitions with fresh ids, so checks can share one store
//! (one database, one keyspace) and run in any order; they panic on a violation, like
//! assertions in a test. [`run_all`] runs every check; the reset check, which wipes the
//! store, runs last.

use crate::{HumanTask, HumanTaskFilter, InboxStatus, ReadStore, StoreError, WorkflowFilter};
use distorch_domain::command::{ErrorInfo, TaskMetrics};
use distorch_domain::definition::Assignment;
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope, TaskKind};
use distorch_domain::view::{SlaKind, WorkflowView};
use distorch_domain::workflow::{Status, TaskStatus};
use distorch_domain::{TaskId, WorkflowId};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Runs every check against `store`.
pub async fn run_all(store: &dyn ReadStore) {
    apply_is_idempotent(store).await;
    views_match_the_fold(store).await;
    list_filters_and_paginates(store).await;
    rejects_a_bad_cursor(store).await;
    history_is_in_order(store).await;
    finds_tasks_by_id(store).await;
    dead_letters_follow_parking(store).await;
    definitions_latest_and_versioned(store).await;
    wait_for_seq_sees_applies(store).await;
    wait_for_end_sees_the_last_event(store).await;
    wait_for_end_wakes_waiters_on_other_threads(store).await;
    wait_for_definition_sees_registrations(store).await;
    inbox_follows_human_tasks(store).await;
    sla_alerts_newest_first_each_once(store).await;
    reset_empties_and_replay_rebuilds(store).await;
}

pub(crate) fn fresh_run() -> WorkflowId {
    WorkflowId(Uuid::new_v4())
}

fn fresh_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// Builds a run's events with consecutive sequence numbers, one second apart.
pub(crate) struct Run {
    pub(crate) id: WorkflowId,
    at_ms: i64,
    pub(crate) events: Vec<EventEnvelope>,
    tasks: u32,
}

impl Run {
    pub(crate) fn start(definition: &str, at_ms: i64) -> Self {
        let mut run = Self {
            id: fresh_run(),
            at_ms,
            events: Vec::new(),
            tasks: 0,
        };
        run.push(Event::WorkflowStarted {
            definition: definition.into(),
            version: 1,
            input: json!({"n": 1}),
            idempotency_key: None,
            parent: None,
        });
        run
    }

    fn push(&mut self, event: Event) -> &mut Self {
        let seq = self.events.len() as u64 + 1;
        self.events.push(EventEnvelope {
            workflow_id: self.id,
            seq,
            at_ms: self.at_ms + seq as i64 * 1000,
            command_id: None,
            v: 1,
            event,
        });
        self
    }

    /// Schedules a new step task and returns its id.
    pub(crate) fn schedule(&mut self, step: &str) -> TaskId {
        self.tasks += 1;
        let task_id = TaskId::new(self.id, self.tasks);
        self.push(Event::StepStarted {
            step_key: step.into(),
            step_id: step.into(),
            parent: None,
        });
        self.push(Event::TaskScheduled {
            task_id: task_id.clone(),
            step_key: step.into(),
            step_id: step.into(),
            kind: TaskKind::Step,
            task: format!("{step}-task"),
            queue: "default".into(),
            attempt: 1,
            max_attempts: 2,
            input: json!({"step": step}),
            checkpoint: None,
            timeout_ms: 1000,
            heartbeat_timeout_ms: None,
            schedule_to_start_timeout_ms: None,
            http: None,
        });
        task_id
    }

    /// A step whose task fails once, is retried, and completes.
    pub(crate) fn step(&mut self, step: &str) -> TaskId {
        let task_id = self.schedule(step);
        let mut again = self.events.last().expect("just scheduled").event.clone();
        if let Event::TaskScheduled { attempt, .. } = &mut again {
            *attempt = 2;
        }
        let started = |attempt| Event::TaskStarted {
            task_id: task_id.clone(),
            attempt,
            worker_id: "w1".into(),
            via: None,
        };
        self.push(started(1));
        self.push(Event::TaskFailed {
            task_id: task_id.clone(),
            attempt: 1,
            error: ErrorInfo::new("flaky", "try again"),
            retry_at_ms: Some(self.at_ms),
            metrics: Some(TaskMetrics {
                cpu_ms: Some(1.5),
                peak_memory_bytes: Some(1024),
                ..Default::default()
            }),
        });
        self.push(again);
        self.push(started(2));
        self.push(Event::TaskCompleted {
            task_id: task_id.clone(),
            attempt: 2,
            output: json!({"done": step}),
            metrics: None,
            by: None,
        });
        task_id
    }

    /// Starts a `human` step assigned as given and returns its task id.
    fn human(&mut self, step: &str, assignee: Option<&str>, group: Option<&str>) -> TaskId {
        self.tasks += 1;
        let task_id = TaskId::new(self.id, self.tasks);
        self.push(Event::StepStarted {
            step_key: step.into(),
            step_id: step.into(),
            parent: None,
        });
        self.push(Event::HumanTaskCreated {
            task_id: task_id.clone(),
            step_key: step.into(),
            step_id: step.into(),
            title: format!("Decide {step}"),
            assign: Assignment {
                assignee: assignee.map(Into::into),
                group: group.map(Into::into),
            },
            form: Some(json!({"type": "object", "required": ["approved"]})),
            timeout_ms: Some(60_000),
            escalate_after_ms: None,
            escalate_to: None,
        });
        task_id
    }

    pub(crate) fn park(&mut self, task_id: &TaskId) {
        self.push(Event::TaskFailed {
            task_id: task_id.clone(),
            attempt: 1,
            error: ErrorInfo::new("fatal", "no more attempts"),
            retry_at_ms: None,
            metrics: None,
        });
        self.push(Event::TaskParked {
            task_id: task_id.clone(),
            error: ErrorInfo::new("fatal", "no more attempts"),
        });
    }

    pub(crate) fn complete(&mut self) -> &mut Self {
        self.push(Event::WorkflowCompleted {
            output: json!({"ok": true}),
            parent: None,
        })
    }

    pub(crate) fn fold(&self) -> WorkflowView {
        let mut view = WorkflowView::start(&self.events[0]).expect("runs begin with a start");
        for e in &self.events[1..] {
            view.apply(e);
        }
        view
    }
}

/// Applies `events` in batches of `size`.
async fn apply_in_batches(store: &dyn ReadStore, events: &[EventEnvelope], size: usize) {
    for batch in events.chunks(size) {
        store.apply(batch).await.expect("apply");
    }
}

/// Applying the same batch twice, or replaying a range already applied (alone or overlapping
/// new events), leaves views, history and dead letters as after the first apply.
pub async fn apply_is_idempotent(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("idem"), 1_000_000);
    run.step("a");
    let parked = run.schedule("b");
    run.park(&parked);

    let half = run.events.len() / 2;
    store.apply(&run.events[..half]).await.expect("apply");
    store.apply(&run.events[..half]).await.expect("apply again");
    // Overlap: an old prefix with new events after it.
    store
        .apply(&run.events[half / 2..])
        .await
        .expect("overlapping apply");
    let view = store.workflow(run.id).await.expect("read");
    let history = store.history(run.id).await.expect("history");
    let dlq = store.dead_letters().await.expect("dlq");

    store.apply(&run.events).await.expect("replay all");
    store
        .apply(&run.events[2..5])
        .await
        .expect("replay a middle range");
    assert_eq!(store.workflow(run.id).await.expect("read"), view);
    assert_eq!(store.history(run.id).await.expect("history"), history);
    assert_eq!(store.dead_letters().await.expect("dlq"), dlq);
    assert_eq!(view, Some(run.fold()));
    assert_eq!(history, run.events);
    assert_eq!(dlq.iter().filter(|d| d.task_id == parked).count(), 1);
}

/// Whatever the batching, and with runs interleaved in one batch, each stored view equals
/// the domain fold of its events.
pub async fn views_match_the_fold(store: &dyn ReadStore) {
    let definition = fresh_name("fold");
    let mut a = Run::start(&definition, 2_000_000);
    let mut b = Run::start(&definition, 2_000_500);
    a.step("x");
    a.step("y");
    a.complete();
    b.step("x");
    let t = b.schedule("y");
    b.push(Event::TaskCancelled { task_id: t });
    b.push(Event::CompensationStarted {
        reason: ErrorInfo::new("declined", "card declined"),
        then_cancel: true,
    });
    b.push(Event::WorkflowCancelled {
        reason: Some("by test".into()),
        parent: None,
    });

    // Interleave the two runs, keeping each run's order.
    let mut mixed = Vec::new();
    let (mut ia, mut ib) = (a.events.iter(), b.events.iter());
    loop {
        let (ea, eb) = (ia.next(), ib.next());
        if ea.is_none() && eb.is_none() {
            break;
        }
        mixed.extend(ea.cloned());
        mixed.extend(eb.cloned());
    }
    apply_in_batches(store, &mixed, 3).await;

    for run in [&a, &b] {
        assert_eq!(
            store.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );
    }
    let a_view = store.workflow(a.id).await.expect("read").expect("a view");
    assert_eq!(a_view.status, Status::Completed);
    assert_eq!(
        store.workflow(b.id).await.expect("read").expect("b").status,
        Status::Cancelled
    );
    assert_eq!(store.workflow(fresh_run()).await.expect("read"), None);
}

/// Listing is newest first, filters by status and definition, and following cursors visits
/// every matching run exactly once, also when runs share a creation time.
pub async fn list_filters_and_paginates(store: &dyn ReadStore) {
    let definition = fresh_name("list");
    let mut runs = Vec::new();
    for i in 0..23 {
        // Pairs share a creation time to exercise the id tie-break.
        let mut run = Run::start(&definition, 3_000_000 + (i / 2) * 10_000);
        if i % 3 == 0 {
            run.complete();
        }
        runs.push(run);
    }
    let all: Vec<EventEnvelope> = runs.iter().flat_map(|r| r.events.clone()).collect();
    apply_in_batches(store, &all, 10).await;

    let mut expected: Vec<(i64, WorkflowId)> =
        runs.iter().map(|r| (r.events[0].at_ms, r.id)).collect();
    expected.sort_by(|x, y| {
        y.0.cmp(&x.0)
            .then_with(|| y.1.to_string().cmp(&x.1.to_string()))
    });

    let by_definition = WorkflowFilter {
        status: None,
        definition: Some(definition.clone()),
    };
    let listed = list_all(store, &by_definition, 4).await;
    assert_eq!(
        listed.iter().map(|s| s.workflow_id).collect::<Vec<_>>(),
        ids(&expected)
    );
    assert!(
        listed
            .iter()
            .all(|s| s.definition == definition && s.version == 1)
    );

    let completed = WorkflowFilter {
        status: Some(Status::Completed),
        definition: Some(definition.clone()),
    };
    let listed = list_all(store, &completed, 3).await;
    let want: Vec<WorkflowId> = ids(&expected)
        .into_iter()
        .filter(|id| runs.iter().any(|r| r.id == *id && r.events.len() == 2))
        .collect();
    assert_eq!(
        listed.iter().map(|s| s.workflow_id).collect::<Vec<_>>(),
        want
    );
    assert!(listed.iter().all(|s| s.status == Status::Completed));

    let running = WorkflowFilter {
        status: Some(Status::Running),
        definition: None,
    };
    let page = store.workflows(&running, 50, None).await.expect("list");
    assert!(page.items.iter().all(|s| s.status == Status::Running));

    let nothing = WorkflowFilter {
        status: None,
        definition: Some(fresh_name("none")),
    };
    let page = store.workflows(&nothing, 10, None).await.expect("list");
    assert!(page.items.is_empty() && page.next_cursor.is_none());
}

fn ids(rows: &[(i64, WorkflowId)]) -> Vec<WorkflowId> {
    rows.iter().map(|r| r.1).collect()
}

async fn list_all(
    store: &dyn ReadStore,
    filter: &WorkflowFilter,
    limit: usize,
) -> Vec<crate::WorkflowSummary> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        let page = store
            .workflows(filter, limit, cursor.as_deref())
            .await
            .expect("list");
        assert!(page.items.len() <= limit);
        for item in &page.items {
            assert!(
                seen.insert(item.workflow_id),
                "run {} listed twice",
                item.workflow_id
            );
        }
        out.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// A cursor the store did not hand out is a client error, not a storage failure.
pub async fn rejects_a_bad_cursor(store: &dyn ReadStore) {
    let err = store
        .workflows(&WorkflowFilter::default(), 10, Some("not a cursor"))
        .await
        .expect_err("bad cursor");
    assert!(matches!(err, StoreError::BadCursor(_)), "{err:?}");
    assert!(!err.is_retryable());
}

/// History returns every event of the run in sequence order, whatever the batching.
pub async fn history_is_in_order(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("history"), 4_000_000);
    run.step("a");
    run.step("b");
    run.complete();
    apply_in_batches(store, &run.events, 5).await;
    assert_eq!(store.history(run.id).await.expect("history"), run.events);
    assert!(
        store
            .history(fresh_run())
            .await
            .expect("history")
            .is_empty()
    );
}

/// A task is found by its id alone, with its latest attempt.
pub async fn finds_tasks_by_id(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("task"), 5_000_000);
    let done = run.step("a");
    let waiting = run.schedule("b");
    store.apply(&run.events).await.expect("apply");

    let task = store.task(&done).await.expect("task").expect("found");
    assert_eq!((task.status, task.attempt), (TaskStatus::Completed, 2));
    assert_eq!(task.workflow_id, run.id);
    assert_eq!(task.output, Some(json!({"done": "a"})));
    let task = store.task(&waiting).await.expect("task").expect("found");
    assert_eq!(task.status, TaskStatus::Scheduled);
    assert_eq!(
        store.task(&TaskId::new(run.id, 99)).await.expect("task"),
        None
    );
    assert_eq!(
        store
            .task(&TaskId::new(fresh_run(), 1))
            .await
            .expect("task"),
        None
    );
    assert_eq!(
        store.task(&TaskId("garbage".into())).await.expect("task"),
        None
    );
}

/// A parked task appears in the dead-letter queue and leaves it when skipped or retried.
pub async fn dead_letters_follow_parking(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("dlq"), 6_000_000);
    let first = run.schedule("a");
    let second = run.schedule("b");
    run.park(&first);
    run.park(&second);
    store.apply(&run.events).await.expect("apply");

    let run_id = run.id;
    let mine = move |all: Vec<distorch_domain::view::DeadLetter>| {
        all.into_iter()
            .filter(|d| d.workflow_id == run_id)
            .collect::<Vec<_>>()
    };
    let dlq = mine(store.dead_letters().await.expect("dlq"));
    assert_eq!(
        dlq.iter().map(|d| &d.task_id).collect::<Vec<_>>(),
        [&first, &second]
    );
    assert_eq!(
        dlq[0].error.as_ref().map(|e| e.kind.as_str()),
        Some("fatal")
    );
    assert_eq!(dlq[0].step_id, "a");
    assert_eq!(dlq[0].input, json!({"step": "a"}));
    assert_eq!(
        store
            .workflow(run.id)
            .await
            .expect("read")
            .expect("view")
            .status,
        Status::Parked
    );

    let from = run.events.len();
    run.push(Event::TaskSkipped {
        task_id: first.clone(),
        output: json!("by hand"),
    });
    store.apply(&run.events[from..]).await.expect("apply skip");
    let dlq = mine(store.dead_letters().await.expect("dlq"));
    assert_eq!(
        dlq.iter().map(|d| &d.task_id).collect::<Vec<_>>(),
        [&second]
    );

    let from = run.events.len();
    run.push(Event::TaskRetried {
        task_id: second.clone(),
    });
    store.apply(&run.events[from..]).await.expect("apply retry");
    assert!(mine(store.dead_letters().await.expect("dlq")).is_empty());
    let view = store.workflow(run.id).await.expect("read").expect("view");
    assert_eq!(view.status, Status::Running);
    assert_eq!(Some(view), Some(run.fold()));

    // Across runs too, the queue follows the parking order, not the order the runs first
    // appear in a batch: `late` is seen first but parks after `early`.
    let definition = fresh_name("dlq-order");
    let mut late = Run::start(&definition, 6_100_000);
    let mut early = Run::start(&definition, 6_099_000);
    let late_task = late.schedule("a");
    let early_task = early.schedule("a");
    let (late_started, _) = late.events.split_at(3);
    let mut batch = late_started.to_vec();
    batch.extend(early.events.iter().cloned());
    early.park(&early_task);
    late.park(&late_task);
    batch.extend(early.events[3..].iter().cloned());
    batch.extend(late.events[3..].iter().cloned());
    store.apply(&batch).await.expect("apply");
    let order: Vec<_> = store
        .dead_letters()
        .await
        .expect("dlq")
        .into_iter()
        .filter(|d| [late.id, early.id].contains(&d.workflow_id))
        .map(|d| d.task_id)
        .collect();
    assert_eq!(order, [early_task, late_task], "oldest parking first");
}

/// Definitions are listed with all versions and found by name, latest or versioned;
/// registering the same version twice keeps the first.
pub async fn definitions_latest_and_versioned(store: &dyn ReadStore) {
    let name = fresh_name("def");
    let def = |version: u32, description: &str| DefinitionRegistered {
        name: name.clone(),
        command_id: None,
        version,
        at_ms: 7_000_000 + i64::from(version),
        source: json!({"name": name, "description": description, "steps": []}),
        v: 1,
    };
    store
        .apply_definitions(&[def(1, "first"), def(2, "second")])
        .await
        .expect("apply");
    store
        .apply_definitions(&[def(2, "duplicate"), def(3, "third")])
        .await
        .expect("apply");

    assert_eq!(
        store.definition(&name, None).await.expect("latest"),
        Some(def(3, "third"))
    );
    assert_eq!(
        store.definition(&name, Some(2)).await.expect("v2"),
        Some(def(2, "second"))
    );
    assert_eq!(store.definition(&name, Some(9)).await.expect("v9"), None);
    assert_eq!(
        store
            .definition(&fresh_name("none"), None)
            .await
            .expect("none"),
        None
    );

    let listed = store.definitions().await.expect("list");
    let summary = listed.iter().find(|d| d.name == name).expect("listed");
    assert_eq!(summary.latest_version, 3);
    assert_eq!(summary.versions, [1, 2, 3]);
    assert_eq!(summary.description.as_deref(), Some("third"));
}

/// `wait_for_seq` returns true once the event is applied (also when the apply happens while
/// waiting) and false when the timeout passes first.
pub async fn wait_for_seq_sees_applies(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("wait"), 8_000_000);
    run.step("a");
    let short = Duration::from_millis(30);
    assert!(!store.wait_for_seq(run.id, 1, short).await.expect("wait"));

    store.apply(&run.events[..2]).await.expect("apply");
    assert!(store.wait_for_seq(run.id, 2, short).await.expect("wait"));
    assert!(store.wait_for_seq(run.id, 1, short).await.expect("wait"));
    assert!(!store.wait_for_seq(run.id, 3, short).await.expect("wait"));

    let last = run.events.len() as u64;
    let (waited, applied) = tokio::join!(
        store.wait_for_seq(run.id, last, Duration::from_secs(10)),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.apply(&run.events[2..]).await
        }
    );
    applied.expect("apply");
    assert!(waited.expect("wait"));

    // A wait that began before the store had seen anything of the run (a command answered
    // before the projector got to it) ends when the run is folded, with no flush between.
    let mut unseen = Run::start(&fresh_name("unseen"), 8_100_000);
    unseen.step("a");
    let wait = store.wait_for_seq(unseen.id, 2, Duration::from_secs(10));
    assert!(
        applied_while_waiting(store, &unseen.events, wait).await,
        "a wait for an unseen run missed its fold"
    );
}

/// Applies `events` while `wait` (a wait of `store`'s) runs; what the wait returned.
async fn applied_while_waiting(
    store: &dyn ReadStore,
    events: &[EventEnvelope],
    wait: impl std::future::Future<Output = Result<bool, StoreError>>,
) -> bool {
    let (waited, applied) = tokio::join!(wait, async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.apply(events).await
    });
    applied.expect("apply");
    waited.expect("wait")
}

/// `wait_for_end` returns false while the run goes on, even as its events are applied, and
/// true once its view shows it ended (also when that happens while waiting).
pub async fn wait_for_end_sees_the_last_event(store: &dyn ReadStore) {
    let mut run = Run::start(&fresh_name("end"), 8_500_000);
    run.step("a");
    run.step("b");
    run.complete();
    let short = Duration::from_millis(30);
    assert!(
        !store.wait_for_end(run.id, short).await.expect("wait"),
        "an unknown run has not ended"
    );
    store.apply(&run.events[..3]).await.expect("apply");
    assert!(!store.wait_for_end(run.id, short).await.expect("wait"));

    let n = run.events.len();
    let (waited, applied) =
        tokio::join!(store.wait_for_end(run.id, Duration::from_secs(10)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.apply(&run.events[3..n - 1]).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.apply(&run.events[n - 1..]).await
        });
    applied.expect("apply");
    assert!(waited.expect("wait"));
    assert!(store.wait_for_end(run.id, short).await.expect("wait"));

    // Also when the store had seen nothing of the run when the wait began.
    let mut unseen = Run::start(&fresh_name("unseen-end"), 8_600_000);
    unseen.step("a");
    unseen.complete();
    let wait = store.wait_for_end(unseen.id, Duration::from_secs(10));
    assert!(
        applied_while_waiting(store, &unseen.events, wait).await,
        "a wait for an unseen run missed its end"
    );
}

/// Waiters on other threads wake when the batch that ends their runs is applied, even when
/// nothing is applied after it (the last runs of a quiet system). Needs a multi-thread
/// runtime: a waiter that wakes between the store's write and its bookkeeping must still see
/// the end, not sleep until its timeout.
pub async fn wait_for_end_wakes_waiters_on_other_threads(store: &dyn ReadStore) {
    let handle = tokio::runtime::Handle::current();
    for round in 0..20 {
        let runs: Vec<Run> = (0..16)
            .map(|i| {
                let mut run = Run::start(&fresh_name("woken"), 8_550_000 + round * 100 + i);
                run.step("a");
                run.complete();
                run
            })
            .collect();
        let (finals, before): (Vec<_>, Vec<_>) = runs
            .iter()
            .map(|r| r.events.split_last().expect("events"))
            .unzip();
        store.apply(&before.concat()).await.expect("apply");
        let finals: Vec<EventEnvelope> = finals.into_iter().cloned().collect();
        tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let waiters: Vec<_> = runs
                    .iter()
                    .map(|run| {
                        let handle = &handle;
                        s.spawn(move || {
                            let started = std::time::Instant::now();
                            let ended =
                                handle.block_on(store.wait_for_end(run.id, Duration::from_secs(5)));
                            (ended.expect("wait"), started.elapsed())
                        })
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(20));
                handle.block_on(store.apply(&finals)).expect("apply");
                for waiter in waiters {
                    let (ended, waited) = waiter.join().expect("waiter thread");
                    assert!(
                        ended,
                        "round {round}: a waiter missed its run's end ({waited:?})"
                    );
                    assert!(
                        waited < Duration::from_secs(4),
                        "round {round}: a waiter woke only after {waited:?}"
                    );
                }
            })
        });
    }
}

/// `wait_for_end` of a store that did not fold the run itself (another process, or the
/// same database after a restart) reads the ending from the stored view.
pub async fn wait_for_end_reads_what_another_writer_folded(
    writer: &dyn ReadStore,
    reader: &dyn ReadStore,
) {
    let mut ended = Run::start(&fresh_name("ended"), 8_600_000);
    ended.step("a");
    ended.complete();
    let mut going = Run::start(&fresh_name("going"), 8_600_001);
    going.step("a");
    writer.apply(&ended.events).await.expect("apply");
    writer.apply(&going.events).await.expect("apply");
    let short = Duration::from_millis(50);
    assert!(reader.wait_for_end(ended.id, short).await.expect("wait"));
    assert!(!reader.wait_for_end(going.id, short).await.expect("wait"));
}

/// Two stores writing one run's events in turns (two projectors on one database, the run's
/// partition moving between them) each fold onto what the other wrote, never onto an older
/// view of their own.
pub async fn writers_taking_turns_fold_onto_each_others_views(
    first: &dyn ReadStore,
    second: &dyn ReadStore,
) {
    let mut run = Run::start(&fresh_name("turns"), 8_700_000);
    run.step("a");
    let started = run.events.len();
    run.step("b");
    let middle = run.events.len();
    run.step("c");
    run.complete();
    first.apply(&run.events[..started]).await.expect("apply");
    second
        .apply(&run.events[started..middle])
        .await
        .expect("apply");
    first.apply(&run.events[middle..]).await.expect("apply");
    for store in [first, second] {
        assert_eq!(
            store.workflow(run.id).await.expect("read"),
            Some(run.fold())
        );
    }
}

/// `wait_for_definition` returns true once that version is registered, false on timeout.
pub async fn wait_for_definition_sees_registrations(store: &dyn ReadStore) {
    let name = fresh_name("waitdef");
    let short = Duration::from_millis(30);
    assert!(
        !store
            .wait_for_definition(&name, 1, short)
            .await
            .expect("wait")
    );
    let def = DefinitionRegistered {
        name: name.clone(),
        command_id: None,
        version: 1,
        at_ms: 9_000_000,
        source: json!({"name": name}),
        v: 1,
    };
    let (waited, applied) = tokio::join!(
        store.wait_for_definition(&name, 1, Duration::from_secs(10)),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.apply_definitions(std::slice::from_ref(&def)).await
        }
    );
    applied.expect("apply");
    assert!(waited.expect("wait"));
    assert!(
        !store
            .wait_for_definition(&name, 2, short)
            .await
            .expect("wait")
    );
}

/// Every inbox query of `filter` (with a large limit), restricted to `runs`.
async fn inbox_of(
    store: &dyn ReadStore,
    filter: HumanTaskFilter,
    runs: &[WorkflowId],
) -> Vec<HumanTask> {
    store
        .human_tasks(&filter, 1000)
        .await
        .expect("inbox")
        .into_iter()
        .filter(|h| runs.contains(&h.workflow_id))
        .collect()
}

fn task_ids(rows: &[HumanTask]) -> Vec<&TaskId> {
    rows.iter().map(|h| &h.task_id).collect()
}

/// The inbox holds exactly the human tasks of the stored views: it follows claims,
/// escalations, completions and the end of a run, filters by assignee, group and status
/// (`open` = scheduled or claimed), lists oldest first, and ignores replays.
pub async fn inbox_follows_human_tasks(store: &dyn ReadStore) {
    let finance = fresh_name("finance");
    let leads = fresh_name("leads");
    let ann = fresh_name("ann");
    let by_group = |g: &str, status| HumanTaskFilter {
        assignee: None,
        group: Some(g.to_owned()),
        status,
    };

    let mut a = Run::start(&fresh_name("inbox"), 10_000_000);
    let t1 = a.human("approve", None, Some(&finance));
    let t2 = a.human("review", Some(&ann), None);
    store.apply(&a.events).await.expect("apply");

    let rows = inbox_of(store, by_group(&finance, None), &[a.id]).await;
    assert_eq!(task_ids(&rows), [&t1]);
    let row = &rows[0];
    assert_eq!(
        (row.status, row.claimed_by.as_ref()),
        (TaskStatus::Scheduled, None)
    );
    assert_eq!(
        (row.title.as_str(), row.step_id.as_str()),
        ("Decide approve", "approve")
    );
    assert_eq!(row.definition, a.fold().definition);
    assert_eq!(
        row.form.as_ref().expect("form")["required"],
        json!(["approved"])
    );
    assert!(row.due_at.is_some());
    let mine = HumanTaskFilter {
        assignee: Some(ann.clone()),
        group: None,
        status: Some(InboxStatus::Open),
    };
    assert_eq!(
        task_ids(&inbox_of(store, mine.clone(), &[a.id]).await),
        [&t2]
    );

    // Claimed: still open, now running.
    let from = a.events.len();
    a.push(Event::HumanTaskClaimed {
        task_id: t1.clone(),
        by: "bob".into(),
    });
    // Escalated: leaves ann's inbox for the leads'.
    a.push(Event::HumanTaskReassigned {
        task_id: t2.clone(),
        assign: Assignment {
            assignee: None,
            group: Some(leads.clone()),
        },
        by: None,
    });
    store.apply(&a.events[from..]).await.expect("apply");
    let open = inbox_of(store, by_group(&finance, Some(InboxStatus::Open)), &[a.id]).await;
    assert_eq!(task_ids(&open), [&t1]);
    assert_eq!(
        (open[0].status, open[0].claimed_by.as_deref()),
        (TaskStatus::Running, Some("bob"))
    );
    let running = by_group(&finance, Some(InboxStatus::Is(TaskStatus::Running)));
    assert_eq!(task_ids(&inbox_of(store, running, &[a.id]).await), [&t1]);
    assert!(inbox_of(store, mine, &[a.id]).await.is_empty());
    let escalated = inbox_of(store, by_group(&leads, Some(InboxStatus::Open)), &[a.id]).await;
    assert_eq!(task_ids(&escalated), [&t2]);
    assert!(escalated[0].escalated && escalated[0].assignee.is_none());

    // Completed: out of the open inbox, listed as completed with who and what.
    let from = a.events.len();
    a.push(Event::TaskCompleted {
        task_id: t1.clone(),
        attempt: 1,
        output: json!({"approved": true}),
        metrics: None,
        by: Some("bob".into()),
    });
    store.apply(&a.events[from..]).await.expect("apply");
    assert!(
        inbox_of(store, by_group(&finance, Some(InboxStatus::Open)), &[a.id])
            .await
            .is_empty()
    );
    let done = by_group(&finance, Some(InboxStatus::Is(TaskStatus::Completed)));
    let done = inbox_of(store, done, &[a.id]).await;
    assert_eq!(task_ids(&done), [&t1]);
    assert_eq!(done[0].completed_by.as_deref(), Some("bob"));
    assert_eq!(done[0].output, Some(json!({"approved": true})));

    // A later run's task comes after; the end of that run takes its task out of the inbox.
    let mut b = Run::start(&fresh_name("inbox"), 10_500_000);
    let t3 = b.human("approve", None, Some(&finance));
    store.apply(&b.events).await.expect("apply");
    let both = inbox_of(store, by_group(&finance, None), &[a.id, b.id]).await;
    assert_eq!(task_ids(&both), [&t1, &t3], "oldest first");
    let limited = store
        .human_tasks(&by_group(&finance, None), 1)
        .await
        .expect("inbox");
    assert_eq!(task_ids(&limited), [&t1]);
    let from = b.events.len();
    b.push(Event::WorkflowCancelled {
        reason: Some("by test".into()),
        parent: None,
    });
    store.apply(&b.events[from..]).await.expect("apply");
    assert!(
        inbox_of(store, by_group(&finance, Some(InboxStatus::Open)), &[b.id])
            .await
            .is_empty()
    );

    // Replays change nothing, and every row is what the fold says.
    store.apply(&a.events).await.expect("replay");
    store.apply(&b.events[1..]).await.expect("replay");
    let everything = HumanTaskFilter::default();
    let rows = inbox_of(store, everything.clone(), &[a.id, b.id]).await;
    let mut want: Vec<HumanTask> = HumanTask::all_of(&a.fold()).collect();
    want.extend(HumanTask::all_of(&b.fold()));
    assert_eq!(rows, want);
    assert!(rows.iter().all(|r| everything.matches(r)));
    assert_eq!(rows[2].status, TaskStatus::Cancelled);
}

/// SLA warnings and breaches are listed newest first, each event once however often it is
/// applied, with the run, its definition, the step (or none for the run's SLA) and the SLA.
pub async fn sla_alerts_newest_first_each_once(store: &dyn ReadStore) {
    // Far in the future, so these are the newest alerts of the store.
    let mut x = Run::start(&fresh_name("sla"), 4_000_000_000_000);
    x.push(Event::StepStarted {
        step_key: "a".into(),
        step_id: "a".into(),
        parent: None,
    });
    x.push(Event::SlaWarned {
        step_key: Some("a".into()),
        sla_ms: 300,
    });
    x.push(Event::SlaBreached {
        step_key: Some("a".into()),
        sla_ms: 300,
    });
    let mut y = Run::start(&fresh_name("sla"), 4_000_000_010_000);
    y.push(Event::SlaBreached {
        step_key: None,
        sla_ms: 500,
    });
    apply_in_batches(store, &x.events, 2).await;
    store.apply(&y.events).await.expect("apply");
    store.apply(&x.events).await.expect("replay");
    store.apply(&y.events).await.expect("replay");

    let all = store.sla_breaches(1000).await.expect("sla");
    let ours: Vec<_> = all
        .iter()
        .filter(|r| r.workflow_id == x.id || r.workflow_id == y.id)
        .map(|r| (r.workflow_id, r.step_key.as_deref(), r.sla_ms, r.kind))
        .collect();
    assert_eq!(
        ours,
        [
            (y.id, None, 500, SlaKind::Breach),
            (x.id, Some("a"), 300, SlaKind::Breach),
            (x.id, Some("a"), 300, SlaKind::Warning),
        ]
    );
    let y_row = all.iter().find(|r| r.workflow_id == y.id).expect("y");
    assert_eq!(y_row.definition, y.fold().definition);
    assert_eq!(y_row.at, y.fold().sla[0].at);
    assert_eq!(store.sla_breaches(2).await.expect("sla")[..], all[..2]);
    let view = store.workflow(x.id).await.expect("read").expect("view");
    assert_eq!(view, x.fold());
    assert_eq!(view.sla.len(), 2);
}

/// Every read model a store holds, as its queries answer.
#[derive(Debug, PartialEq)]
struct Snapshot {
    views: Vec<Option<WorkflowView>>,
    histories: Vec<Vec<EventEnvelope>>,
    listing: Vec<crate::WorkflowSummary>,
    dead_letters: Vec<distorch_domain::view::DeadLetter>,
    inbox: Vec<HumanTask>,
    sla: Vec<crate::SlaRecord>,
    definitions: Vec<crate::DefinitionSummary>,
    latest_definitions: Vec<Option<DefinitionRegistered>>,
}

async fn snapshot(store: &dyn ReadStore, runs: &[WorkflowId], names: &[String]) -> Snapshot {
    let mut views = Vec::new();
    let mut histories = Vec::new();
    for id in runs {
        views.push(store.workflow(*id).await.expect("read"));
        histories.push(store.history(*id).await.expect("history"));
    }
    let mut listing = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .workflows(&WorkflowFilter::default(), 1000, cursor.as_deref())
            .await
            .expect("list");
        listing.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut latest_definitions = Vec::new();
    for name in names {
        latest_definitions.push(store.definition(name, None).await.expect("definition"));
    }
    Snapshot {
        views,
        histories,
        listing,
        dead_letters: store.dead_letters().await.expect("dlq"),
        inbox: store
            .human_tasks(&HumanTaskFilter::default(), crate::MAX_LIMIT)
            .await
            .expect("inbox"),
        sla: store.sla_breaches(crate::MAX_LIMIT).await.expect("sla"),
        definitions: store.definitions().await.expect("definitions"),
        latest_definitions,
    }
}

/// After `reset` the store reads as empty (every query, and waits do not see old runs);
/// applying the same events again, in other batches, gives back the same read models.
///
/// It wipes the whole store, so [`run_all`] runs it last and no other check may share the
/// store while it runs.
pub async fn reset_empties_and_replay_rebuilds(store: &dyn ReadStore) {
    let definition = fresh_name("reset");
    let (defs, [done, parked, human]) = mixed_runs(&definition);
    let runs = [done.id, parked.id, human.id];
    let events: Vec<EventEnvelope> = [&done, &parked, &human]
        .into_iter()
        .flat_map(|r| r.events.iter().cloned())
        .collect();

    // Whatever other checks left behind is dropped too: compare the store as a whole.
    store.reset().await.expect("first reset");
    store.apply_definitions(&defs).await.expect("definitions");
    apply_in_batches(store, &events, 4).await;
    let names = [definition.clone()];
    let before = snapshot(store, &runs, &names).await;
    assert_eq!(before.listing.len(), 3);
    assert_eq!(before.dead_letters.len(), 1);
    assert_eq!(before.inbox.len(), 1);
    assert_eq!(before.sla.len(), 1);
    assert_eq!(before.views[0], Some(done.fold()));

    store.reset().await.expect("reset");
    let empty = snapshot(store, &runs, &names).await;
    assert_eq!(
        empty,
        Snapshot {
            views: vec![None, None, None],
            histories: vec![Vec::new(), Vec::new(), Vec::new()],
            listing: Vec::new(),
            dead_letters: Vec::new(),
            inbox: Vec::new(),
            sla: Vec::new(),
            definitions: Vec::new(),
            latest_definitions: vec![None],
        }
    );
    assert_eq!(
        store.task(&TaskId::new(done.id, 1)).await.expect("task"),
        None
    );
    let short = Duration::from_millis(30);
    assert!(!store.wait_for_seq(done.id, 1, short).await.expect("wait"));
    assert!(
        !store
            .wait_for_definition(&definition, 1, short)
            .await
            .expect("wait")
    );

    store.apply_definitions(&defs).await.expect("definitions");
    apply_in_batches(store, &events, 7).await;
    assert_eq!(snapshot(store, &runs, &names).await, before);
}

/// Two versions of `definition` and three runs of it: one completed after a retried step,
/// one with a parked task, one waiting on a human task with an SLA breach: between them
/// they touch every read model.
fn mixed_runs(definition: &str) -> (Vec<DefinitionRegistered>, [Run; 3]) {
    let defs: Vec<DefinitionRegistered> = (1..=2)
        .map(|version| DefinitionRegistered {
            name: definition.to_owned(),
            command_id: None,
            version,
            at_ms: 9_000_000 + i64::from(version),
            source: json!({"name": definition, "description": "reset", "steps": []}),
            v: 1,
        })
        .collect();
    let mut done = Run::start(definition, 9_000_000);
    done.step("a");
    done.complete();
    let mut parked = Run::start(definition, 9_001_000);
    let t = parked.schedule("b");
    parked.park(&t);
    let mut human = Run::start(definition, 9_002_000);
    human.human("approve", Some("ann"), Some("ops"));
    human.push(Event::SlaBreached {
        step_key: None,
        sla_ms: 500,
    });
    (defs, [done, parked, human])
}

/// A crash loses at most what the last `flush` did not cover, and the projector's replay
/// (every batch since the offsets it committed after that flush) makes up for it: a store
/// dropped without a flush, opened again by `open` and given those batches again, reads
/// exactly like one that applied everything once. `open` opens the same store each time.
/// Wipes the store, like [`reset_empties_and_replay_rebuilds`].
pub async fn replay_after_a_crash_completes_the_store<S: ReadStore>(open: impl Fn() -> S) {
    let definition = fresh_name("crash");
    let (defs, [done, parked, human]) = mixed_runs(&definition);
    let runs = [done.id, parked.id, human.id];
    // Interleaved as a log delivers them, so every run is cut by the crash.
    let mut events: Vec<EventEnvelope> = Vec::new();
    for i in 0..done.events.len().max(human.events.len()) {
        for run in [&done, &parked, &human] {
            events.extend(run.events.get(i).cloned());
        }
    }
    let (flushed, lost) = events.split_at(events.len() / 2);

    let store = open();
    store.reset().await.expect("reset");
    store.apply_definitions(&defs).await.expect("definitions");
    apply_in_batches(&store, flushed, 4).await;
    store.flush().await.expect("flush");
    apply_in_batches(&store, lost, 3).await;
    assert_eq!(
        store.workflow(done.id).await.expect("read"),
        Some(done.fold()),
        "an applied batch is readable before any flush"
    );
    drop(store);

    let store = open();
    apply_in_batches(&store, lost, 5).await;
    let names = [definition];
    let replayed = snapshot(&store, &runs, &names).await;
    assert_eq!(replayed.views[0], Some(done.fold()));
    assert_eq!(replayed.views[1], Some(parked.fold()));
    assert_eq!(replayed.views[2], Some(human.fold()));
    assert_eq!(replayed.histories[0], done.events);
    assert_eq!(replayed.dead_letters.len(), 1);
    assert_eq!(replayed.inbox.len(), 1);
    assert_eq!(replayed.sla.len(), 1);

    store.reset().await.expect("reset");
    store.apply_definitions(&defs).await.expect("definitions");
    apply_in_batches(&store, &events, 7).await;
    assert_eq!(snapshot(&store, &runs, &names).await, replayed);
}
