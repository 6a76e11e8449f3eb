//! Fencing: a writer that lost a partition without noticing (a paused process) cannot
//! change what readers fold.
//!
//! A partition of a *fenced* topic has one writer at a time, its owner. Ownership is an
//! [`Epoch`]; every record an owner writes carries its epoch in the [`EPOCH_HEADER`]. A new
//! owner first [`FencedLog::claim`]s the partition: it appends a *marker* record with a higher
//! epoch, then an entry for the marker to a one-partition *index* topic.
//!
//! **The reading rule.** In a partition of a fenced topic, a record whose epoch is lower than
//! that of a marker before it is stale: every reader ignores it, as it ignores the markers.
//! Records without an epoch (other writers, records written before fencing existed) are never
//! stale. A reader that starts in the middle of a partition learns the markers before its
//! start from the index.
//!
//! [`FencedLog`] applies the rule to every `read` and `poll` of the log it wraps, so that
//! every service that opens its log through it folds the same history; a commit just past the
//! last delivered record extends over the stale records and markers that follow it, so that a
//! group's lag still reaches zero. [`judge`] is the rule itself.
//!
//! The window it leaves: an owner that dies between its marker and its index entry, while a
//! paused former owner appends in that moment, lets a reader that then *starts* after the
//! marker accept the paused owner's records. Readers that read through the marker, and the
//! next owner (which replays through it), are not affected.

use crate::{Consumer, EventLog, LogError, NewRecord, Position, Record, Result, partition_for};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header naming the epoch under which a record of a fenced topic was written.
pub const EPOCH_HEADER: &str = "distorch-epoch";
/// Header that makes a record a marker: its value is the epoch the marker starts.
pub const MARKER_HEADER: &str = "distorch-fence";

/// An ownership epoch: ordered by `n`, then by the owner's id, so that two writers that both
/// believe they took a partition over still get distinct, ordered epochs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch {
    /// One more than the highest epoch the owner found in the partition when it claimed it.
    pub n: u64,
    /// The owning process's instance id.
    pub owner: String,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.n, self.owner)
    }
}

impl FromStr for Epoch {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, owner) = parts(s).ok_or_else(|| format!("epoch {s:?} is not <number>:<owner>"))?;
        Ok(Epoch {
            n,
            owner: owner.to_string(),
        })
    }
}

/// What a reader does with one record of a fenced topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An ordinary record: deliver it.
    Deliver,
    /// A marker starting this epoch: note it, do not deliver it.
    Marker(Epoch),
    /// Written under an epoch older than a marker before it: ignore it.
    Stale,
}

/// The reading rule for one record, given the highest epoch of the markers before it.
pub fn judge(in_force: Option<&Epoch>, rec: &Record) -> Verdict {
    if let Some(epoch) = header(rec, MARKER_HEADER).and_then(|v| v.parse().ok()) {
        return Verdict::Marker(epoch);
    }
    // Parsed borrowed: this runs for every record every reader reads.
    let written_under = header(rec, EPOCH_HEADER).and_then(parts);
    match (written_under, in_force) {
        (Some((n, owner)), Some(current)) if (n, owner) < (current.n, current.owner.as_str()) => {
            Verdict::Stale
        }
        _ => Verdict::Deliver,
    }
}

/// Whether something written under `written_under` is stale where `in_force` is the epoch in
/// force: only an epoch older than one in force is; anything without an epoch never is. The
/// same rule as [`judge`], for what an owner keeps elsewhere about a partition (a snapshot).
pub fn outranked(written_under: Option<&Epoch>, in_force: Option<&Epoch>) -> bool {
    matches!((written_under, in_force), (Some(e), Some(current)) if e < current)
}

/// `n:owner`, borrowed.
fn parts(value: &str) -> Option<(u64, &str)> {
    let (n, owner) = value.split_once(':')?;
    Some((n.parse().ok()?, owner))
}

fn header<'a>(rec: &'a Record, name: &str) -> Option<&'a str> {
    rec.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Something per partition, looked up by `&str` topic without allocating.
#[derive(Debug)]
struct ByPartition<T>(HashMap<String, HashMap<u32, T>>);

impl<T> Default for ByPartition<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T: Default> ByPartition<T> {
    fn get(&self, topic: &str, partition: u32) -> Option<&T> {
        self.0.get(topic)?.get(&partition)
    }

    fn entry(&mut self, topic: &str, partition: u32) -> &mut T {
        if !self.0.contains_key(topic) {
            self.0.insert(topic.to_string(), HashMap::new());
        }
        self.0
            .get_mut(topic)
            .expect("inserted above")
            .entry(partition)
            .or_default()
    }

    fn remove(&mut self, topic: &str, partition: u32) {
        if let Some(partitions) = self.0.get_mut(topic) {
            partitions.remove(&partition);
        }
    }
}

/// The markers known of one partition: offset → epoch.
#[derive(Debug, Default, Clone)]
struct Markers(BTreeMap<u64, Epoch>);

impl Markers {
    /// The highest epoch of the markers before `offset`.
    fn in_force(&self, offset: u64) -> Option<&Epoch> {
        self.0.range(..offset).map(|(_, e)| e).max()
    }

    fn highest(&self) -> Option<&Epoch> {
        self.0.values().max()
    }
}

/// What every reader of one [`FencedLog`] has learnt: the markers of each fenced partition
/// and how far the index was read.
#[derive(Debug, Default)]
struct Known {
    markers: ByPartition<Markers>,
    index_next: u64,
    /// Per partition, the offset after the last record a `read` looked at: a read that goes
    /// on from there has seen every marker before it.
    read_next: ByPartition<Option<u64>>,
}

struct Shared {
    inner: Arc<dyn EventLog>,
    index: String,
    fenced: HashSet<String>,
    known: Mutex<Known>,
}

impl Shared {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the index entries appended since the last call.
    async fn refresh(&self) -> Result<()> {
        let end = match self.inner.end_offset(&self.index, 0).await {
            Ok(end) => end,
            // No engine has created it yet: no partition was ever claimed.
            Err(LogError::UnknownTopic(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut from = self.known().index_next;
        while from < end {
            let batch = self
                .inner
                .read(&self.index, 0, from, 1000, Duration::ZERO)
                .await?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            let mut known = self.known();
            for rec in &batch {
                if let Some((topic, partition, offset, epoch)) = index_entry(rec) {
                    known
                        .markers
                        .entry(topic, partition)
                        .0
                        .insert(offset, epoch);
                }
            }
            known.index_next = known.index_next.max(from);
        }
        Ok(())
    }

    /// Applies the rule to a batch of one reader, in offset order per partition: returns
    /// what the reader may see, and calls `on_skip` with each marker and stale record. The
    /// epoch in force at a record is the highest of the markers known before it (from the
    /// index, or read by any reader of this log, including earlier in this batch).
    fn filter(&self, records: Vec<Record>, mut on_skip: impl FnMut(&Record)) -> Vec<Record> {
        let mut delivered = Vec::with_capacity(records.len());
        let mut stale: Option<(String, u32, u64, usize)> = None;
        let mut known = self.known();
        for rec in records {
            if !self.fenced.contains(&rec.topic) {
                delivered.push(rec);
                continue;
            }
            let markers = known.markers.entry(&rec.topic, rec.partition);
            match judge(markers.in_force(rec.offset), &rec) {
                Verdict::Deliver => delivered.push(rec),
                Verdict::Marker(epoch) => {
                    markers.0.insert(rec.offset, epoch);
                    on_skip(&rec);
                }
                Verdict::Stale => {
                    on_skip(&rec);
                    match &mut stale {
                        Some((.., count)) => *count += 1,
                        None => stale = Some((rec.topic.clone(), rec.partition, rec.offset, 1)),
                    }
                }
            }
        }
        if let Some((topic, partition, from_offset, count)) = stale {
            tracing::debug!(
                %topic,
                partition,
                from_offset,
                count,
                "ignored records an owner wrote after another one had claimed the partition"
            );
        }
        delivered
    }
}

fn index_entry(rec: &Record) -> Option<(&str, u32, u64, Epoch)> {
    Some((
        header(rec, "topic")?,
        header(rec, "partition")?.parse().ok()?,
        header(rec, "offset")?.parse().ok()?,
        header(rec, "epoch")?.parse().ok()?,
    ))
}

/// An [`EventLog`] whose reads and consumers follow the reading rule on the `fenced` topics
/// (see the module docs); appends, topics and offsets are the wrapped log's.
#[derive(Clone)]
pub struct FencedLog {
    shared: Arc<Shared>,
}

impl FencedLog {
    /// Wraps `inner`: `fenced` are the topics whose partitions have owners, `index` the
    /// one-partition topic their markers are indexed in (created by [`FencedLog::claim`]).
    pub fn new(inner: Arc<dyn EventLog>, index: String, fenced: &[String]) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner,
                index,
                fenced: fenced.iter().cloned().collect(),
                known: Mutex::new(Known::default()),
            }),
        }
    }

    /// Takes `partitions` of the fenced `topic` over for `owner`, after the caller has read
    /// each to its end (so that it knows every marker in them): appends a marker per
    /// partition with an epoch above every one known there, in one append, then indexes them
    /// in another. Records appended before a marker, even by a former owner, are history; the
    /// caller reads up to its markers again before it writes. Returns, in the order of
    /// `partitions`, the epoch every record the caller writes to each must carry ([`stamp`]).
    pub async fn claim(&self, topic: &str, partitions: &[u32], owner: &str) -> Result<Vec<Epoch>> {
        if !self.shared.fenced.contains(topic) {
            return Err(LogError::Invalid(format!("topic {topic:?} is not fenced")));
        }
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        self.shared
            .inner
            .create_topic(&self.shared.index, 1)
            .await?;
        self.shared.refresh().await?;
        let count = self.shared.inner.partitions(topic).await?;
        let epochs: Vec<Epoch> = partitions
            .iter()
            .map(|p| Epoch {
                n: self.highest(topic, *p).map_or(1, |highest| highest.n + 1),
                owner: owner.to_string(),
            })
            .collect();
        let markers = partitions
            .iter()
            .zip(&epochs)
            .map(|(p, epoch)| {
                let mut marker = NewRecord::new(
                    topic,
                    key_for_partition(*p, count),
                    format!("ownership of {topic}[{p}] passes to epoch {epoch}").into_bytes(),
                );
                marker
                    .headers
                    .push((MARKER_HEADER.to_string(), epoch.to_string()));
                marker
            })
            .collect();
        let positions = self.shared.inner.append(markers).await?;
        let mut entries = Vec::with_capacity(positions.len());
        for ((p, epoch), at) in partitions.iter().zip(&epochs).zip(&positions) {
            let at = at.offset;
            self.shared
                .known()
                .markers
                .entry(topic, *p)
                .0
                .insert(at, epoch.clone());
            let mut entry = NewRecord::new(
                &self.shared.index,
                format!("{topic}/{p}"),
                format!("{topic}[{p}]@{at}: epoch {epoch}").into_bytes(),
            );
            entry.headers = vec![
                ("topic".into(), topic.to_string()),
                ("partition".into(), p.to_string()),
                ("offset".into(), at.to_string()),
                ("epoch".into(), epoch.to_string()),
            ];
            entries.push(entry);
        }
        self.shared.inner.append(entries).await?;
        Ok(epochs)
    }

    /// Reads what the fences index gained since it was last read, so that
    /// [`FencedLog::highest`] and [`FencedLog::in_force`] know every claim indexed so far.
    pub async fn catch_up(&self) -> Result<()> {
        self.shared.refresh().await
    }

    /// The highest epoch known of a partition (from the index and the markers read).
    pub fn highest(&self, topic: &str, partition: u32) -> Option<Epoch> {
        self.shared
            .known()
            .markers
            .get(topic, partition)
            .and_then(|m| m.highest().cloned())
    }

    /// The epoch in force at `offset` of a fenced partition: the highest of the markers
    /// before it, as far as the index was read ([`FencedLog::catch_up`]) and markers were
    /// read. A record the caller keeps elsewhere (a snapshot covering the partition up to
    /// `offset`) that was written under an older epoch is stale.
    pub fn in_force(&self, topic: &str, partition: u32, offset: u64) -> Option<Epoch> {
        self.shared
            .known()
            .markers
            .get(topic, partition)
            .and_then(|m| m.in_force(offset).cloned())
    }
}

/// Adds `epoch` to a record its owner writes to a fenced partition.
pub fn stamp(record: &mut NewRecord, epoch: &Epoch) {
    record
        .headers
        .push((EPOCH_HEADER.to_string(), epoch.to_string()));
}

/// A key that the log's partitioner sends to `partition` of an `n`-partition topic, for
/// records that belong to a partition rather than to a key (markers, snapshots).
pub fn key_for_partition(partition: u32, n: u32) -> String {
    (0u64..)
        .map(|i| format!("partition-{partition}-{i}"))
        .find(|k| partition_for(k, n) == partition)
        .expect("some key hashes to every partition")
}

#[async_trait]
impl EventLog for FencedLog {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.shared.inner.create_topic(topic, partitions).await
    }

    async fn partitions(&self, topic: &str) -> Result<u32> {
        self.shared.inner.partitions(topic).await
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Position>> {
        self.shared.inner.append(records).await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.shared.inner.end_offset(topic, partition).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>> {
        Ok(self
            .read_through(topic, partition, from, max, wait)
            .await?
            .0)
    }

    async fn read_through(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Record>, u64)> {
        let inner = &self.shared.inner;
        if !self.shared.fenced.contains(topic) {
            return inner.read_through(topic, partition, from, max, wait).await;
        }
        let goes_on = self.shared.known().read_next.get(topic, partition) == Some(&Some(from));
        if !goes_on {
            self.shared.refresh().await?;
        }
        let mut next = from;
        loop {
            let batch = inner.read(topic, partition, next, max, wait).await?;
            let Some(last) = batch.last() else {
                return Ok((batch, next));
            };
            next = last.offset + 1;
            let delivered = self.shared.filter(batch, |_| {});
            *self.shared.known().read_next.entry(topic, partition) = Some(next);
            // A batch of only markers and stale records says nothing about the end: read on.
            if !delivered.is_empty() {
                return Ok((delivered, next));
            }
        }
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>> {
        let inner = self.shared.inner.consumer(group, topics).await?;
        if !topics.iter().any(|t| self.shared.fenced.contains(t)) {
            return Ok(inner);
        }
        Ok(Box::new(FencedConsumer {
            inner,
            shared: Arc::clone(&self.shared),
            next: ByPartition::default(),
            skipped_through: ByPartition::default(),
        }))
    }

    async fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        self.shared.inner.committed(group, topic, partition).await
    }
}

/// A consumer of a [`FencedLog`]: delivers what the reading rule lets through.
struct FencedConsumer {
    inner: Box<dyn Consumer>,
    shared: Arc<Shared>,
    /// Per partition, the offset after the last record polled: a record elsewhere means the
    /// partition was (re)assigned and the index may know markers before it.
    next: ByPartition<Option<u64>>,
    /// Per partition, `(a, b)`: the records in `a..b` were skipped and follow the last one
    /// delivered, so a commit of `a` may commit `b`.
    skipped_through: ByPartition<Option<(u64, u64)>>,
}

#[async_trait]
impl Consumer for FencedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let batch = self.inner.poll(max, wait).await?;
        let jumped = batch.iter().any(|r| {
            self.shared.fenced.contains(&r.topic)
                && self.next.get(&r.topic, r.partition) != Some(&Some(r.offset))
        });
        if jumped {
            self.shared.refresh().await?;
        }
        // Later records of a partition in this batch follow on from earlier ones.
        for r in &batch {
            *self.next.entry(&r.topic, r.partition) = Some(r.offset + 1);
        }
        let skipped_through = &mut self.skipped_through;
        let delivered = self.shared.filter(batch, |r| {
            let run = skipped_through.entry(&r.topic, r.partition);
            match run {
                Some((_, b)) if *b == r.offset => *b = r.offset + 1,
                _ => *run = Some((r.offset, r.offset + 1)),
            }
        });
        // A delivered record after skipped ones ends their run.
        for r in &delivered {
            if let Some(Some((a, _))) = self.skipped_through.get(&r.topic, r.partition)
                && *a <= r.offset
            {
                self.skipped_through.remove(&r.topic, r.partition);
            }
        }
        Ok(delivered)
    }

    async fn commit(&mut self, offsets: &[(String, u32, u64)]) -> Result<()> {
        let extended: Vec<(String, u32, u64)> = offsets
            .iter()
            .map(|(t, p, at)| match self.skipped_through.get(t, *p) {
                Some(Some((a, b))) if a == at => (t.clone(), *p, *b),
                _ => (t.clone(), *p, *at),
            })
            .collect();
        self.inner.commit(&extended).await
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.inner.assignment()
    }

    fn rejoin_when_orphaned(&mut self, after: Duration) {
        self.inner.rejoin_when_orphaned(after);
    }

    fn rebalances(&self) -> u64 {
        self.inner.rebalances()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: u64, owner: &str) -> Epoch {
        Epoch {
            n,
            owner: owner.into(),
        }
    }

    fn rec(headers: &[(&str, String)]) -> Record {
        Record {
            topic: "events".into(),
            partition: 0,
            offset: 7,
            key: "k".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_string(), v.clone()))
                .collect(),
            payload: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn epochs_order_by_number_then_owner_and_round_trip_as_text() {
        assert!(epoch(2, "a") > epoch(1, "z"));
        assert!(epoch(2, "b") > epoch(2, "a"));
        let e = epoch(12, "engine:host-1");
        assert_eq!(e.to_string().parse::<Epoch>(), Ok(e));
        assert!("x:y".parse::<Epoch>().is_err());
        assert!("7".parse::<Epoch>().is_err());
    }

    #[test]
    fn given_a_newer_marker_when_an_older_epochs_record_follows_then_it_is_stale() {
        let r = rec(&[(EPOCH_HEADER, epoch(3, "a").to_string())]);
        assert_eq!(judge(Some(&epoch(4, "b")), &r), Verdict::Stale);
        // The same owner, a later claim of its own.
        assert_eq!(judge(Some(&epoch(4, "a")), &r), Verdict::Stale);
    }

    #[test]
    fn given_a_marker_when_its_own_or_a_newer_epoch_writes_then_the_record_is_delivered() {
        let r = rec(&[(EPOCH_HEADER, epoch(4, "b").to_string())]);
        assert_eq!(judge(Some(&epoch(4, "b")), &r), Verdict::Deliver);
        assert_eq!(judge(Some(&epoch(3, "a")), &r), Verdict::Deliver);
    }

    #[test]
    fn given_no_marker_or_no_epoch_then_the_record_is_delivered() {
        let stamped = rec(&[(EPOCH_HEADER, epoch(1, "a").to_string())]);
        assert_eq!(judge(None, &stamped), Verdict::Deliver);
        let plain = rec(&[("reason", "x".into())]);
        assert_eq!(judge(Some(&epoch(9, "z")), &plain), Verdict::Deliver);
    }

    #[test]
    fn a_marker_is_recognised_whatever_the_epoch_in_force() {
        let m = rec(&[(MARKER_HEADER, epoch(2, "b").to_string())]);
        assert_eq!(
            judge(Some(&epoch(5, "c")), &m),
            Verdict::Marker(epoch(2, "b"))
        );
        assert_eq!(judge(None, &m), Verdict::Marker(epoch(2, "b")));
    }

    #[test]
    fn the_epoch_in_force_is_the_highest_marker_strictly_before_the_offset() {
        let mut m = Markers::default();
        m.0.insert(10, epoch(1, "a"));
        m.0.insert(20, epoch(3, "c"));
        // A marker of a claim that lost the race to a higher one, written after it.
        m.0.insert(30, epoch(2, "b"));
        assert_eq!(m.in_force(10), None);
        assert_eq!(m.in_force(11), Some(&epoch(1, "a")));
        assert_eq!(m.in_force(21), Some(&epoch(3, "c")));
        assert_eq!(m.in_force(31), Some(&epoch(3, "c")));
        assert_eq!(m.highest(), Some(&epoch(3, "c")));
    }
}
