#![warn(missing_docs)]
//! The engine: the command handlers of DisTorch. It owns runs (one writer per partition),
//! turns commands into events with the pure `distorch_domain::workflow::handle`, keeps the
//! runs' timers, and appends each batch's output (events, task dispatches, replies,
//! registered definitions, dead letters) to the log in one group commit.
//!
//! Two layers: [`Core`] decides (a synchronous state machine: command records, the clock,
//! restored partitions and definitions in; records to append out; no I/O), and [`Engine`]
//! drives it over the [`EventLog`] port: polls, appends, commits offsets, restores
//! partitions from snapshots and writes them. No HTTP, no read models. Entry point:
//! [`Engine::run`].
//!
//! Crash safety: the engine commits its command offsets only after the batch's output is
//! durable. After a crash the uncommitted commands come back; every run remembers the
//! command ids it applied (they are in its events), so a redelivered command is answered
//! again but changes nothing.

pub mod core;
mod metrics;
mod partitions;
mod registry;
pub mod snapshot;
mod timers;

pub use crate::core::{Core, Ended, Incoming, Output};
pub use metrics::Metrics;

use distorch_domain::topics::Topics;
use distorch_eventlog::fence::FencedLog;
use distorch_eventlog::offsets::{COMMIT_INTERVAL, PacedCommits};
use distorch_eventlog::{Consumer, EventLog, LogError, NewRecord, Record};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How an [`Engine`] consumes and writes the log; every field has a default.
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

/// Why [`Engine::run`] (or a restore it does) stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A log call failed (poll, append, read, topic creation); the engine stops rather than
    /// retry, and a restart resumes from the committed offsets.
    #[error("event log: {0}")]
    Log(#[from] LogError),
    /// A record the engine restores state from (an event, a registered definition, a snapshot
    /// chunk) does not decode, or a snapshot chunk is missing below the end offset. Malformed
    /// command records are dead-lettered instead.
    #[error("undecodable record in {topic}[{partition}]@{offset}: {reason}")]
    Corrupt {
        /// The topic holding the record.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
        /// The decoding error, or what was missing.
        reason: String,
    },
}

/// The engine driver: owns the commands partitions the group assigns it and runs the
/// [`Core`] over them (see the crate docs). Started with [`Engine::run`].
pub struct Engine {
    log: FencedLog,
    topics: Topics,
    config: EngineConfig,
    metrics: Metrics,
    /// This process's id in the ownership epochs it claims.
    instance: String,
}

struct State {
    core: Core,
    /// Next offset of the definitions topic to fold into the core's registry.
    definitions_next: u64,
    /// Commands partitions this engine owns, with their snapshot bookkeeping.
    owned: BTreeMap<u32, partitions::Owned>,
    /// Partitions still assigned to this engine that another engine has claimed since, with
    /// the consumer's rebalance count then: not taken back before the next rebalance.
    fenced: BTreeMap<u32, u64>,
    /// Offsets of commands handled (their output durable), committed every
    /// [`COMMIT_INTERVAL`].
    commits: PacedCommits,
    queues: HashSet<String>,
}

/// The log as every DisTorch service must read it: the engine's events partitions have owners,
/// and what an engine writes there after another one claimed the partition is ignored
/// (`distorch_eventlog::fence`, docs/adr/0037).
pub fn fenced(log: Arc<dyn EventLog>, topics: &Topics) -> FencedLog {
    FencedLog::new(log, topics.fences(), &[topics.events()])
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
        (topics.fences(), 1),
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

impl Engine {
    /// An engine that does nothing until [`Engine::run`]; `log` is the process's log as
    /// [`fenced`] wraps it, `metrics` should be registered in the process's registry
    /// ([`Metrics::new`]).
    pub fn new(log: FencedLog, topics: Topics, config: EngineConfig, metrics: Metrics) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            log,
            topics,
            config,
            metrics,
            instance: format!("engine-{}-{nanos:x}", std::process::id()),
        }
    }

    /// Creates the topics the engine writes (idempotent).
    pub async fn ensure_topics(&self) -> Result<(), EngineError> {
        Ok(ensure_topics(&self.log, &self.topics, self.config.partitions).await?)
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
        let partitions = self.log.partitions(&self.topics.commands()).await?;
        let mut state = State {
            core: Core::new(self.topics.clone(), partitions, self.metrics.clone()),
            definitions_next: 0,
            owned: BTreeMap::new(),
            fenced: BTreeMap::new(),
            commits: PacedCommits::new(COMMIT_INTERVAL),
            queues: HashSet::new(),
        };
        self.catch_up_definitions(&mut state).await?;
        self.follow_assignment(&mut state, consumer.assignment(), consumer.rebalances())
            .await?;
        tokio::pin!(shutdown);
        let mut last_lag = std::time::Instant::now() - Duration::from_secs(5);
        loop {
            let now = now_ms();
            let wait = state
                .core
                .next_deadline()
                .map_or(1000, |at| (at - now).clamp(0, 1000)) as u64;
            let records = tokio::select! {
                r = consumer.poll(self.config.batch, Duration::from_millis(wait)) => r?,
                () = &mut shutdown => break,
            };
            // A rebalance happens inside `poll`: take over (or let go of) partitions before
            // handling their commands.
            self.follow_assignment(&mut state, consumer.assignment(), consumer.rebalances())
                .await?;
            self.process(&mut state, &mut *consumer, records).await?;
            self.snapshot_due(&mut state).await?;
            if last_lag.elapsed() > Duration::from_secs(1) {
                last_lag = std::time::Instant::now();
                self.update_lag(&consumer.assignment()).await;
                self.let_go_if_fenced(&mut state, consumer.rebalances())
                    .await?;
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
        let commands: Vec<Incoming> = records
            .into_iter()
            .filter(|r| state.owned.contains_key(&r.partition))
            .map(Incoming::from)
            .collect();
        // A start may name a definition another engine registered a moment ago.
        if state.core.needs_definitions(&commands) {
            self.catch_up_definitions(state).await?;
        }
        for Incoming { record: rec, .. } in &commands {
            state
                .commits
                .handled_before(&rec.topic, rec.partition, rec.offset + 1);
        }
        let mut out = state.core.handle(&commands, now);
        if !out.records.is_empty() {
            self.ensure_queue_topics(state, &out.records).await?;
            let events = self.topics.events();
            let appended: Vec<bool> = out.records.iter().map(|r| r.topic == events).collect();
            self.stamp(state, &mut out.records);
            let positions = self.log.append(out.records).await?;
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
