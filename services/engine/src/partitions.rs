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
//! remember the command ids they applied).
//!
//! An engine *paused* past the group's session timeout does not observe the revocation
//! before it appends the batch it held. So every owner claims its events partition with an
//! ownership epoch (a marker record, `distorch_eventlog::fence`) before it handles a command,
//! and stamps everything it writes there with it: what a fenced owner appends after the next
//! owner's marker is ignored by every reader, and so is a snapshot it writes of that fold.
//! The fenced engine learns of it from the fences index (or from its next rebalance) and
//! lets the partition go (docs/adr/0037).

use crate::snapshot;
use crate::{Engine, EngineError, State, decode};
use distorch_domain::event::{DefinitionRegistered, EventEnvelope};
use distorch_eventlog::fence::{Epoch, key_for_partition, stamp};
use distorch_eventlog::{EventLog, NewRecord, partition_for};
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
    /// The epoch this engine claimed the events partition with.
    epoch: Option<Epoch>,
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
        rebalances: u64,
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
        // A partition another engine claimed stays let go until the group rebalances: this
        // engine's assignment is stale, and claiming it back would fence the engine the group
        // gave it to. After a rebalance, an assignment is the group's word again.
        state.fenced.retain(|_, at| *at == rebalances);
        let new: Vec<u32> = assigned
            .into_iter()
            .filter(|p| !state.owned.contains_key(p) && !state.fenced.contains_key(p))
            .collect();
        if !new.is_empty() {
            self.acquire(state, &new).await?;
        }
        Ok(())
    }

    /// Lets go of every owned partition that another engine has claimed since (the fences
    /// index names a higher epoch): this engine was paused past its group's session timeout
    /// and has been fenced. What it wrote there since is ignored by every reader.
    pub(crate) async fn let_go_if_fenced(
        &self,
        state: &mut State,
        rebalances: u64,
    ) -> Result<(), EngineError> {
        if state.owned.is_empty() {
            return Ok(());
        }
        self.log.catch_up().await?;
        let events = self.topics.events();
        let fenced: Vec<u32> = state
            .owned
            .iter()
            .filter(|(p, o)| {
                o.epoch
                    .as_ref()
                    .is_some_and(|mine| self.log.highest(&events, **p).is_some_and(|h| h > *mine))
            })
            .map(|(p, _)| *p)
            .collect();
        if !fenced.is_empty() {
            tracing::warn!(
                partitions = ?fenced,
                "another engine claimed these partitions (this one was paused past the \
                 group's session timeout): letting them go until the group rebalances"
            );
            self.metrics.fenced.inc_by(fenced.len() as u64);
            self.release(state, &fenced);
            state
                .fenced
                .extend(fenced.into_iter().map(|p| (p, rebalances)));
        }
        Ok(())
    }

    /// Stamps the records of owned events partitions with their epochs.
    pub(crate) fn stamp(&self, state: &State, records: &mut [NewRecord]) {
        let events = self.topics.events();
        let n = state.core.partitions();
        for rec in records.iter_mut().filter(|r| r.topic == events) {
            let p = partition_for(&rec.key, n);
            if let Some(epoch) = state.owned.get(&p).and_then(|o| o.epoch.as_ref()) {
                stamp(rec, epoch);
            }
        }
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

    /// Takes partitions over: restores each from its latest snapshot and the events after
    /// it, claims them all (one append of markers), folds what was appended before the
    /// markers, and offers their waiting attempts again. Appends are shared by the
    /// partitions, so a takeover's time grows with what it reads, not with how many
    /// partitions it takes (an engine that takes too long looks dead to the group watchdog).
    async fn acquire(&self, state: &mut State, partitions: &[u32]) -> Result<(), EngineError> {
        let started = Instant::now();
        // Runs may use definitions registered since this engine last looked.
        self.catch_up_definitions(state).await?;
        let (snapshots, events) = (self.topics.snapshots(), self.topics.events());
        // The markers before a snapshot's offset tell whether a fenced engine wrote it.
        self.log.catch_up().await?;
        let mut taking = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let image = snapshot::latest(&self.log, &snapshots, p, |at| {
                self.log.in_force(&events, p, at)
            })
            .await?;
            let mut owned = Owned::default();
            let mut restored = 0usize;
            if let Some(image) = image {
                owned.events_end = image.events_offset;
                owned.last_snapshot = Some(image.last_chunk);
                restored = state.core.restore(image);
            }
            let replayed = self.replay(state, p, &mut owned).await?;
            taking.push((p, owned, restored, replayed));
        }
        // Read to the end, so every marker is known: claim higher epochs, then fold what a
        // former owner appended before the markers (history, not stale).
        let epochs = self.log.claim(&events, partitions, &self.instance).await?;
        let mut offers = Vec::new();
        let mut acquired = Vec::with_capacity(taking.len());
        for ((p, mut owned, restored, replayed), epoch) in taking.into_iter().zip(epochs) {
            let replayed = replayed + self.replay(state, p, &mut owned).await?;
            owned.epoch = Some(epoch.clone());
            let reoffered = {
                let records = state.core.acquired(p).records;
                let n = records.len();
                offers.extend(records);
                n
            };
            state.owned.insert(p, owned);
            acquired.push((p, epoch, restored, replayed, reoffered));
        }
        if !offers.is_empty() {
            self.ensure_queue_topics(state, &offers).await?;
            self.stamp(state, &mut offers);
            self.log.append(offers).await?;
        }
        self.metrics.partitions_owned.set(state.owned.len() as i64);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        for (p, epoch, restored, replayed, reoffered) in acquired {
            self.metrics
                .partition_owned
                .get_or_create(&crate::metrics::PartitionLabel { partition: p })
                .set(1);
            tracing::info!(
                partition = p,
                %epoch,
                from_snapshot = restored,
                events_replayed = replayed,
                tasks_reoffered = reoffered,
                elapsed_ms,
                "partition acquired"
            );
        }
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
            let (batch, through) = self
                .log
                .read_through(&events, p, owned.events_end, REPLAY_BATCH, Duration::ZERO)
                .await?;
            if through == owned.events_end {
                break;
            }
            owned.events_end = through;
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
        let key = key_for_partition(p, n);
        let header = snapshot::Header {
            topic: &topic,
            key: &key,
            partition: p,
            id: &id,
            events_offset: owned.events_end,
            prev: owned.last_snapshot,
            epoch: owned.epoch.as_ref(),
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
