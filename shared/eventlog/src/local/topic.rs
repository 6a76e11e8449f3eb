//! In-memory state of a topic shared by the writer thread and the async readers.
//!
//! The end offsets live here rather than in SQLite so that "is there anything new?" (asked by
//! every long-poll, many times a second) costs an atomic load instead of a query, and so that
//! a reader never sees an offset whose transaction has not committed: the writer publishes
//! them only after `COMMIT` returned.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use tokio::sync::Notify;

use crate::{LogError, Record, Result};

/// Records kept in memory per partition: readers at (or near) the tail, which is nearly
/// every reader, are served from here without a query.
const TAIL_CAPACITY: usize = 1024;
/// Bytes of records kept in memory per partition, whatever their count: a topic of large
/// records (engine snapshots are chunks of up to 256 KiB) would otherwise keep a thousand
/// of them. Readers of older records go to storage.
const TAIL_BYTES: usize = 1 << 20;

/// One topic: its row id, per-partition end offsets and the long-pollers to wake.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) id: i64,
    pub(crate) name: String,
    /// Next offset of each partition; index = partition. Only the writer stores.
    ends: Box<[AtomicU64]>,
    /// Waiters to wake after a commit appended to this topic. `Weak` so that a consumer or
    /// reader that went away needs no explicit unsubscribe.
    listeners: Mutex<Vec<Weak<Notify>>>,
    /// The latest committed records of each partition, contiguous by offset; index =
    /// partition. Only the writer pushes, after commit.
    tails: Box<[Mutex<Tail>]>,
}

/// The latest records of one partition, bounded by [`TAIL_CAPACITY`] and [`TAIL_BYTES`].
#[derive(Debug, Default)]
struct Tail {
    records: VecDeque<Record>,
    /// Sum of [`size`] over `records`.
    bytes: usize,
}

/// What a record holds in memory, roughly: its key, headers and payload.
fn size(record: &Record) -> usize {
    record.key.len()
        + record.payload.len()
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

impl Tail {
    fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    fn push(&mut self, record: Record) {
        if self
            .records
            .back()
            .is_some_and(|last| last.offset + 1 != record.offset)
        {
            self.clear();
        }
        self.bytes += size(&record);
        self.records.push_back(record);
        // The newest record stays even when it alone is over the byte bound: a reader at
        // the end is served from memory, which is what the tail is for.
        while self.records.len() > TAIL_CAPACITY
            || (self.bytes > TAIL_BYTES && self.records.len() > 1)
        {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= size(&old);
            }
        }
    }
}

impl Topic {
    pub(crate) fn new(id: i64, name: String, ends: Vec<u64>) -> Self {
        Self {
            id,
            name,
            tails: ends.iter().map(|_| Mutex::default()).collect(),
            ends: ends.into_iter().map(AtomicU64::new).collect(),
            listeners: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn partitions(&self) -> u32 {
        // A topic has at most u32::MAX partitions by construction (create_topic takes a u32).
        self.ends.len() as u32
    }

    /// The committed end offset of `partition`, or `UnknownPartition`.
    pub(crate) fn end(&self, partition: u32) -> Result<u64> {
        self.ends
            .get(partition as usize)
            .map(|end| end.load(Ordering::Acquire))
            .ok_or_else(|| self.unknown_partition(partition))
    }

    pub(crate) fn check_partition(&self, partition: u32) -> Result<()> {
        self.end(partition).map(drop)
    }

    pub(crate) fn unknown_partition(&self, partition: u32) -> LogError {
        LogError::UnknownPartition {
            topic: self.name.clone(),
            partitions: self.partitions(),
            partition,
        }
    }

    /// Writer only, after commit. The store happens-before the listeners' mutex is taken in
    /// [`Topic::wake_all`], which is what makes [`Topic::subscribe`]-then-check race free.
    pub(crate) fn publish_end(&self, partition: u32, end: u64) {
        if let Some(slot) = self.ends.get(partition as usize) {
            slot.store(end, Ordering::Release);
        }
    }

    /// Registers `waiter` to be notified after every commit that appends to this topic.
    ///
    /// Subscribe before checking the end offsets: `notify_one` stores a permit when nobody
    /// is waiting yet, so an append landing between the check and the `.await` is not lost.
    pub(crate) fn subscribe(&self, waiter: &Arc<Notify>) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Timed-out one-shot readers leave dead entries; sweep them here too so that a topic
        // nobody appends to does not accumulate them.
        listeners.retain(|w| w.strong_count() > 0);
        listeners.push(Arc::downgrade(waiter));
    }

    /// Writer only, after commit and before [`Topic::publish_end`]: remembers committed
    /// records (offsets contiguous with what the tail holds; otherwise it starts over).
    pub(crate) fn push_tail(&self, partition: u32, record: Record) {
        let Some(tail) = self.tails.get(partition as usize) else {
            return;
        };
        tail.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// Forgets the remembered records (after a failed write, when what reached the disk is
    /// uncertain; readers then go to the database).
    pub(crate) fn clear_tails(&self) {
        for tail in self.tails.iter() {
            tail.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Up to `max` records from offset `from` if the tail holds `from`; `None` sends the
    /// reader to the database.
    pub(crate) fn read_tail(&self, partition: u32, from: u64, max: usize) -> Option<Vec<Record>> {
        let tail = self.tails.get(partition as usize)?;
        let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        let first = tail.records.front()?.offset;
        let last = tail.records.back()?.offset;
        if from < first || from > last {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(tail.records.iter().skip(skip).take(max).cloned().collect())
    }

    pub(crate) fn wake_all(&self) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|w| match w.upgrade() {
            Some(waiter) => {
                waiter.notify_one();
                true
            }
            None => false,
        });
    }
}

/// Name -> topic, shared by the writer (which inserts after creating) and the readers.
#[derive(Debug, Default)]
pub(crate) struct Topics(RwLock<HashMap<String, Arc<Topic>>>);

impl Topics {
    pub(crate) fn get(&self, name: &str) -> Result<Arc<Topic>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_owned()))
    }

    pub(crate) fn insert(&self, topic: Arc<Topic>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.name.clone(), topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, payload_bytes: usize) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            key: "k".into(),
            headers: Vec::new(),
            payload: vec![0; payload_bytes],
            timestamp_ms: 0,
        }
    }

    fn offsets(topic: &Topic) -> Vec<u64> {
        let tail = topic.tails[0].lock().unwrap();
        tail.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_tail_of_large_records_keeps_only_the_newest_megabyte() {
        let topic = Topic::new(1, "t".into(), vec![0]);
        for offset in 0..10 {
            topic.push_tail(0, record(offset, 300 * 1024));
        }
        assert_eq!(
            offsets(&topic),
            vec![7, 8, 9],
            "three 300 KiB records fit in 1 MiB"
        );
        assert!(
            topic.read_tail(0, 2, 10).is_none(),
            "older records are read from storage"
        );
        let served: Vec<u64> = topic
            .read_tail(0, 8, 10)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(served, vec![8, 9]);
    }

    #[test]
    fn the_newest_record_stays_even_when_it_alone_is_over_the_bound() {
        let topic = Topic::new(1, "t".into(), vec![0]);
        topic.push_tail(0, record(0, 10));
        topic.push_tail(0, record(1, 2 * TAIL_BYTES));
        assert_eq!(offsets(&topic), vec![1]);
        topic.push_tail(0, record(2, 10));
        assert_eq!(
            offsets(&topic),
            vec![2],
            "the large record leaves with the next one"
        );
    }

    #[test]
    fn a_tail_of_small_records_is_bounded_by_count() {
        let topic = Topic::new(1, "t".into(), vec![0]);
        for offset in 0..(TAIL_CAPACITY as u64 + 5) {
            topic.push_tail(0, record(offset, 10));
        }
        let kept = offsets(&topic);
        assert_eq!(kept.len(), TAIL_CAPACITY);
        assert_eq!(kept.first(), Some(&5));
    }
}
