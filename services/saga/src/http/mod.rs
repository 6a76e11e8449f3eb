//! The HTTP executor: makes the calls of `http` steps. The engine schedules each attempt as
//! a `TaskScheduled` carrying the rendered [`HttpRequest`] and hands it to no worker queue;
//! the [`HttpExecutor`] reads the events topic in its own consumer group (`http-executor`),
//! appends `StartTask`, calls the service and appends `CompleteTask` (`{status, headers,
//! body}`) or `FailTask` (`http.4xx`, `http.5xx`, `http.timeout`, `http.connect`, with
//! `Retry-After` on 429/503) to the commands topic, keyed like every command of that run.
//!
//! Calls run concurrently (up to `concurrency`) over one pooled `reqwest::Client`. Commands
//! go through one writer task that folds everything queued into one append (group commit).
//!
//! Each target `host:port` has a circuit [`breaker`]. While it is open no call is made: the
//! attempt is answered with `DeferTask` until the cooldown ends, which the engine turns into
//! a wait that uses no attempt, or into the step's `fallback`. Every breaker transition is
//! appended to `<prefix>.breakers` (one partition, keyed by host) for the API to show.
//! Breakers live in this process: with several executors each learns a host's health on
//! its own.
//!
//! Delivery is at-least-once. Event offsets are committed (every 250 ms and at shutdown)
//! only up to the oldest attempt whose result is not yet durable, so a crash (or a kill) after a call but before its
//! result was appended makes the call again on restart. Command ids are derived from task
//! id + attempt + verb, so the engine drops repeated commands, but the service sees the
//! request twice: that is why a step should send a stable `Idempotency-Key` such as
//! `{.task_id}`, which is the same on every redelivery (and every attempt) of the step.
//! Attempts already settled later in the same batch of events are not called again.

pub mod breaker;
mod call;

pub use breaker::BreakerConfig;
use distorch_domain::topics::BreakerTransition;

use crate::SagaError;
use breaker::{Admission, Breakers};
use distorch_domain::command::{Command, CommandEnvelope};
use distorch_domain::event::{Event, EventEnvelope, HttpRequest};
use distorch_domain::ids::{CommandId, TaskId};
use distorch_domain::topics::Topics;
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::{Consumer, EventLog, LogError, NewRecord, Record};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

/// The executor's consumer group on the events topic.
pub const GROUP: &str = "http-executor";
/// The `worker_id` of the attempts it starts.
pub const WORKER_ID: &str = "http-executor";
/// Records per log append of the writer.
const MAX_APPEND: usize = 4096;
/// How long a stopping executor lets calls in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `<prefix>.breakers`: breaker transitions, keyed by host.
pub fn breakers_topic(topics: &Topics) -> String {
    topics.breakers()
}

/// `[http]` in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Most calls in flight at once; further attempts wait (and so does the consumer).
    pub concurrency: usize,
    /// Events read per poll.
    pub batch: usize,
    /// A larger response body fails the attempt with `http.response_too_large`.
    pub max_response_bytes: usize,
    /// Default breaker thresholds; an `http` step's `breaker` overrides them.
    pub breaker: BreakerConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            concurrency: 256,
            batch: 1000,
            max_response_bytes: 1024 * 1024,
            breaker: BreakerConfig::default(),
        }
    }
}

impl HttpConfig {
    /// Rejects a zero `concurrency` or `batch` and invalid breaker thresholds, so a bad
    /// configuration fails at startup.
    pub fn validate(&self) -> Result<(), SagaError> {
        let bad = |msg: String| Err(SagaError::Config(format!("http: {msg}")));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch must be at least 1".into());
        }
        self.breaker.validate().or_else(bad)
    }
}

/// Counters of the executor, under `distorch_http_*`.
#[derive(Clone, Debug, Default)]
pub struct HttpMetrics {
    /// By `outcome`: `completed`, `failed`, `deferred`.
    pub attempts: Family<Vec<(String, String)>, Counter>,
    /// By `state` entered: `open`, `half_open`, `closed`.
    pub breaker_transitions: Family<Vec<(String, String)>, Counter>,
}

impl HttpMetrics {
    /// Creates the counters and registers them in `registry`; call it once per registry.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("distorch_http");
        r.register(
            "attempts",
            "Attempts of http steps by outcome",
            m.attempts.clone(),
        );
        r.register(
            "breaker_transitions",
            "Circuit breaker transitions by the state entered",
            m.breaker_transitions.clone(),
        );
        m
    }

    fn attempt(&self, outcome: &str) {
        self.attempts
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }
}

/// Makes the calls of `http` steps and reports their outcomes as commands (see the module
/// docs).
pub struct HttpExecutor {
    log: Arc<dyn EventLog>,
    topics: Topics,
    config: HttpConfig,
    client: reqwest::Client,
    metrics: HttpMetrics,
}

impl HttpExecutor {
    /// An executor that does nothing until [`HttpExecutor::run`]. Fails with
    /// [`SagaError::Config`] when `config` does not [validate](HttpConfig::validate) or
    /// the HTTP client cannot be built.
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        config: HttpConfig,
        metrics: HttpMetrics,
    ) -> Result<Self, SagaError> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .user_agent(concat!(
                "distorch-http-executor/",
                env!("CARGO_PKG_VERSION")
            ))
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .map_err(|e| SagaError::Config(format!("http: cannot build the client: {e}")))?;
        Ok(Self {
            log,
            topics,
            config,
            client,
            metrics,
        })
    }

    /// Consumes the events topic until `shutdown`, then lets calls in flight finish (for a
    /// few seconds), appends their results and commits.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SagaError> {
        let breakers = breakers_topic(&self.topics);
        match self.log.create_topic(&breakers, 1).await {
            Ok(()) | Err(LogError::PartitionMismatch { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut consumer = self.log.consumer(GROUP, &[self.topics.events()]).await?;
        let offsets = Arc::new(Mutex::new(Offsets::default()));
        let (writes, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(self.log.clone(), queue, offsets.clone()));
        let shared = Arc::new(Shared {
            client: self.client,
            breakers: Mutex::new(Breakers::default()),
            writes,
            config: self.config.clone(),
            commands: self.topics.commands(),
            breakers_topic: breakers,
            metrics: self.metrics,
        });
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut calls = JoinSet::new();
        let mut committed = HashMap::new();
        let mut last_commit = Instant::now();
        tokio::pin!(shutdown);
        'poll: loop {
            while let Some(done) = calls.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "an http call task panicked; its event will be redelivered after a restart");
                }
            }
            if writer.is_finished() {
                break;
            }
            let records = tokio::select! {
                r = consumer.poll(self.config.batch, Duration::from_millis(500)) => r?,
                () = &mut shutdown => break,
            };
            // On an interval, not per batch: a commit is one more log write, and a restart
            // delivers at most an interval's events again (their calls are at least once).
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                last_commit = Instant::now();
                commit(consumer.as_mut(), &offsets, &mut committed).await?;
            }
            for (pos, call) in plan(&records, &offsets) {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    () = &mut shutdown => break 'poll,
                };
                shared.admit(&mut calls, pos, call, permit);
            }
        }
        // Stopping: give calls in flight a moment, then flush their results and commit.
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while calls.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("http calls still in flight at shutdown; they will be made again");
        }
        calls.shutdown().await;
        drop(shared);
        let written = writer.await;
        commit(consumer.as_mut(), &offsets, &mut committed).await?;
        match written {
            Ok(result) => result.map_err(SagaError::from),
            Err(e) => Err(SagaError::Config(format!(
                "the http result writer panicked: {e}"
            ))),
        }
    }
}

/// Commits, per partition, up to the oldest event whose outcome is not yet durable.
async fn commit(
    consumer: &mut dyn Consumer,
    offsets: &Mutex<Offsets>,
    committed: &mut HashMap<(String, u32), u64>,
) -> Result<(), LogError> {
    let ready: Vec<_> = offsets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .committable()
        .into_iter()
        .filter(|(t, p, o)| committed.get(&(t.clone(), *p)) != Some(o))
        .collect();
    if ready.is_empty() {
        return Ok(());
    }
    consumer.commit(&ready).await?;
    for (t, p, o) in ready {
        committed.insert((t, p), o);
    }
    Ok(())
}

/// `(topic, partition, offset)` of an event.
type Pos = (String, u32, u64);

/// An attempt to call.
struct Call {
    task_id: TaskId,
    attempt: u32,
    request: HttpRequest,
}

/// The attempts a batch of events asks for, skipping attempts the same batch shows as
/// already settled (a redelivery after a crash). Every other event is settled at once.
fn plan(records: &[Record], offsets: &Mutex<Offsets>) -> Vec<(Pos, Call)> {
    let mut out = Vec::new();
    let mut tracker = offsets.lock().unwrap_or_else(|p| p.into_inner());
    for rec in records {
        let pos = (rec.topic.clone(), rec.partition, rec.offset);
        tracker.polled(&pos);
        let call = may_be_http(&rec.payload)
            .then(|| serde_json::from_slice::<EventEnvelope>(&rec.payload).ok())
            .flatten()
            .and_then(|env| match env.event {
                Event::TaskScheduled {
                    task_id,
                    attempt,
                    http: Some(request),
                    ..
                } => Some(Call {
                    task_id,
                    attempt,
                    request,
                }),
                _ => None,
            });
        match call {
            Some(call) => out.push((pos, call)),
            None => tracker.settle(&pos),
        }
    }
    if out.is_empty() {
        return out;
    }
    // Only runs with a call in this batch can settle one, so only their events are decoded.
    let keys: HashSet<&str> = records
        .iter()
        .filter(|r| may_be_http(&r.payload))
        .map(|r| r.key.as_str())
        .collect();
    let mut settled: HashMap<TaskId, u32> = HashMap::new();
    for rec in records.iter().filter(|r| keys.contains(r.key.as_str())) {
        let Ok(env) = serde_json::from_slice::<EventEnvelope>(&rec.payload) else {
            continue;
        };
        let (task_id, upto) = match env.event {
            Event::TaskCompleted {
                task_id, attempt, ..
            }
            | Event::TaskFailed {
                task_id, attempt, ..
            }
            | Event::TaskDeferred {
                task_id, attempt, ..
            } => (task_id, attempt),
            Event::TaskScheduled {
                task_id, attempt, ..
            } => (task_id, attempt.saturating_sub(1)),
            Event::TaskCancelled { task_id }
            | Event::TaskSkipped { task_id, .. }
            | Event::TaskParked { task_id, .. } => (task_id, u32::MAX),
            _ => continue,
        };
        let e = settled.entry(task_id).or_default();
        *e = (*e).max(upto);
    }
    out.retain(|(pos, call)| {
        let done = settled
            .get(&call.task_id)
            .is_some_and(|upto| *upto >= call.attempt);
        if done {
            tracing::debug!(task_id = %call.task_id, attempt = call.attempt, "attempt already settled; not calling again");
            tracker.settle(pos);
        }
        !done
    });
    out
}

/// Whether a payload may hold a `TaskScheduled` with an `http` request: a byte scan that
/// spares decoding every other event. False positives are decoded and dropped.
fn may_be_http(payload: &[u8]) -> bool {
    crate::contains(payload, b"\"http\":{")
}

/// What the calls share.
struct Shared {
    client: reqwest::Client,
    breakers: Mutex<Breakers>,
    writes: mpsc::UnboundedSender<Write>,
    config: HttpConfig,
    commands: String,
    breakers_topic: String,
    metrics: HttpMetrics,
}

impl Shared {
    /// Asks the target's breaker, then defers the attempt or starts its call.
    fn admit(
        self: &Arc<Self>,
        calls: &mut JoinSet<()>,
        pos: Pos,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        let host = call::host_of(&call.request.url);
        let cfg = self.config.breaker.with(call.request.breaker.as_ref());
        let admission = match &host {
            // An unusable url fails in `perform` without a call; no breaker is involved.
            None => Admission::Call { probe: false },
            Some(host) => {
                let mut b = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
                let (admission, transition) = b.admit(host, &cfg, now_ms());
                // Published while holding the lock, so transitions reach the log in order.
                if let Some(t) = transition {
                    self.publish(t);
                }
                admission
            }
        };
        match admission {
            Admission::Reject { until_ms, reason } => {
                drop(permit);
                self.metrics.attempt("deferred");
                let cmd = Command::DeferTask {
                    task_id: call.task_id.clone(),
                    attempt: call.attempt,
                    until_ms,
                    reason,
                };
                let record = self.command(&call.task_id, call.attempt, "defer", cmd);
                self.write(record.into_iter().collect(), vec![pos], None);
            }
            Admission::Call { probe } => {
                let this = self.clone();
                calls.spawn(async move {
                    this.attempt(pos, call, host, cfg, probe).await;
                    drop(permit);
                });
            }
        }
    }

    /// One attempt: `StartTask` (durable before the call), the call, then its result.
    async fn attempt(
        &self,
        pos: Pos,
        call: Call,
        host: Option<String>,
        cfg: BreakerConfig,
        probe: bool,
    ) {
        let Call {
            task_id,
            attempt,
            request,
        } = call;
        let start = Command::StartTask {
            task_id: task_id.clone(),
            attempt,
            worker_id: WORKER_ID.into(),
            via: None,
            replaces: None,
        };
        let (done, durable) = oneshot::channel();
        let record = self.command(&task_id, attempt, "start", start);
        self.write(record.into_iter().collect(), Vec::new(), Some(done));
        if !matches!(durable.await, Ok(Ok(()))) {
            // The writer failed and the executor is stopping; the event is redelivered.
            return;
        }
        let called = call::perform(&self.client, &request, self.config.max_response_bytes).await;
        if let Some(host) = &host {
            let mut b = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            match called.breaker.clone() {
                Some(outcome) => {
                    if let Some(t) = b.record(host, &cfg, now_ms(), probe, outcome) {
                        self.publish(t);
                    }
                }
                None if probe => b.release_probe(host),
                None => {}
            }
        }
        let (verb, cmd) = match called.report {
            call::Report::Completed(output) => (
                "complete",
                Command::CompleteTask {
                    task_id: task_id.clone(),
                    attempt,
                    output,
                    metrics: Some(called.metrics),
                },
            ),
            call::Report::Failed {
                error,
                retry_after_ms,
            } => {
                tracing::debug!(%task_id, attempt, kind = %error.kind, message = %error.message, "http call failed");
                (
                    "fail",
                    Command::FailTask {
                        task_id: task_id.clone(),
                        attempt,
                        error,
                        retry_after_ms,
                        metrics: Some(called.metrics),
                    },
                )
            }
        };
        self.metrics.attempt(if verb == "complete" {
            "completed"
        } else {
            "failed"
        });
        let record = self.command(&task_id, attempt, verb, cmd);
        self.write(record.into_iter().collect(), vec![pos], None);
    }

    /// The command as a record on the commands topic, with an id derived from task id,
    /// attempt and verb (so a repeated call's commands are dropped by the engine).
    fn command(
        &self,
        task_id: &TaskId,
        attempt: u32,
        verb: &str,
        cmd: Command,
    ) -> Option<NewRecord> {
        let Some(key) = cmd.key() else {
            tracing::error!(%task_id, "malformed task id; its http attempt cannot be reported");
            return None;
        };
        let env = CommandEnvelope {
            id: CommandId::derived(&format!("http/{verb}/{task_id}/{attempt}")),
            reply_to: None,
            command: cmd,
        };
        let payload = serde_json::to_vec(&env).expect("commands serialise");
        Some(NewRecord::new(self.commands.clone(), key, payload))
    }

    fn publish(&self, t: BreakerTransition) {
        let state = serde_json::to_value(t.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        tracing::info!(host = %t.host, %state, reason = %t.reason, "circuit breaker transition");
        self.metrics
            .breaker_transitions
            .get_or_create(&vec![("state".into(), state)])
            .inc();
        let payload = serde_json::to_vec(&t).expect("transitions serialise");
        let record = NewRecord::new(self.breakers_topic.clone(), t.host, payload);
        self.write(vec![record], Vec::new(), None);
    }

    fn write(
        &self,
        records: Vec<NewRecord>,
        settles: Vec<Pos>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let w = Write {
            records,
            settles,
            done,
        };
        if let Err(mpsc::error::SendError(w)) = self.writes.send(w)
            && let Some(done) = w.done
        {
            let _ = done.send(Err("the writer has stopped".into()));
        }
    }
}

/// Records to append; once durable, `settles` are done and `done` is told.
struct Write {
    records: Vec<NewRecord>,
    settles: Vec<Pos>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Appends everything queued in one go. A retryable log error is retried (nothing is
/// acknowledged meanwhile); any other stops the writer, and with it the executor.
async fn write_loop(
    log: Arc<dyn EventLog>,
    mut queue: mpsc::UnboundedReceiver<Write>,
    offsets: Arc<Mutex<Offsets>>,
) -> Result<(), LogError> {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let mut n = batch[0].records.len();
        while n < MAX_APPEND {
            let Ok(next) = queue.try_recv() else { break };
            n += next.records.len();
            batch.push(next);
        }
        let records: Vec<NewRecord> = batch.iter().flat_map(|w| w.records.clone()).collect();
        let result = loop {
            if records.is_empty() {
                break Ok(());
            }
            match log.append(records.clone()).await {
                Ok(_) => break Ok(()),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "appending http results failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => break Err(e),
            }
        };
        if result.is_ok() {
            let mut tracker = offsets.lock().unwrap_or_else(|p| p.into_inner());
            for pos in batch.iter().flat_map(|w| &w.settles) {
                tracker.settle(pos);
            }
        }
        let ack = result.as_ref().map(drop).map_err(ToString::to_string);
        for w in batch {
            if let Some(done) = w.done {
                let _ = done.send(ack.clone());
            }
        }
        result?;
    }
    Ok(())
}

/// Which events' outcomes are durable, per partition.
#[derive(Debug, Default)]
struct Offsets {
    parts: HashMap<(String, u32), Part>,
}

#[derive(Debug, Default)]
struct Part {
    pending: BTreeSet<u64>,
    /// One past the highest offset polled.
    next: u64,
}

impl Offsets {
    fn polled(&mut self, (t, p, o): &Pos) {
        let part = self.parts.entry((t.clone(), *p)).or_default();
        part.pending.insert(*o);
        part.next = part.next.max(o + 1);
    }

    fn settle(&mut self, (t, p, o): &Pos) {
        if let Some(part) = self.parts.get_mut(&(t.clone(), *p)) {
            part.pending.remove(o);
        }
    }

    /// Per partition, the offset before which everything is settled.
    fn committable(&self) -> Vec<Pos> {
        self.parts
            .iter()
            .map(|((t, p), part)| {
                let upto = part.pending.first().copied().unwrap_or(part.next);
                (t.clone(), *p, upto)
            })
            .collect()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(o: u64) -> Pos {
        ("e".into(), 0, o)
    }

    #[test]
    fn offsets_commit_only_up_to_the_oldest_unsettled_event() {
        let mut o = Offsets::default();
        for i in 0..4 {
            o.polled(&pos(i));
        }
        o.settle(&pos(0));
        o.settle(&pos(2));
        assert_eq!(o.committable(), vec![pos(1)]);
        o.settle(&pos(1));
        assert_eq!(o.committable(), vec![pos(3)]);
        o.settle(&pos(3));
        assert_eq!(o.committable(), vec![pos(4)]);
    }

    #[test]
    fn the_breakers_topic_follows_the_prefix() {
        assert_eq!(breakers_topic(&Topics::default()), "distorch.breakers");
        assert_eq!(
            breakers_topic(&Topics::with_prefix("acme.distorch")),
            "acme.distorch.breakers"
        );
    }

    fn record(offset: u64, key: &str, event: Event) -> Record {
        let env = EventEnvelope {
            workflow_id: "00000000-0000-0000-0000-000000000001".parse().unwrap(),
            seq: offset + 1,
            at_ms: 0,
            command_id: None,
            v: 1,
            event,
        };
        Record {
            topic: "e".into(),
            partition: 0,
            offset,
            key: key.into(),
            headers: Vec::new(),
            payload: serde_json::to_vec(&env).unwrap(),
            timestamp_ms: 0,
        }
    }

    fn scheduled(task: &str, attempt: u32, http: bool) -> Event {
        Event::TaskScheduled {
            task_id: TaskId(task.into()),
            step_key: "s".into(),
            step_id: "s".into(),
            kind: distorch_domain::event::TaskKind::Step,
            task: "t".into(),
            queue: "q".into(),
            attempt,
            max_attempts: 3,
            input: serde_json::Value::Null,
            checkpoint: None,
            timeout_ms: 1000,
            heartbeat_timeout_ms: None,
            schedule_to_start_timeout_ms: None,
            http: http.then(|| HttpRequest {
                method: "GET".into(),
                url: "http://svc/".into(),
                headers: Default::default(),
                body: None,
                success: Vec::new(),
                timeout_ms: 1000,
                breaker: None,
            }),
        }
    }

    #[test]
    fn a_batch_calls_only_http_attempts_that_it_does_not_show_settled() {
        let w = "00000000-0000-0000-0000-000000000001";
        let t1 = format!("{w}.1");
        let t2 = format!("{w}.2");
        let records = vec![
            record(0, w, scheduled(&t1, 1, true)),
            record(1, w, scheduled("x.9", 1, false)),
            record(
                2,
                w,
                Event::TaskFailed {
                    task_id: TaskId(t1.clone()),
                    attempt: 1,
                    error: distorch_domain::command::ErrorInfo::new("http.5xx", "503"),
                    retry_at_ms: Some(5),
                    metrics: None,
                },
            ),
            record(3, w, scheduled(&t1, 2, true)),
            record(4, w, scheduled(&t2, 1, true)),
        ];
        let offsets = Mutex::new(Offsets::default());
        let calls = plan(&records, &offsets);
        let got: Vec<_> = calls
            .iter()
            .map(|(p, c)| (p.2, c.task_id.0.clone(), c.attempt))
            .collect();
        assert_eq!(got, vec![(3, t1, 2), (4, t2, 1)]);
        assert_eq!(
            offsets.lock().unwrap().committable(),
            vec![pos(3)],
            "settled events before the first pending call are committable"
        );
    }
}
