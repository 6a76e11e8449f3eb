//! The single writer thread: group commit.
//!
//! Every mutation (topic creation, append, group commit) is a message to one OS thread that
//! owns the storage's only writer. It takes the first message, then everything else already
//! queued, and writes them all in ONE transaction: one fsync acknowledges the whole group.
//! While it waits on that fsync, new callers queue up and form the next group, so batching
//! grows with load without any timer or added latency at low load.
//!
//! A dedicated thread (rather than `spawn_blocking` per batch) keeps the storage's write
//! state hot and makes "one writer" structural: offsets can be assigned from memory because
//! nothing else writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

use super::StorageWriter;
use super::topic::{Topic, Topics};
use crate::{LogError, NewRecord, Position, Record, Result, partition_for};

/// Upper bounds on one group so a flood of appends still commits (and acknowledges) in
/// steps of bounded latency and memory.
const MAX_GROUP_RECORDS: usize = 20_000;
const MAX_GROUP_BYTES: usize = 32 << 20;

pub(crate) enum Op {
    CreateTopic {
        name: String,
        partitions: u32,
        reply: oneshot::Sender<Result<()>>,
    },
    Append {
        records: Vec<NewRecord>,
        reply: oneshot::Sender<Result<Vec<Position>>>,
    },
    Commit {
        group: String,
        offsets: Vec<(String, u32, u64)>,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Op {
    /// (records, bytes) this op adds to a group, for the group limits.
    fn weight(&self) -> (usize, usize) {
        match self {
            Op::Append { records, .. } => (
                records.len(),
                records.iter().map(|r| r.payload.len() + r.key.len()).sum(),
            ),
            Op::CreateTopic { .. } => (1, 0),
            Op::Commit { offsets, .. } => (offsets.len(), 0),
        }
    }
}

/// What an op produced inside the transaction, sent only once the transaction committed.
/// Ops without positions (create, commit) produce an empty list.
type Outcome = Result<Vec<Position>>;

pub(crate) struct Writer<W> {
    storage: W,
    state: State,
}

/// The writer's view of the topics; `by_name` may run ahead of `shared` inside a group
/// (topics created earlier in the same transaction) and is reconciled on commit/rollback.
struct State {
    shared: Arc<Topics>,
    by_name: HashMap<String, Arc<Topic>>,
}

/// Changes of the current group that become visible only after `COMMIT`.
#[derive(Default)]
struct Staged {
    /// Next offset per (topic id, partition), starting from the published end offsets.
    ends: HashMap<(i64, u32), u64>,
    touched: HashMap<i64, Arc<Topic>>,
    created: Vec<Arc<Topic>>,
    /// Appended records, for the topics' in-memory tails once committed.
    records: Vec<(Arc<Topic>, Record)>,
}

impl<W: StorageWriter> Writer<W> {
    pub(crate) fn new(storage: W, shared: Arc<Topics>, topics: Vec<Arc<Topic>>) -> Self {
        let by_name = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        Self {
            storage,
            state: State { shared, by_name },
        }
    }

    /// Runs until every sender is gone (the log was dropped), then returns, dropping the
    /// storage writer.
    pub(crate) fn run(mut self, rx: Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let (mut records, mut bytes) = first.weight();
            let mut group = vec![first];
            while records < MAX_GROUP_RECORDS && bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        let (r, b) = op.weight();
                        records += r;
                        bytes += b;
                        group.push(op);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.write_group(group);
        }
        tracing::debug!("event log writer stopped");
    }

    fn write_group(&mut self, group: Vec<Op>) {
        let mut staged = Staged::default();
        match self.apply_group(&group, &mut staged) {
            Ok(outcomes) => {
                self.publish(staged);
                for (op, outcome) in group.into_iter().zip(outcomes) {
                    reply(op, outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = group.len(), "event log write failed");
                self.storage.abort();
                for topic in &staged.created {
                    self.state.by_name.remove(&topic.name);
                }
                self.resync();
                let message = match e {
                    LogError::Storage(message) => message,
                    other => other.to_string(),
                };
                for op in group {
                    reply(op, Err(LogError::Storage(message.clone())));
                }
            }
        }
    }

    /// Writes the whole group in one transaction. `Err` aborts the group (nothing written);
    /// an op the log rejects (unknown topic, ...) is an `Ok` outcome carrying its error and
    /// writes nothing, so it cannot fail its neighbours.
    fn apply_group(&mut self, group: &[Op], staged: &mut Staged) -> Result<Vec<Outcome>> {
        let tx = &mut self.storage;
        tx.begin()?;
        let now = now_ms();
        let mut outcomes = Vec::with_capacity(group.len());
        for op in group {
            outcomes.push(match op {
                Op::CreateTopic {
                    name, partitions, ..
                } => self
                    .state
                    .create_topic(tx, name, *partitions, staged)?
                    .map(|()| Vec::new()),
                Op::Append { records, .. } => self.state.append(tx, records, now, staged)?,
                Op::Commit { group, offsets, .. } => {
                    self.state.commit(tx, group, offsets)?.map(|()| Vec::new())
                }
            });
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Makes a committed group visible: new topics, then end offsets, then wake-ups (in that
    /// order, so a woken reader finds what woke it).
    fn publish(&mut self, staged: Staged) {
        for topic in staged.created {
            self.state.shared.insert(topic);
        }
        for (topic, record) in staged.records {
            topic.push_tail(record.partition, record);
        }
        for ((topic_id, partition), end) in staged.ends {
            if let Some(topic) = staged.touched.get(&topic_id) {
                topic.publish_end(partition, end);
            }
        }
        for topic in staged.touched.values() {
            topic.wake_all();
        }
    }

    /// After a failed write we cannot be sure what reached the disk (an I/O error during
    /// the commit may still have persisted it), so the in-memory offsets are re-read from
    /// the storage; otherwise the next append could reuse an offset and fail forever.
    fn resync(&mut self) {
        match self.storage.reload() {
            Ok(loaded) => {
                for fresh in loaded {
                    match self.state.by_name.get(&fresh.name) {
                        Some(known) => {
                            known.clear_tails();
                            for p in 0..known.partitions() {
                                if let Ok(end) = fresh.end(p) {
                                    known.publish_end(p, end);
                                }
                            }
                            known.wake_all();
                        }
                        None => {
                            let topic = Arc::new(fresh);
                            self.state.shared.insert(Arc::clone(&topic));
                            self.state.by_name.insert(topic.name.clone(), topic);
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "event log could not re-read its offsets"),
        }
    }
}

impl State {
    fn topic(&self, name: &str) -> Result<&Arc<Topic>> {
        self.by_name
            .get(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }

    fn create_topic(
        &mut self,
        storage: &mut impl StorageWriter,
        name: &str,
        partitions: u32,
        staged: &mut Staged,
    ) -> Result<Result<()>> {
        if let Some(existing) = self.by_name.get(name) {
            return Ok(if existing.partitions() == partitions {
                Ok(())
            } else {
                Err(LogError::PartitionMismatch {
                    topic: name.to_owned(),
                    existing: existing.partitions(),
                    requested: partitions,
                })
            });
        }
        let id = storage.create_topic(name, partitions)?;
        let topic = Arc::new(Topic::new(
            id,
            name.to_owned(),
            vec![0; partitions as usize],
        ));
        self.by_name.insert(name.to_owned(), Arc::clone(&topic));
        staged.created.push(topic);
        Ok(Ok(()))
    }

    fn append(
        &self,
        storage: &mut impl StorageWriter,
        records: &[NewRecord],
        now: i64,
        staged: &mut Staged,
    ) -> Result<Result<Vec<Position>>> {
        // Resolve every topic first: a batch with one bad topic is rejected whole.
        let topics = match records
            .iter()
            .map(|r| self.topic(&r.topic))
            .collect::<Result<Vec<_>>>()
        {
            Ok(topics) => topics,
            Err(e) => return Ok(Err(e)),
        };
        let mut positions = Vec::with_capacity(records.len());
        for (record, topic) in records.iter().zip(topics) {
            let partition = partition_for(&record.key, topic.partitions());
            let next = match staged.ends.get_mut(&(topic.id, partition)) {
                Some(next) => next,
                None => {
                    let end = topic.end(partition)?;
                    staged.touched.insert(topic.id, Arc::clone(topic));
                    staged.ends.entry((topic.id, partition)).or_insert(end)
                }
            };
            storage.append(topic.id, partition, *next, record, now)?;
            positions.push(Position {
                partition,
                offset: *next,
            });
            staged.records.push((
                Arc::clone(topic),
                Record {
                    topic: topic.name.clone(),
                    partition,
                    offset: *next,
                    key: record.key.clone(),
                    headers: record.headers.clone(),
                    payload: record.payload.clone(),
                    timestamp_ms: now,
                },
            ));
            *next += 1;
        }
        Ok(Ok(positions))
    }

    fn commit(
        &self,
        storage: &mut impl StorageWriter,
        group: &str,
        offsets: &[(String, u32, u64)],
    ) -> Result<Result<()>> {
        let mut resolved = Vec::with_capacity(offsets.len());
        for (name, partition, next) in offsets {
            let topic = match self.topic(name) {
                Ok(topic) => topic,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = topic.check_partition(*partition) {
                return Ok(Err(e));
            }
            resolved.push((topic.id, *partition, *next));
        }
        for (topic_id, partition, next) in resolved {
            storage.commit_offset(group, topic_id, partition, next)?;
        }
        Ok(Ok(()))
    }
}

fn reply(op: Op, outcome: Outcome) {
    // A caller that gave up (dropped its future) no longer wants the answer; its records are
    // durable all the same, which at-least-once delivery allows.
    match op {
        Op::Append { reply, .. } => {
            let _ = reply.send(outcome);
        }
        Op::CreateTopic { reply, .. } | Op::Commit { reply, .. } => {
            let _ = reply.send(outcome.map(drop));
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
