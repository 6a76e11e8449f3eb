//! Partition ownership: an engine owns the runs of the commands partitions its consumer
//! group assigns it (the events of a run live in the same partition number of the events
//! topic). On assignment it restores a partition from its latest snapshot and folds the
//! events written after it; on revocation it drops the partition's runs and timers. It
//! snapshots each owned partition every `snapshot_every` events and when it stops.
//!
//! Handing a partition over from a live engine is safe because the loop is sequential: a
//! revocation is observed inside `poll`, after the previous batch's output was durable, so
//! the next owner's replay sees every event the previous one wrote. Commands handled but not
//! committed are delivered again to the next owner, which recognises them by id (runs
//! remember the command ids they applied). An engine *paused* past the group's session
//! timeout is not fenced yet: on resuming it may append the batch it held after the next
//! owner took over (docs/adr/0037, proposed).

use crate::snapshot;
use crate::{Engine, EngineError, State, decode};
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Records read per `read` call while replaying.
const REPLAY_BATCH: usize = 5000;

/// Bookkeeping of one owned partition.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// Next offset of the events partition: the state holds the fold of everything before.
    events_end: u64,
    /// Events appended since the last snapshot.
    since_snapshot: u64,
    /// Offset of the last chunk of the last complete snapshot written or read.
    last_snapshot: Option<u64>,
}

impl Owned {
    pub(crate) fn appended(&mut self, offset: u64) {
        self.events_end = self.events_end.max(offset + 1);
        self.since_snapshot += 1;
    }
}

impl Engine {
    /// Brings the owned set in line with the consumer's assignment.
    pub(crate) async fn follow_assignment(
        &self,
        state: &mut State,
        assignment: Vec<(String, u32)>,
    ) -> Result<(), EngineError> {
        let commands = self.topics.commands();
        let assigned: BTreeSet<u32> = assignment
            .into_iter()
            .filter(|(t, _)| *t == commands)
            .map(|(_, p)| p)
            .collect();
        let revoked: Vec<u32> = state
            .owned
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        if !revoked.is_empty() {
            self.release(state, &revoked);
        }
        for p in assigned {
            if !state.owned.contains_key(&p) {
                self.acquire(state, p).await?;
            }
        }
        Ok(())
    }

    /// Forgets the runs, timers and pending commits of partitions another engine now owns.
    fn release(&self, state: &mut State, partitions: &[u32]) {
        let runs = state.core.release(partitions);
        let commands = self.topics.commands();
        state
            .commits
            .retain(|t, p| t != commands || !partitions.contains(&p));
        for p in partitions {
            state.owned.remove(p);
            self.metrics
                .partition_owned
                .get_or_create(&crate::metrics::PartitionLabel { partition: *p })
                .set(0);
        }
        self.metrics.partitions_owned.set(state.owned.len() as i64);
        tracing::info!(?partitions, runs, "partitions released");
    }

    /// Restores partition `p` from its latest snapshot and the events after it.
    async fn acquire(&self, state: &mut State, p: u32) -> Result<(), EngineError> {
        let started = Instant::now();
        // Runs may use definitions registered since this engine last looked.
        self.catch_up_definitions(state).await?;
        let snapshots = self.topics.snapshots();
        let image = snapshot::latest(self.log.as_ref(), &snapshots, p).await?;
        let mut owned = Owned::default();
        let mut restored = 0usize;
        if let Some(image) = image {
            owned.events_end = image.events_offset;
            owned.last_snapshot = Some(image.last_chunk);
            restored = state.core.restore(image);
        }
        let replayed = self.replay(state, p, &mut owned).await?;
        let offers = state.core.acquired(p).records;
        let reoffered = offers.len();
        if !offers.is_empty() {
            self.ensure_queue_topics(state, &offers).await?;
            self.log.append(offers).await?;
        }
        state.owned.insert(p, owned);
        self.metrics.partitions_owned.set(state.owned.len() as i64);
        self.metrics
            .partition_owned
            .get_or_create(&crate::metrics::PartitionLabel { partition: p })
            .set(1);
        tracing::info!(
            partition = p,
            from_snapshot = restored,
            events_replayed = replayed,
            tasks_reoffered = reoffered,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition acquired"
        );
        Ok(())
    }

    /// Folds the events of partition `p` from `owned.events_end` to its end; returns how many.
    async fn replay(
        &self,
        state: &mut State,
        p: u32,
        owned: &mut Owned,
    ) -> Result<u64, EngineError> {
        let events = self.topics.events();
        let end = self.log.end_offset(&events, p).await?;
        let mut count = 0;
        while owned.events_end < end {
            let batch = self
                .log
                .read(&events, p, owned.events_end, REPLAY_BATCH, Duration::ZERO)
                .await?;
            let Some(last) = batch.last() else { break };
            owned.events_end = last.offset + 1;
            for rec in &batch {
                let env: EventEnvelope = decode(rec)?;
                count += 1;
                state.core.fold(&env);
            }
        }
        Ok(count)
    }

    /// Folds definitions registered since the last call (by any engine) into the registry.
    pub(crate) async fn catch_up_definitions(&self, state: &mut State) -> Result<(), EngineError> {
        let topic = self.topics.definitions();
        let end = self.log.end_offset(&topic, 0).await?;
        while state.definitions_next < end {
            let batch = self
                .log
                .read(
                    &topic,
                    0,
                    state.definitions_next,
                    REPLAY_BATCH,
                    Duration::ZERO,
                )
                .await?;
            let Some(last) = batch.last() else { break };
            state.definitions_next = last.offset + 1;
            for rec in &batch {
                let reg: DefinitionRegistered = decode(rec)?;
                state.core.add_definition(&reg);
            }
        }
        Ok(())
    }

    /// Snapshots every owned partition that has taken `snapshot_every` events since its last.
    pub(crate) async fn snapshot_due(&self, state: &mut State) -> Result<(), EngineError> {
        let every = self.config.snapshot_every;
        if every == 0 {
            return Ok(());
        }
        let due: Vec<u32> = state
            .owned
            .iter()
            .filter(|(_, o)| o.since_snapshot >= every)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.write_snapshot(state, p).await?;
        }
        Ok(())
    }

    /// Snapshots every owned partition that changed since its last snapshot.
    pub(crate) async fn snapshot_all(&self, state: &mut State) -> Result<(), EngineError> {
        if self.config.snapshot_every == 0 {
            return Ok(());
        }
        let changed: Vec<u32> = state
            .owned
            .iter()
            .filter(|(_, o)| o.since_snapshot > 0)
            .map(|(p, _)| *p)
            .collect();
        for p in changed {
            self.write_snapshot(state, p).await?;
        }
        Ok(())
    }

    async fn write_snapshot(&self, state: &mut State, p: u32) -> Result<(), EngineError> {
        let started = Instant::now();
        let n = state.core.partitions();
        let Some(owned) = state.owned.get(&p) else {
            return Ok(());
        };
        let (runs, ended) = state.core.snapshot(p);
        let (live, done) = (runs.len(), ended.len());
        let topic = self.topics.snapshots();
        let id = format!("{p}@{}", owned.events_end);
        let key = snapshot::key_for_partition(p, n);
        let header = snapshot::Header {
            topic: &topic,
            key: &key,
            partition: p,
            id: &id,
            events_offset: owned.events_end,
            prev: owned.last_snapshot,
        };
        let records = snapshot::records(&header, runs, ended);
        let chunks = records.len();
        let positions = self.log.append(records).await?;
        if let Some(owned) = state.owned.get_mut(&p) {
            owned.since_snapshot = 0;
            owned.last_snapshot = positions.last().map(|pos| pos.offset);
        }
        self.metrics.snapshots.inc();
        tracing::info!(
            partition = p,
            runs = live,
            ended = done,
            chunks,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition snapshot written"
        );
        Ok(())
    }
}
