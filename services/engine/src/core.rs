//! The engine's rules as a synchronous state machine: [`Core`]. No I/O: inputs are command
//! records, the clock, restored partition state and definitions; the output is data, the
//! records to append in one group commit (events, task dispatches, replies, registered
//! definitions, dead letters, forwarded commands). The driver ([`crate::Engine`]) polls,
//! appends, commits offsets, reads snapshots and replays; every decision is made here and
//! tested given/when/then through this type (`tests/core.rs`).
//!
//! What it holds: the runs of the partitions the driver says it owns (full state while they
//! run, id, status and last sequence number once ended), their timers, and the registry of
//! definitions.

use crate::metrics::{self, Metrics};
use crate::registry::Registry;
use crate::snapshot::{EndedRun, Image};
use crate::timers::Timers;
use distorch_domain::command::{
    Answer, Command, CommandEnvelope, ErrorInfo, Outcome, Rejection, Reply,
};
use distorch_domain::event::{DefinitionRegistered, Event, EventEnvelope, SCHEMA_VERSION};
use distorch_domain::topics::Topics;
use distorch_domain::workflow::{DefinitionSource, Status, Workflow, answer_ended, evolve, handle};
use distorch_domain::{CommandId, WorkflowId};
use distorch_eventlog::{NewRecord, Record, partition_for};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};

/// What the engine keeps of a run that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The terminal status the run ended in.
    pub status: Status,
    /// Sequence number of the run's last event; late commands are answered with it.
    pub last_seq: u64,
}

/// The engine's state and rules (see the module docs).
pub struct Core {
    topics: Topics,
    metrics: Metrics,
    registry: Registry,
    /// Partitions of the commands (and events) topic.
    partitions: u32,
    runs: HashMap<WorkflowId, Workflow>,
    /// Runs that have ended, by id; their full state is dropped.
    ended: HashMap<WorkflowId, Ended>,
    timers: Timers,
}

/// A command record as polled, decoded once: the command, or why the record is not one.
#[derive(Debug)]
pub struct Incoming {
    /// The record as it was polled.
    pub record: Record,
    command: Result<CommandEnvelope, String>,
}

impl From<Record> for Incoming {
    fn from(record: Record) -> Self {
        let command = serde_json::from_slice(&record.payload).map_err(|e| e.to_string());
        Self { record, command }
    }
}

/// Records to append, at once, before the commands that produced them count as handled.
#[derive(Debug, Default)]
pub struct Output {
    /// Events, task dispatches, replies, registered definitions, dead letters and forwarded
    /// commands, in the order they were decided.
    pub records: Vec<NewRecord>,
    /// Runs whose timers must be derived again from their state.
    touched: HashSet<WorkflowId>,
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types always serialise")
}

impl Core {
    /// An engine owning no partition yet of a `partitions`-partition commands topic.
    pub fn new(topics: Topics, partitions: u32, metrics: Metrics) -> Self {
        Self {
            topics,
            metrics,
            registry: Registry::default(),
            partitions,
            runs: HashMap::new(),
            ended: HashMap::new(),
            timers: Timers::default(),
        }
    }

    // ----- definitions -----

    /// Folds a definition registered on the log (by any engine) into the registry.
    pub fn add_definition(&mut self, reg: &DefinitionRegistered) {
        if self
            .registry
            .definition(&reg.name, Some(reg.version))
            .is_none()
        {
            self.registry.add(reg);
        }
    }

    /// Whether some command in `commands` starts a run on a definition (version) this engine
    /// has not seen: the driver reads the definitions registered since before handling them.
    pub fn needs_definitions(&self, commands: &[Incoming]) -> bool {
        commands.iter().any(|c| match &c.command {
            Ok(CommandEnvelope {
                command:
                    Command::StartWorkflow {
                        definition,
                        version,
                        ..
                    },
                ..
            }) => self.registry.definition(definition, *version).is_none(),
            _ => false,
        })
    }

    // ----- commands and timers -----

    /// Handles a batch of commands (of partitions this engine owns), then fires the timers
    /// due at `now`.
    pub fn handle(&mut self, commands: &[Incoming], now: i64) -> Output {
        let mut out = Output::default();
        for Incoming {
            record: rec,
            command,
        } in commands
        {
            self.metrics.commands.inc();
            match command {
                Ok(cmd) => match self.misplaced(rec, cmd) {
                    Some(key) => self.forward(rec, key, &mut out),
                    None => {
                        if let Some(rejection) = self.apply(cmd, now, &mut out) {
                            self.undeliverable(rec, cmd, &rejection, &mut out);
                        }
                    }
                },
                Err(e) => self.dead_letter(rec, &format!("malformed command: {e}"), &mut out),
            }
        }
        for (run, timer) in self.timers.take_due(now) {
            let cmd = CommandEnvelope {
                id: CommandId::derived(&format!("timer/{run}/{timer:?}")),
                reply_to: None,
                command: Command::FireTimer {
                    workflow_id: run,
                    timer,
                },
            };
            // A timer of a run is fired by the run's own engine: nothing to dead-letter.
            let _ = self.apply(&cmd, now, &mut out);
        }
        for run in std::mem::take(&mut out.touched) {
            let timers = self
                .runs
                .get(&run)
                .map(Workflow::timers)
                .unwrap_or_default();
            self.timers.set(run, timers);
        }
        self.metrics.runs_in_memory.set(self.runs.len() as i64);
        self.metrics.timers.set(self.timers.len() as i64);
        out
    }

    /// The earliest timer deadline (ms since the epoch), if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.next_deadline()
    }

    /// The key `cmd` should have been published under, when its record sits on another
    /// partition than that key's: a client outside DisTorch keyed it differently (or used
    /// another partitioner). The run's owner is the owner of the key's partition.
    fn misplaced(&self, rec: &Record, cmd: &CommandEnvelope) -> Option<String> {
        let key = cmd.command.key()?;
        (partition_for(&key, self.partitions) != rec.partition).then_some(key)
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

    /// A command rejected as invalid or naming something unknown (a definition that is not
    /// registered, an input failing its schema, a run that does not exist) can never succeed.
    /// When it carries no `reply_to`, typically because another service published it straight
    /// onto the commands topic, nobody would learn why it did nothing: it goes to the DLQ.
    /// Conflicts (a stale attempt, a verb in the wrong status) are the normal traffic of
    /// at-least-once delivery and are not dead letters. Commands the engine and the saga
    /// processor derive themselves answer their own rejections (see `apply`).
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

    fn reject(&self, cmd: &CommandEnvelope, rejection: Rejection, out: &mut Output) -> Rejection {
        self.metrics.commands_rejected.inc();
        self.reply(
            cmd,
            Outcome::Rejected {
                rejection: rejection.clone(),
            },
            out,
        );
        rejection
    }

    /// Applies one command; returns its rejection, if it was rejected (after answering it).
    fn apply(&mut self, cmd: &CommandEnvelope, now: i64, out: &mut Output) -> Option<Rejection> {
        if let Command::RegisterDefinition { source } = &cmd.command {
            return self.register(cmd, source, now, out);
        }
        let Some(run) = cmd.command.workflow_id() else {
            let r =
                Rejection::NotFound(format!("{} names a malformed task id", cmd.command.name()));
            return Some(self.reject(cmd, r, out));
        };
        if let Some(ended) = self.ended.get(&run).copied() {
            // Only id and status are kept of an ended run: enough to answer anything late.
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
            return None;
        }
        let mut slot = self.runs.remove(&run);
        let result = handle(&mut slot, cmd, &self.registry, now);
        if let Some(wf) = slot {
            self.runs.insert(run, wf);
        }
        match result {
            Ok(decision) => {
                let wf = self
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
                    self.runs.remove(&run);
                    self.ended.insert(run, Ended { status, last_seq });
                }
                None
            }
            Err(rejection) => {
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
                    out.records.push(NewRecord::new(
                        self.topics.commands(),
                        parent.workflow_id.to_string(),
                        json_bytes(&notice),
                    ));
                }
                Some(self.reject(cmd, rejection, out))
            }
        }
    }

    fn register(
        &mut self,
        cmd: &CommandEnvelope,
        source: &serde_json::Value,
        now: i64,
        out: &mut Output,
    ) -> Option<Rejection> {
        if let Some((name, version)) = self.registry.applied(&cmd.id) {
            let result = Answer::Registered {
                name: name.clone(),
                version: *version,
                unchanged: false,
            };
            self.reply(cmd, Outcome::Accepted { seq: 0, result }, out);
            return None;
        }
        let name = source
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let version = self.registry.next_version(name);
        match distorch_domain::definition::Definition::from_source(source, version) {
            Ok(def) => {
                // A document identical to the latest version is that version, as a deployment
                // of an unchanged process is in Camunda: applying the same file again (a CI
                // pipeline, a retried apply) must not mint versions that differ in nothing.
                if let Some(latest) = self.registry.definition(&def.name, None)
                    && latest.source == def.source
                {
                    let result = Answer::Registered {
                        name: def.name,
                        version: latest.version,
                        unchanged: true,
                    };
                    self.reply(cmd, Outcome::Accepted { seq: 0, result }, out);
                    return None;
                }
                let reg = DefinitionRegistered {
                    name: def.name.clone(),
                    command_id: Some(cmd.id.clone()),
                    version,
                    at_ms: now,
                    source: def.source.clone(),
                    v: SCHEMA_VERSION,
                };
                self.registry.add(&reg);
                out.records.push(NewRecord::new(
                    self.topics.definitions(),
                    reg.name.clone(),
                    json_bytes(&reg),
                ));
                let result = Answer::Registered {
                    name: reg.name,
                    version,
                    unchanged: false,
                };
                self.reply(cmd, Outcome::Accepted { seq: 0, result }, out);
                None
            }
            Err(e) => Some(self.reject(cmd, Rejection::Invalid(e.to_string()), out)),
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

    // ----- partitions -----

    /// Takes in a partition's snapshot; returns how many runs it restored.
    pub fn restore(&mut self, image: Image) -> usize {
        let mut restored = 0;
        for snap in image.runs {
            match Workflow::restore(snap, &self.registry) {
                Ok(wf) => {
                    self.runs.insert(wf.id, wf);
                    restored += 1;
                    self.metrics.runs_restored.inc();
                }
                Err(e) => tracing::error!(error = %e, "run in snapshot not restored"),
            }
        }
        for e in image.ended {
            self.ended.insert(
                e.id,
                Ended {
                    status: e.status,
                    last_seq: e.last_seq,
                },
            );
        }
        restored
    }

    /// Folds one event written after the restored snapshot.
    pub fn fold(&mut self, env: &EventEnvelope) {
        if self.ended.contains_key(&env.workflow_id) {
            return;
        }
        if let Some(wf) = self.runs.get_mut(&env.workflow_id) {
            return evolve(wf, env);
        }
        let Event::WorkflowStarted {
            definition,
            version,
            ..
        } = &env.event
        else {
            tracing::error!(run = %env.workflow_id, seq = env.seq,
                "event of a run neither started nor snapshotted; ignored");
            return;
        };
        match self.registry.definition(definition, Some(*version)) {
            Some(def) => {
                if let Some(wf) = Workflow::new(env, def) {
                    self.runs.insert(env.workflow_id, wf);
                }
            }
            None => tracing::error!(run = %env.workflow_id, %definition, version,
                "run's definition is missing from the log; run skipped"),
        }
    }

    /// Partition `p` is restored (snapshot and events folded): ended runs shrink to what an
    /// ended run keeps, the runs' timers are armed, and every attempt waiting for a worker is
    /// offered again. On Kafka an attempt's `TaskScheduled` event and its `tasks.<queue>`
    /// record are two produce requests, and an engine killed between them leaves an attempt
    /// no worker would ever see; a duplicate offer is harmless (the engine accepts one
    /// `StartTask` per attempt).
    pub fn acquired(&mut self, p: u32) -> Output {
        let n = self.partitions;
        let ended: Vec<WorkflowId> = self
            .runs
            .iter()
            .filter(|(id, wf)| wf.terminal.is_some() && partition_for(&id.to_string(), n) == p)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if let Some(wf) = self.runs.remove(&id) {
                let status = wf.terminal.unwrap_or(Status::Completed);
                let last_seq = wf.last_seq;
                self.ended.insert(id, Ended { status, last_seq });
            }
        }
        let mut out = Output::default();
        for (id, wf) in &self.runs {
            let key = id.to_string();
            if partition_for(&key, n) != p {
                continue;
            }
            self.timers.set(*id, wf.timers());
            for d in wf.pending_dispatches() {
                out.records.push(NewRecord::new(
                    self.topics.tasks(&d.queue),
                    key.clone(),
                    json_bytes(&d),
                ));
            }
        }
        self.metrics
            .tasks_reoffered
            .inc_by(out.records.len() as u64);
        self.metrics.runs_in_memory.set(self.runs.len() as i64);
        self.metrics.timers.set(self.timers.len() as i64);
        out
    }

    /// Forgets the runs and timers of partitions another engine now owns; returns how many
    /// live runs were dropped.
    pub fn release(&mut self, partitions: &[u32]) -> usize {
        let n = self.partitions;
        let gone = |id: &WorkflowId| partitions.contains(&partition_for(&id.to_string(), n));
        let runs: Vec<WorkflowId> = self.runs.keys().filter(|id| gone(id)).copied().collect();
        for id in &runs {
            self.runs.remove(id);
            self.timers.set(*id, Vec::new());
        }
        self.ended.retain(|id, _| !gone(id));
        self.metrics.runs_in_memory.set(self.runs.len() as i64);
        self.metrics.timers.set(self.timers.len() as i64);
        runs.len()
    }

    /// The state of partition `p` as snapshot data: its live runs (serialised) and its ended
    /// runs.
    pub fn snapshot(&self, p: u32) -> (Vec<Box<RawValue>>, Vec<EndedRun>) {
        let n = self.partitions;
        let runs = self
            .runs
            .values()
            .filter(|wf| partition_for(&wf.id.to_string(), n) == p)
            .map(|wf| {
                serde_json::value::to_raw_value(&wf.snapshot()).expect("run snapshots serialise")
            })
            .collect();
        let ended = self
            .ended
            .iter()
            .filter(|(id, _)| partition_for(&id.to_string(), n) == p)
            .map(|(id, e)| EndedRun {
                id: *id,
                status: e.status,
                last_seq: e.last_seq,
            })
            .collect();
        (runs, ended)
    }

    // ----- observation (for tests and metrics) -----

    /// The full state of a run this engine holds (not ended).
    pub fn run(&self, id: WorkflowId) -> Option<&Workflow> {
        self.runs.get(&id)
    }

    /// What is kept of an ended run.
    pub fn ended(&self, id: WorkflowId) -> Option<Ended> {
        self.ended.get(&id).copied()
    }

    /// Number of timers armed.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Partitions of the commands topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }
}
