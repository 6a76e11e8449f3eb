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
    tails: Box<[Mutex<VecDeque<Record>>]>,
}

impl Topic {
    pub(crate) fn new(id: i64, name: String, ends: Vec<u64>) -> Self {
        Self {
            id,
            name,
            tails: ends.iter().map(|_| Mutex::new(VecDeque::new())).collect(),
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
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail
            .back()
            .is_some_and(|last| last.offset + 1 != record.offset)
        {
            tail.clear();
        }
        tail.push_back(record);
        if tail.len() > TAIL_CAPACITY {
            tail.pop_front();
        }
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
        let first = tail.front()?.offset;
        let last = tail.back()?.offset;
        if from < first || from > last {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(tail.iter().skip(skip).take(max).cloned().collect())
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
