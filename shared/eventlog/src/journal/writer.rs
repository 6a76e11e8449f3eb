//! The journal side of a group commit: frames collected in memory, one `pwrite` at the end
//! of the file, one `fdatasync`; the index learns the new frames only after both succeeded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, PoisonError, RwLock};

use super::frame;
use super::prealloc::Preallocator;
use super::{Index, StoredTopic};
use crate::local::{StorageWriter, Topic};
use crate::{LogError, NewRecord, Result};

pub(crate) struct JournalWriter {
    file: File,
    /// Where the next group goes: the end of the last durable frame.
    end: u64,
    /// Zeros ahead of `end`, so that most groups overwrite allocated space.
    space: Preallocator,
    index: Arc<RwLock<Index>>,
    /// Every durable topic.
    topics: Vec<StoredTopic>,
    /// Why the journal stopped accepting writes, after a failed sync.
    poisoned: Option<String>,
    group: Staged,
}

/// The group being written.
#[derive(Default)]
struct Staged {
    frames: Vec<u8>,
    topics: Vec<StoredTopic>,
    /// (topic id, partition) -> frame positions of the group's records, in offset order.
    records: Vec<((u32, u32), u64)>,
    commits: Vec<((String, u32, u32), u64)>,
}

impl Staged {
    fn clear(&mut self) {
        self.frames.clear();
        self.topics.clear();
        self.records.clear();
        self.commits.clear();
    }
}

fn id(topic_id: i64) -> Result<u32> {
    u32::try_from(topic_id)
        .map_err(|_| LogError::Storage(format!("topic id {topic_id} out of range")))
}

impl JournalWriter {
    /// A writer appending at `end` to `file`, which is `allocated` bytes long (zeros past
    /// `end`); `preallocate` keeps zeros ahead of the end.
    pub(crate) fn new(
        file: File,
        (end, allocated): (u64, u64),
        preallocate: bool,
        index: Arc<RwLock<Index>>,
        topics: Vec<StoredTopic>,
    ) -> Self {
        Self {
            space: Preallocator::start(&file, end, allocated, preallocate),
            file,
            end,
            index,
            topics,
            poisoned: None,
            group: Staged::default(),
        }
    }

    /// The position the next frame of this group will have.
    fn next_position(&self) -> u64 {
        self.end + self.group.frames.len() as u64
    }
}

impl StorageWriter for JournalWriter {
    fn begin(&mut self) -> Result<()> {
        if let Some(why) = &self.poisoned {
            return Err(LogError::Storage(format!(
                "the journal refuses writes since a failed sync ({why}); restart the process \
                 to recover from what is on disk"
            )));
        }
        self.group.clear();
        Ok(())
    }

    fn create_topic(&mut self, name: &str, partitions: u32) -> Result<i64> {
        let known = self.topics.len() + self.group.topics.len();
        let id = u32::try_from(known + 1)
            .map_err(|_| LogError::Storage("the journal has too many topics".to_owned()))?;
        frame::encode_topic(&mut self.group.frames, id, partitions, name);
        self.group.topics.push(StoredTopic {
            id,
            name: name.to_owned(),
            partitions,
        });
        Ok(i64::from(id))
    }

    fn append(
        &mut self,
        topic_id: i64,
        partition: u32,
        offset: u64,
        record: &NewRecord,
        now_ms: i64,
    ) -> Result<()> {
        let topic_id = id(topic_id)?;
        let at = self.next_position();
        frame::encode_record(
            &mut self.group.frames,
            topic_id,
            partition,
            offset,
            record,
            now_ms,
        );
        self.group.records.push(((topic_id, partition), at));
        Ok(())
    }

    fn commit_offset(
        &mut self,
        group: &str,
        topic_id: i64,
        partition: u32,
        next: u64,
    ) -> Result<()> {
        let topic_id = id(topic_id)?;
        frame::encode_commit(&mut self.group.frames, topic_id, partition, next, group);
        self.group
            .commits
            .push(((group.to_owned(), topic_id, partition), next));
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.group.frames.is_empty() {
            return Ok(());
        }
        // Recovery keeps a group only with its end frame: all of it or none.
        let body = self.group.frames.len();
        let frames = self.group.topics.len() + self.group.records.len() + self.group.commits.len();
        frame::encode_end(
            &mut self.group.frames,
            u32::try_from(frames).expect("a group holds fewer than 2^32 frames"),
        );
        let end = self.end + self.group.frames.len() as u64;
        self.space.reserve(end);
        if let Err(e) = self.file.write_all_at(&self.group.frames, self.end) {
            self.group.frames.truncate(body);
            // Nothing was acknowledged: cut what part of the group reached the file, so the
            // next group starts at a clean end. If even that fails, stop writing.
            if let Err(cut) = self.space.cut(self.end, || self.file.set_len(self.end)) {
                self.poisoned = Some(format!("write: {e}; truncate: {cut}"));
            }
            return Err(LogError::Storage(format!("writing to the journal: {e}")));
        }
        if let Err(e) = self.file.sync_data() {
            self.group.frames.truncate(body);
            self.poisoned = Some(e.to_string());
            return Err(LogError::Storage(format!("syncing the journal: {e}")));
        }
        self.end = end;
        self.space.written(end);
        let group = std::mem::take(&mut self.group);
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (key, at) in group.records {
            index.records.entry(key).or_default().push(at);
        }
        for (key, next) in group.commits {
            index.commits.insert(key, next);
        }
        drop(index);
        self.topics.extend(group.topics);
        // Keep the buffer's capacity for the next group.
        self.group.frames = group.frames;
        self.group.frames.clear();
        Ok(())
    }

    fn abort(&mut self) {
        self.group.clear();
    }

    fn reload(&mut self) -> Result<Vec<Topic>> {
        // The index only ever holds durable frames, so it is what the file says.
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        Ok(self.topics.iter().map(|t| t.to_topic(&index)).collect())
    }
}
