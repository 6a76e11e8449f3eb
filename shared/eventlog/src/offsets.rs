//! Commit bookkeeping for a consumer that settles records out of order.
//!
//! A consumer that hands records to concurrent work (the API's queue dispatcher, a worker
//! reading `tasks.<queue>`) may only commit a partition up to its lowest record still in
//! hand: committing past it would lose that record if the process died. [`OffsetTracker`]
//! keeps, per partition, what was fetched and what is still unsettled, and says what may be
//! committed.
//!
//! A consumer that finishes its records in poll order (the saga, the alerter) needs no such
//! bookkeeping, only [`PacedCommits`]: one commit per interval instead of one per batch.

use crate::{Consumer, Record};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often DisTorch's consumers commit the offsets of what they handled (the engine, the
/// saga processor, the alerter, the HTTP executor, the projector, the API's queue dispatchers
/// and log workers). A commit per batch would be one more log write per batch, on the
/// embedded log often a group commit (an fsync) of its own; what a restart delivers again is
/// at most this interval's records, which every consumer tolerates (command ids, ids derived
/// from the input, idempotent folds).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// Offsets of records handled in poll order, committed at most once per interval.
///
/// Committing after every batch costs a log write per batch, and on a busy embedded log a
/// small write often forms a group commit (an fsync) of its own. Pacing bounds what a restart
/// delivers again to one interval's records, so it suits consumers whose reactions are
/// idempotent on redelivery.
#[derive(Debug)]
pub struct PacedCommits {
    every: Duration,
    last: Instant,
    /// Next offset to commit per (topic, partition), not committed yet.
    pending: BTreeMap<(String, u32), u64>,
}

impl PacedCommits {
    /// Bookkeeping that lets a commit through at most once per `every` (usually
    /// [`COMMIT_INTERVAL`]); the first interval starts now.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            pending: BTreeMap::new(),
        }
    }

    /// `records` are handled: their partitions may be committed past them.
    pub fn handled(&mut self, records: &[Record]) {
        for r in records {
            self.keep(&r.topic, r.partition, r.offset + 1);
        }
    }

    /// Every record of `topic`'s `partition` before offset `next` is handled.
    pub fn handled_before(&mut self, topic: &str, partition: u32, next: u64) {
        self.keep(topic, partition, next);
    }

    fn keep(&mut self, topic: &str, partition: u32, next: u64) {
        let slot = self
            .pending
            .entry((topic.to_owned(), partition))
            .or_default();
        *slot = (*slot).max(next);
    }

    /// Drops what is pending for the partitions `keep` refuses (revoked ones: their next
    /// owner commits them).
    pub fn retain(&mut self, keep: impl Fn(&str, u32) -> bool) {
        self.pending
            .retain(|(topic, partition), _| keep(topic, *partition));
    }

    /// What to commit at `now`: everything pending once the interval since the last commit
    /// has passed, else nothing. The caller commits what it gets.
    pub fn due(&mut self, now: Instant) -> Option<Vec<(String, u32, u64)>> {
        if self.pending.is_empty() || now.duration_since(self.last) < self.every {
            return None;
        }
        self.last = now;
        Some(self.take())
    }

    /// Commits through `consumer` what is [`due`](Self::due) now. A failed commit (a
    /// rebalance, a broker hiccup) keeps its offsets pending for the next interval: it only
    /// means those records come again after a restart, so the caller may log it and go on.
    pub async fn commit_due(&mut self, consumer: &mut (dyn Consumer + '_)) -> crate::Result<()> {
        match self.due(Instant::now()) {
            Some(offsets) => self.commit(consumer, offsets).await,
            None => Ok(()),
        }
    }

    /// Commits everything pending through `consumer`, whatever the time (at shutdown).
    pub async fn commit_rest(&mut self, consumer: &mut (dyn Consumer + '_)) -> crate::Result<()> {
        let rest = self.take();
        self.commit(consumer, rest).await
    }

    /// Commits offsets taken with [`due`](Self::due) or [`take`](Self::take); if the commit
    /// fails they are pending again.
    pub async fn commit(
        &mut self,
        consumer: &mut (dyn Consumer + '_),
        offsets: Vec<(String, u32, u64)>,
    ) -> crate::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let result = consumer.commit(&offsets).await;
        if result.is_err() {
            self.restore(&offsets);
        }
        result
    }

    /// Puts offsets taken with [`due`](Self::due) or [`take`](Self::take) back, for a caller
    /// that could not commit them (what they cover is not durable yet, say).
    pub fn restore(&mut self, offsets: &[(String, u32, u64)]) {
        for (topic, partition, next) in offsets {
            self.keep(topic, *partition, *next);
        }
    }

    /// Everything pending, whatever the time.
    pub fn take(&mut self) -> Vec<(String, u32, u64)> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((topic, partition), next)| (topic, partition, next))
            .collect()
    }
}

/// Per-partition fetch, settle and commit positions of one topic.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<u32, Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Offset after the last record fetched.
    fetched: u64,
    /// Fetched and not yet settled.
    unsettled: BTreeSet<u64>,
    /// Last offset committed by this tracker.
    committed: Option<u64>,
}

impl Progress {
    /// Everything below this is settled.
    fn committable(&self) -> u64 {
        self.unsettled.first().copied().unwrap_or(self.fetched)
    }
}

impl OffsetTracker {
    /// Notes that the record at `offset` was fetched. Returns false when that record is
    /// still held here (a redelivery of something in hand), which the caller should skip.
    pub fn fetched(&mut self, partition: u32, offset: u64) -> bool {
        let p = self.partitions.entry(partition).or_default();
        p.fetched = p.fetched.max(offset + 1);
        !p.unsettled.contains(&offset)
    }

    /// Holds commits of `partition` below `offset` until [`settle`](Self::settle) is called
    /// for it. A fetched record that is not held (undecodable, skipped) counts as settled.
    pub fn hold(&mut self, partition: u32, offset: u64) {
        self.partitions
            .entry(partition)
            .or_default()
            .unsettled
            .insert(offset);
    }

    /// The record at `offset` is done with (its work finished, failed, or was refused).
    pub fn settle(&mut self, partition: u32, offset: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.unsettled.remove(&offset);
        }
    }

    /// Forgets partitions for which `keep` is false (revoked from this member).
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.partitions.retain(|p, _| keep(*p));
    }

    /// Forgets everything, as after leaving the consumer group.
    pub fn clear(&mut self) {
        self.partitions.clear();
    }

    /// `(topic, partition, offset)` for each partition whose committable position moved past
    /// its last commit: the lowest unsettled offset, or the end of what was fetched.
    pub fn to_commit(&self, topic: &str) -> Vec<(String, u32, u64)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.committable() > p.committed.unwrap_or(0))
            .map(|(&partition, p)| (topic.to_owned(), partition, p.committable()))
            .collect()
    }

    /// Records that `offsets` (from [`to_commit`](Self::to_commit)) were committed.
    pub fn committed(&mut self, offsets: &[(String, u32, u64)]) {
        for (_, partition, offset) in offsets {
            if let Some(p) = self.partitions.get_mut(partition) {
                p.committed = Some(*offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(t: &OffsetTracker) -> Vec<(u32, u64)> {
        t.to_commit("q")
            .into_iter()
            .map(|(_, p, o)| (p, o))
            .collect()
    }

    fn record(topic: &str, partition: u32, offset: u64) -> Record {
        Record {
            topic: topic.into(),
            partition,
            offset,
            key: String::new(),
            headers: Vec::new(),
            payload: Vec::new(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn paced_commits_wait_for_the_interval_and_keep_the_highest_offset() {
        let every = Duration::from_millis(250);
        let mut paced = PacedCommits::new(every);
        let start = Instant::now();
        assert_eq!(
            paced.due(start + every),
            None,
            "nothing handled, nothing due"
        );
        paced.handled(&[record("e", 0, 4), record("e", 1, 9), record("e", 0, 5)]);
        paced.handled(&[record("e", 0, 3)]);
        assert_eq!(
            paced.due(start + every / 2),
            None,
            "not before the interval"
        );
        assert_eq!(
            paced.due(start + every),
            Some(vec![("e".into(), 0, 6), ("e".into(), 1, 10)])
        );
        paced.handled(&[record("e", 1, 10)]);
        assert_eq!(
            paced.due(start + every + every / 2),
            None,
            "the interval restarted"
        );
        assert_eq!(paced.take(), vec![("e".to_owned(), 1, 11)]);
        assert_eq!(paced.take(), vec![]);
        paced.handled_before("e", 2, 7);
        paced.handled_before("e", 2, 5);
        paced.handled_before("e", 3, 1);
        paced.handled_before("f", 3, 4);
        paced.retain(|topic, partition| topic != "e" || partition != 3);
        assert_eq!(
            paced.take(),
            vec![("e".to_owned(), 2, 7), ("f".to_owned(), 3, 4)],
            "the highest next offset of each partition kept"
        );
    }

    /// A consumer whose commits fail while `fail` is set, recording those that succeed.
    struct Flaky {
        fail: bool,
        committed: Vec<Vec<(String, u32, u64)>>,
    }

    #[async_trait::async_trait]
    impl Consumer for Flaky {
        async fn poll(&mut self, _: usize, _: Duration) -> crate::Result<Vec<Record>> {
            Ok(Vec::new())
        }
        async fn commit(&mut self, offsets: &[(String, u32, u64)]) -> crate::Result<()> {
            if self.fail {
                return Err(crate::LogError::Storage("rebalance in progress".into()));
            }
            self.committed.push(offsets.to_vec());
            Ok(())
        }
        fn assignment(&self) -> Vec<(String, u32)> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn a_failed_paced_commit_keeps_its_offsets_for_the_next_one() {
        let mut consumer = Flaky {
            fail: true,
            committed: Vec::new(),
        };
        let mut paced = PacedCommits::new(Duration::ZERO);
        paced.handled(&[record("e", 0, 4)]);
        assert!(paced.commit_due(&mut consumer).await.is_err());
        paced.handled(&[record("e", 1, 2)]);
        consumer.fail = false;
        paced.commit_due(&mut consumer).await.expect("commit");
        assert_eq!(
            consumer.committed,
            vec![vec![("e".to_owned(), 0, 5), ("e".to_owned(), 1, 3)]]
        );
        paced
            .commit_rest(&mut consumer)
            .await
            .expect("nothing left");
        assert_eq!(consumer.committed.len(), 1, "an empty commit is not sent");
    }

    #[test]
    fn a_partition_commits_up_to_its_lowest_unsettled_offset() {
        let mut t = OffsetTracker::default();
        for offset in 0..10 {
            assert!(t.fetched(0, offset));
        }
        t.hold(0, 4);
        t.hold(0, 7);
        assert_eq!(commits(&t), [(0, 4)]);
        t.settle(0, 4);
        assert_eq!(commits(&t), [(0, 7)]);
        t.settle(0, 7);
        assert_eq!(commits(&t), [(0, 10)]);
    }

    #[test]
    fn only_partitions_that_moved_since_their_last_commit_are_committed() {
        let mut t = OffsetTracker::default();
        t.fetched(0, 0);
        t.fetched(1, 5);
        t.hold(1, 5);
        assert_eq!(commits(&t), [(0, 1), (1, 5)]);
        let offsets = t.to_commit("q");
        t.committed(&offsets);
        assert_eq!(commits(&t), [], "nothing moved");
        t.settle(1, 5);
        assert_eq!(commits(&t), [(1, 6)]);
    }

    #[test]
    fn a_redelivery_of_a_held_record_is_reported_and_a_revoked_partition_forgotten() {
        let mut t = OffsetTracker::default();
        assert!(t.fetched(2, 3));
        t.hold(2, 3);
        assert!(!t.fetched(2, 3), "still in hand");
        t.settle(2, 3);
        assert!(t.fetched(2, 3), "settled: a redelivery is new work");
        t.hold(3, 0);
        t.retain(|p| p != 3);
        assert_eq!(commits(&t), [(2, 4)]);
        t.clear();
        assert_eq!(commits(&t), []);
    }
}
