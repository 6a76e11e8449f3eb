//! The engine: the command handlers of DisTorch. It owns runs (one writer per partition),
//! turns commands into events with the pure `distorch_domain::workflow::handle`, keeps the
//! runs' timers, and appends each batch's output (events, task dispatches, replies,
//! registered definitions, dead letters) to the log in one group commit.
//!
//! It talks to nothing but the [`EventLog`] port: no HTTP, no read models. Entry point:
//! [`Engine::run`].
//!
//! Crash safety: the engine commits its command offsets only after the batch's output is
//! durable. After a crash the uncommitted commands come back; every run remembers the
//! command ids it applied (they are in its events), so a redelivered command is answered
//! again but changes nothing.

mod metrics;
mod partitions;
mod registry;
pub mod snapshot;
mod timers;

pub use metrics::Metrics;

use distorch_domain::command::{
    Answer, Command, CommandEnvelope, ErrorInfo, Outcome, Rejection, Reply,
};
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope, SCHEMA_VERSION};
use distorch_domain::topics::Topics;
use distorch_domain::workflow::{Status, Workflow, answer_ended, handle};
use distorch_domain::{CommandId, WorkflowId};
use distorch_eventlog::offsets::COMMIT_INTERVAL;
use distorch_eventlog::offsets::PacedCommits;
use distorch_eventlog::{Consumer, EventLog, LogError, NewRecord, Record, partition_for};
use registry::Registry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use timers::Timers;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Partitions of the commands, events, replies and task topics (when it creates them).
    pub partitions: u32,
    /// Most commands handled per group commit.
    pub batch: usize,
    /// Consumer group of the engines on the commands topic.
    pub group: String,
    /// Events appended to a partition between two snapshots of it (0: never snapshot).
    pub snapshot_every: u64,
    /// A commands partition that no engine of the group consumes for this long (records
    /// waiting, committed offset not moving) makes this engine leave and rejoin the group,
    /// which forces a rebalance: a guard against brokers that lose a dead member's share
    /// (seen with tansu 0.6.0), kept by the log backend ([`Consumer::rejoin_when_orphaned`]);
    /// 0 turns it off.
    pub orphan_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            partitions: 8,
            batch: 2000,
            group: "engine".into(),
            snapshot_every: 20_000,
            orphan_timeout_ms: 15_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("undecodable record in {topic}[{partition}]@{offset}: {reason}")]
    Corrupt {
        topic: String,
        partition: u32,
        offset: u64,
        reason: String,
    },
}

pub struct Engine {
    log: Arc<dyn EventLog>,
    topics: Topics,
    config: EngineConfig,
    metrics: Metrics,
}

/// What one batch produces, appended at once.
#[derive(Default)]
struct Output {
    records: Vec<NewRecord>,
    touched: HashSet<WorkflowId>,
}

/// What the engine keeps of a run that has ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    status: Status,
    last_seq: u64,
}

struct State {
    registry: Registry,
    /// Next offset of the definitions topic to fold into `registry`.
    definitions_next: u64,
    /// Partitions of the commands (and events) topic.
    partitions: u32,
    /// Commands partitions this engine owns, with their snapshot bookkeeping.
    owned: BTreeMap<u32, partitions::Owned>,
    /// Runs that have ended, by id; their full state is dropped.
    ended: HashMap<WorkflowId, Ended>,
    /// Offsets of commands handled (their output durable), committed every
    /// [`COMMIT_INTERVAL`].
    commits: PacedCommits,
    runs: HashMap<WorkflowId, Workflow>,
    timers: Timers,
    queues: HashSet<String>,
}

/// Creates every topic DisTorch's services read before the first write (idempotent), so a
/// process may start before the engine: `partitions` for the per-run topics, one for
/// definitions and dead letters.
pub async fn ensure_topics(
    log: &dyn EventLog,
    topics: &Topics,
    partitions: u32,
) -> Result<(), LogError> {
    let p = partitions;
    for (topic, n) in [
        (topics.commands(), p),
        (topics.events(), p),
        (topics.replies(), p),
        (topics.snapshots(), p),
        (topics.definitions(), 1),
        (topics.dlq(), 1),
    ] {
        log.create_topic(&topic, n).await?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types always serialise")
}

impl Engine {
    pub fn new(
        log: Arc<dyn EventLog>,
        topics: Topics,
        config: EngineConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            log,
            topics,
            config,
            metrics,
        }
    }

    /// Creates the topics the engine writes (idempotent).
    pub async fn ensure_topics(&self) -> Result<(), EngineError> {
        Ok(ensure_topics(self.log.as_ref(), &self.topics, self.config.partitions).await?)
    }

    /// Runs until `shutdown` resolves, finishing the batch in hand.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        self.ensure_topics().await?;
        let mut consumer = self
            .log
            .consumer(&self.config.group, &[self.topics.commands()])
            .await?;
        // The engines handle every command they poll at once, so a partition whose commit
        // stands still with commands waiting has lost its engine.
        consumer.rejoin_when_orphaned(Duration::from_millis(self.config.orphan_timeout_ms));
        let mut state = State {
            registry: Registry::default(),
            definitions_next: 0,
            partitions: self.log.partitions(&self.topics.commands()).await?,
            owned: BTreeMap::new(),
            ended: HashMap::new(),
            commits: PacedCommits::new(COMMIT_INTERVAL),
            runs: HashMap::new(),
            timers: Timers::default(),
            queues: HashSet::new(),
        };
        self.catch_up_definitions(&mut state).await?;
        self.follow_assignment(&mut state, consumer.assignment())
            .await?;
        tokio::pin!(shutdown);
        let mut last_lag = std::time::Instant::now() - Duration::from_secs(5);
        loop {
            let now = now_ms();
            let wait = state
                .timers
                .next_deadline()
                .map_or(1000, |at| (at - now).clamp(0, 1000)) as u64;
            let records = tokio::select! {
                r = consumer.poll(self.config.batch, Duration::from_millis(wait)) => r?,
                () = &mut shutdown => break,
            };
            // A rebalance happens inside `poll`: take over (or let go of) partitions before
            // handling their commands.
            self.follow_assignment(&mut state, consumer.assignment())
                .await?;
            self.process(&mut state, &mut *consumer, records).await?;
            self.snapshot_due(&mut state).await?;
            if last_lag.elapsed() > Duration::from_secs(1) {
                last_lag = std::time::Instant::now();
                self.update_lag(&consumer.assignment()).await;
            }
        }
        Self::commit(&mut state, &mut *consumer).await;
        // The next owner starts from here instead of replaying.
        self.snapshot_all(&mut state).await?;
        tracing::info!("engine stopped");
        Ok(())
    }

    async fn process(
        &self,
        state: &mut State,
        consumer: &mut dyn Consumer,
        records: Vec<Record>,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        let mut out = Output::default();
        let commands: Vec<(&Record, Option<CommandEnvelope>)> = records
            .iter()
            .filter(|r| state.owned.contains_key(&r.partition))
            .map(|r| (r, serde_json::from_slice(&r.payload).ok()))
            .collect();
        // A start may name a definition another engine registered a moment ago.
        if commands
            .iter()
            .any(|(_, c)| c.as_ref().is_some_and(|c| self.needs_definition(state, c)))
        {
            self.catch_up_definitions(state).await?;
        }
        for (rec, cmd) in &commands {
            state
                .commits
                .handled_before(&rec.topic, rec.partition, rec.offset + 1);
            self.metrics.commands.inc();
            match cmd {
                Some(cmd) => match self.misplaced(state, rec, cmd) {
                    Some(key) => self.forward(rec, key, &mut out),
                    None => {
                        if let Some(rejection) = self.handle_command(state, cmd, now, &mut out) {
                            self.undeliverable(rec, cmd, &rejection, &mut out);
                        }
                    }
                },
                None => self.malformed(rec, &mut out),
            }
        }
        for (run, timer) in state.timers.take_due(now) {
            let cmd = CommandEnvelope {
                id: CommandId::derived(&format!("timer/{run}/{timer:?}")),
                reply_to: None,
                command: Command::FireTimer {
                    workflow_id: run,
                    timer,
                },
            };
            // A timer of a run is fired by the run's own engine: nothing to dead-letter.
            let _ = self.handle_command(state, &cmd, now, &mut out);
        }
        for run in out.touched.drain() {
            let timers = state
                .runs
                .get(&run)
                .map(Workflow::timers)
                .unwrap_or_default();
            state.timers.set(run, timers);
        }
        if !out.records.is_empty() {
            self.ensure_queue_topics(state, &out.records).await?;
            let records = std::mem::take(&mut out.records);
            let events = self.topics.events();
            let appended: Vec<bool> = records.iter().map(|r| r.topic == events).collect();
            let positions = self.log.append(records).await?;
            for (pos, _) in positions.iter().zip(appended).filter(|(_, e)| *e) {
                if let Some(owned) = state.owned.get_mut(&pos.partition) {
                    owned.appended(pos.offset);
                }
            }
        }
        // Offsets are committed on an interval, not per batch: a commit is one more fsync on
        // the path of every command, and redelivery after a crash is harmless (runs remember
        // the command ids they applied).
        if let Err(e) = state.commits.commit_due(consumer).await {
            tracing::warn!(error = %e, "committing command offsets failed; will retry");
        }
        self.metrics.runs_in_memory.set(state.runs.len() as i64);
        self.metrics.timers.set(state.timers.len() as i64);
        Ok(())
    }

    /// Commits every handled command now. A failed commit only means those commands come
    /// back after a restart or a rebalance, where their ids make them no-ops: keep going.
    async fn commit(state: &mut State, consumer: &mut dyn Consumer) {
        if let Err(e) = state.commits.commit_rest(consumer).await {
            tracing::warn!(error = %e, "committing command offsets failed; will retry");
        }
    }

    async fn ensure_queue_topics(
        &self,
        state: &mut State,
        records: &[NewRecord],
    ) -> Result<(), EngineError> {
        let prefix = self.topics.tasks("");
        for r in records {
            if r.topic.starts_with(&prefix) && !state.queues.contains(&r.topic) {
                self.log
                    .create_topic(&r.topic, self.config.partitions)
                    .await?;
                state.queues.insert(r.topic.clone());
            }
        }
        Ok(())
    }

    /// The key `cmd` should have been published under, when its record sits on another
    /// partition than that key's: a client outside DisTorch keyed it differently (or used
    /// another partitioner). The run's owner is the owner of the key's partition.
    fn misplaced(&self, state: &State, rec: &Record, cmd: &CommandEnvelope) -> Option<String> {
        let key = cmd.command.key()?;
        (partition_for(&key, state.partitions) != rec.partition).then_some(key)
    }

    /// Re-publishes a misplaced command under its proper key: forwarded, never dropped.
    fn forward(&self, rec: &Record, key: String, out: &mut Output) {
        self.metrics.commands_forwarded.inc();
        tracing::debug!(partition = rec.partition, offset = rec.offset, %key, "command forwarded to its run's partition");
        let mut r = NewRecord::new(rec.topic.clone(), key, rec.payload.clone());
        r.headers = rec.headers.clone();
        r.headers.push((
            "forwarded-from".into(),
            format!("{}[{}]@{}", rec.topic, rec.partition, rec.offset),
        ));
        out.records.push(r);
    }

    fn malformed(&self, rec: &Record, out: &mut Output) {
        let reason = match serde_json::from_slice::<CommandEnvelope>(&rec.payload) {
            Err(e) => format!("malformed command: {e}"),
            Ok(_) => "malformed command".to_string(),
        };
        self.dead_letter(rec, &reason, out);
    }

    /// A command rejected as invalid or naming something unknown (a definition that is not
    /// registered, an input failing its schema, a run that does not exist) can never succeed.
    /// When it carries no `reply_to`, typically because another service published it straight
    /// onto the commands topic, nobody would learn why it did nothing: it goes to the DLQ.
    /// Conflicts (a stale attempt, a verb in the wrong status) are the normal traffic of
    /// at-least-once delivery and are not dead letters. Commands the engine and the saga
    /// processor derive themselves answer their own rejections (see `handle_command`).
    fn undeliverable(
        &self,
        rec: &Record,
        cmd: &CommandEnvelope,
        rejection: &Rejection,
        out: &mut Output,
    ) {
        let internal = matches!(
            cmd.command,
            Command::StartWorkflow {
                parent: Some(_),
                ..
            } | Command::ChildFinished { .. }
                | Command::FireTimer { .. }
        );
        let reason = match rejection {
            _ if cmd.reply_to.is_some() || internal => return,
            Rejection::Conflict(_) => return,
            Rejection::Invalid(why) => format!("invalid {}: {why}", cmd.command.name()),
            Rejection::NotFound(why) => {
                format!("{} names nothing known: {why}", cmd.command.name())
            }
        };
        self.dead_letter(rec, &reason, out);
    }

    /// Moves `rec` to the DLQ, unchanged, with `reason` and `source` headers.
    fn dead_letter(&self, rec: &Record, reason: &str, out: &mut Output) {
        self.metrics.commands_dead_lettered.inc();
        tracing::warn!(partition = rec.partition, offset = rec.offset, %reason, "command moved to the DLQ");
        let mut r = NewRecord::new(self.topics.dlq(), rec.key.clone(), rec.payload.clone());
        r.headers = rec.headers.clone();
        r.headers.push(("reason".into(), reason.to_string()));
        r.headers.push((
            "source".into(),
            format!("{}[{}]@{}", rec.topic, rec.partition, rec.offset),
        ));
        out.records.push(r);
    }

    fn reply(&self, cmd: &CommandEnvelope, outcome: Outcome, out: &mut Output) {
        if let Some(to) = &cmd.reply_to {
            let reply = Reply {
                command_id: cmd.id.clone(),
                outcome,
            };
            out.records.push(NewRecord::new(
                self.topics.replies(),
                to.clone(),
                json_bytes(&reply),
            ));
        }
    }

    /// Applies one command; returns its rejection, if it was rejected (after answering it).
    fn handle_command(
        &self,
        state: &mut State,
        cmd: &CommandEnvelope,
        now: i64,
        out: &mut Output,
    ) -> Option<Rejection> {
        if let Command::RegisterDefinition { source } = &cmd.command {
            return self.register(state, cmd, source, now, out);
        }
        let Some(run) = cmd.command.workflow_id() else {
            self.metrics.commands_rejected.inc();
            let r =
                Rejection::NotFound(format!("{} names a malformed task id", cmd.command.name()));
            self.reply(
                cmd,
                Outcome::Rejected {
                    rejection: r.clone(),
                },
                out,
            );
            return Some(r);
        };
        if let Some(ended) = state.ended.get(&run) {
            self.answer_ended(run, *ended, cmd, out);
            return None;
        }
        let mut slot = state.runs.remove(&run);
        let result = handle(&mut slot, cmd, &state.registry, now);
        if let Some(wf) = slot {
            state.runs.insert(run, wf);
        }
        match result {
            Ok(decision) => {
                let wf = state
                    .runs
                    .get(&run)
                    .expect("a run exists after an accepted command");
                for env in &decision.events {
                    self.record_event(wf, env, now, out);
                }
                if !decision.events.is_empty() {
                    out.touched.insert(run);
                }
                let outcome = Outcome::Accepted {
                    seq: wf.last_seq,
                    result: decision.result,
                };
                self.reply(cmd, outcome, out);
                if let Some(status) = wf.terminal {
                    // An ended run only answers; its full state is not needed any more.
                    let last_seq = wf.last_seq;
                    state.runs.remove(&run);
                    state.ended.insert(run, Ended { status, last_seq });
                }
                None
            }
            Err(rejection) => {
                self.metrics.commands_rejected.inc();
                tracing::debug!(command = cmd.command.name(), %run, %rejection, "command rejected");
                if let Command::StartWorkflow {
                    parent: Some(parent),
                    workflow_id,
                    ..
                } = &cmd.command
                {
                    // The parent waits for this child: tell it the child never started.
                    let notice = CommandEnvelope {
                        id: CommandId::derived(&format!("child-start-rejected/{}", cmd.id)),
                        reply_to: None,
                        command: Command::ChildFinished {
                            workflow_id: parent.workflow_id,
                            step_key: parent.step_key.clone(),
                            child_id: *workflow_id,
                            output: None,
                            error: Some(ErrorInfo {
                                kind: "child.start".into(),
                                message: rejection.to_string(),
                                retryable: false,
                            }),
                        },
                    };
                    let key = parent.workflow_id.to_string();
                    out.records.push(NewRecord::new(
                        self.topics.commands(),
                        key,
                        json_bytes(&notice),
                    ));
                }
                self.reply(
                    cmd,
                    Outcome::Rejected {
                        rejection: rejection.clone(),
                    },
                    out,
                );
                Some(rejection)
            }
        }
    }

    /// Commands for a run that has ended are answered from what is kept of it
    /// ([`distorch_domain::workflow::answer_ended`]).
    fn answer_ended(&self, run: WorkflowId, ended: Ended, cmd: &CommandEnvelope, out: &mut Output) {
        let outcome = match answer_ended(run, ended.status, &cmd.command) {
            Ok(result) => Outcome::Accepted {
                seq: ended.last_seq,
                result,
            },
            Err(rejection) => {
                self.metrics.commands_rejected.inc();
                Outcome::Rejected { rejection }
            }
        };
        self.reply(cmd, outcome, out);
    }

    fn register(
        &self,
        state: &mut State,
        cmd: &CommandEnvelope,
        source: &serde_json::Value,
        now: i64,
        out: &mut Output,
    ) -> Option<Rejection> {
        if let Some((name, version)) = state.registry.applied(&cmd.id) {
            let result = Answer::Registered {
                name: name.to_owned(),
                version: *version,
            };
            self.reply(cmd, Outcome::Accepted { seq: 0, result }, out);
            return None;
        }
        let name = source
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let version = state.registry.next_version(name);
        match distorch_domain::definition::Definition::from_source(source, version) {
            Ok(def) => {
                let reg = DefinitionRegistered {
                    name: def.name.clone(),
                    command_id: Some(cmd.id.clone()),
                    version,
                    at_ms: now,
                    source: def.source.clone(),
                    v: SCHEMA_VERSION,
                };
                state.registry.add(&reg);
                out.records.push(NewRecord::new(
                    self.topics.definitions(),
                    reg.name.clone(),
                    json_bytes(&reg),
                ));
                let result = Answer::Registered {
                    name: reg.name,
                    version,
                };
                self.reply(cmd, Outcome::Accepted { seq: 0, result }, out);
                None
            }
            Err(e) => {
                self.metrics.commands_rejected.inc();
                let rejection = Rejection::Invalid(e.to_string());
                self.reply(
                    cmd,
                    Outcome::Rejected {
                        rejection: rejection.clone(),
                    },
                    out,
                );
                Some(rejection)
            }
        }
    }

    /// Queues an event for the log, plus the task dispatch it implies, and counts it.
    fn record_event(&self, wf: &Workflow, env: &EventEnvelope, now: i64, out: &mut Output) {
        let key = wf.id.to_string();
        out.records.push(NewRecord::new(
            self.topics.events(),
            key.clone(),
            json_bytes(env),
        ));
        match &env.event {
            Event::WorkflowStarted { .. } => {
                self.metrics.runs_started.inc();
            }
            Event::TaskScheduled {
                task_id, attempt, ..
            } => {
                // A task parked or cancelled by the same decision is not offered to workers,
                // and an `http` step's call is made by the saga processor, not a worker.
                let Some(dispatch) = wf
                    .tasks
                    .get(task_id)
                    .filter(|t| t.attempt == *attempt)
                    .and_then(|t| t.dispatch(wf.id))
                else {
                    return;
                };
                let queue = &dispatch.queue;
                out.records.push(NewRecord::new(
                    self.topics.tasks(queue),
                    key,
                    json_bytes(&dispatch),
                ));
                self.metrics
                    .tasks_dispatched
                    .get_or_create(&metrics::QueueLabel {
                        queue: queue.clone(),
                    })
                    .inc();
            }
            Event::TaskFailed { task_id, .. } => {
                if let Some(t) = wf.tasks.get(task_id) {
                    self.metrics
                        .attempts_failed
                        .get_or_create(&metrics::QueueLabel {
                            queue: t.queue.clone(),
                        })
                        .inc();
                }
            }
            Event::TaskCompleted { task_id, .. } => {
                if let Some(t) = wf.tasks.get(task_id) {
                    self.metrics
                        .step_latency
                        .observe((now - t.scheduled_ms).max(0) as f64 / 1000.0);
                }
            }
            e if e.is_terminal() => {
                let status = wf.status().as_str().to_string();
                self.metrics
                    .runs_finished
                    .get_or_create(&metrics::StatusLabel { status })
                    .inc();
                self.metrics
                    .run_latency
                    .observe((now - wf.created_ms).max(0) as f64 / 1000.0);
            }
            _ => {}
        }
    }

    async fn update_lag(&self, assignment: &[(String, u32)]) {
        let mut lag = 0i64;
        for (topic, p) in assignment {
            let end = self.log.end_offset(topic, *p).await.unwrap_or(0);
            let done = self
                .log
                .committed(&self.config.group, topic, *p)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            lag += end.saturating_sub(done) as i64;
        }
        self.metrics.command_lag.set(lag);
    }
}

fn decode<T: serde::de::DeserializeOwned>(rec: &Record) -> Result<T, EngineError> {
    serde_json::from_slice(&rec.payload).map_err(|e| EngineError::Corrupt {
        topic: rec.topic.clone(),
        partition: rec.partition,
        offset: rec.offset,
        reason: e.to_string(),
    })
}
