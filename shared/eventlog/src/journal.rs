//! The embedded log on an append-only journal file, the default of `distorch standalone`.
//!
//! Every group the writer thread collects (appends, topic creations, group commits) becomes
//! checksummed frames (see `frame`) written with one `pwrite` at the end of the file and made
//! durable with one `fdatasync`; a caller is answered only after both returned, so an
//! acknowledged append or commit survives `kill -9` and power loss. Nothing is ever written
//! in place: a log is written once and read many times, which a B-tree (see
//! [`crate::sqlite`]) pays for with page bookkeeping at every commit.
//!
//! In memory: each partition's end offset and the file positions of a sample of its records
//! (see [`Positions`]: a fraction of a byte a record, so memory does not grow with every
//! record written), and every group's committed offsets; all are rebuilt by one sequential
//! scan when the file is opened. A read starts at the sampled record at or before the offset
//! it wants and scans forward, skipping the frames of other partitions; nearly every reader
//! is at the end of its partition and is served from memory instead (see `local::topic`). The
//! scan stops at the first frame that runs past the end of the file, fails its checksum or
//! is zeros, and keeps only whole groups (each ends with an end frame, see `frame`). Zeros to
//! the end of the file are space preallocated ahead of the end (see `prealloc`) and are
//! kept; anything else after the last whole group is where a crash interrupted a write that
//! was never acknowledged, and the file is cut there.
//!
//! After a failed `fdatasync` the kernel may have dropped the unwritten pages while marking
//! them clean, so nothing written since the last good sync can be trusted: the journal then
//! refuses every further write until the process restarts and recovers from what is on disk.

mod frame;
mod prealloc;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use crate::local::{LocalLog, Source, Storage, Topic, lock_file};
use crate::{LogError, Record, Result};
use frame::{Frame, HEADER, MAGIC, MAGIC_V1};
use writer::JournalWriter;

/// The embedded, durable [`crate::EventLog`] backed by one append-only journal file.
pub type JournalLog = LocalLog<Journal>;

/// Names the journal storage in [`LocalLog`]'s type.
#[derive(Debug)]
pub enum Journal {}

/// How a journal is opened.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Keep a few MB of synced zeros ahead of the end (see `prealloc`), so that group
    /// commits overwrite allocated space and their syncs flush only data. Default: on.
    pub preallocate: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { preallocate: true }
    }
}

impl JournalLog {
    /// Opens (creating if missing) the journal at `path`, recovering it after a crash.
    ///
    /// Blocking: it reads the whole file once. Call it at startup, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, JournalOptions::default())
    }

    /// [`JournalLog::open`] with options.
    pub fn open_with(path: impl AsRef<Path>, options: JournalOptions) -> Result<Self> {
        let path = path.as_ref();
        let lock = lock_file(path)?;
        let io = |what: &'static str| {
            move |e: std::io::Error| LogError::Storage(format!("{what} {}: {e}", path.display()))
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening the journal"))?;
        let recovered = recover(&file, path)?;
        let reader = file.try_clone().map_err(io("opening the journal"))?;
        let topics = recovered
            .topics
            .iter()
            .map(|t| t.to_topic(&recovered.index))
            .collect();
        let index = Arc::new(RwLock::new(recovered.index));
        let storage = Arc::new(JournalStorage {
            file: reader,
            index: Arc::clone(&index),
        });
        let writer = JournalWriter::new(
            file,
            (recovered.end, recovered.allocated),
            options.preallocate,
            index,
            recovered.topics,
        );
        Self::start(lock, storage, writer, topics)
    }
}

/// Records of a partition between two whose file position the index keeps.
const STRIDE: u64 = 64;
/// File bytes after a partition's last sampled record beyond which its next record is
/// sampled too, however few records lie between: a read never scans much more than this,
/// even in a partition whose records are far apart (definitions, dead letters).
const GAP: u64 = 1 << 20;

/// What the file says, as of the last good frame.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Where the records of each (topic id, partition) are.
    records: HashMap<(u32, u32), Positions>,
    /// The committed next-offset per (group, topic id, partition).
    commits: HashMap<(String, u32, u32), u64>,
}

/// Where a partition's records are: how many there are, and a sample of their frame
/// positions: the first record, then the next one [`STRIDE`] records or [`GAP`] bytes after
/// the last sampled one, whichever comes first. A scan from a sample to any record before the
/// next sample reads fewer than `STRIDE` of the partition's records and about `GAP` bytes.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Records in the partition: its end offset.
    len: u64,
    /// (offset, frame position) of the sampled records, by offset.
    sampled: Vec<(u64, u64)>,
}

impl Positions {
    /// Adds the next record, whose frame is at `at`.
    pub(crate) fn push(&mut self, at: u64) {
        let due = self
            .sampled
            .last()
            .is_none_or(|&(offset, pos)| self.len - offset >= STRIDE || at - pos >= GAP);
        if due {
            self.sampled.push((self.len, at));
        }
        self.len += 1;
    }

    /// The frame position of a record at or before `offset` (which must be below `len`),
    /// from which a forward scan finds `offset`.
    fn scan_start(&self, offset: u64) -> u64 {
        let after = self.sampled.partition_point(|&(o, _)| o <= offset);
        self.sampled[after - 1].1
    }
}

/// A topic as the journal stores it.
#[derive(Debug, Clone)]
pub(crate) struct StoredTopic {
    id: u32,
    name: String,
    partitions: u32,
}

impl StoredTopic {
    fn to_topic(&self, index: &Index) -> Topic {
        let ends = (0..self.partitions)
            .map(|p| index.records.get(&(self.id, p)).map_or(0, |v| v.len))
            .collect();
        Topic::new(i64::from(self.id), self.name.clone(), ends)
    }
}

struct Recovered {
    index: Index,
    topics: Vec<StoredTopic>,
    /// Where the next frame goes.
    end: u64,
    /// The file's length: `end`, or more when zeros (preallocated space) follow.
    allocated: u64,
}

/// Rebuilds the index from the file and cuts a torn tail; writes the header of a new file.
fn recover(file: &File, path: &Path) -> Result<Recovered> {
    let io = |what: &'static str| {
        move |e: std::io::Error| LogError::Storage(format!("{what} {}: {e}", path.display()))
    };
    let size = file.metadata().map_err(io("reading the size of"))?.len();
    if size <= MAGIC.len() as u64 && unfinished_header(file, size).map_err(io("reading"))? {
        // New, or a crash interrupted its creation (nothing was ever appended): start over.
        file.set_len(0).map_err(io("truncating"))?;
        file.write_all_at(MAGIC, 0)
            .map_err(io("writing the header of"))?;
        file.sync_all().map_err(io("syncing"))?;
        sync_dir(path)?;
        return Ok(Recovered {
            index: Index::default(),
            topics: Vec::new(),
            end: MAGIC.len() as u64,
            allocated: MAGIC.len() as u64,
        });
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0; MAGIC.len()];
    let first_version = match reader.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => false,
        Ok(()) if &magic == MAGIC_V1 => true,
        _ => {
            return Err(LogError::Storage(format!(
                "{} is not a DisTorch journal (or of another version): its first bytes are not \
                 {:?}",
                path.display(),
                String::from_utf8_lossy(MAGIC)
            )));
        }
    };
    let mut state = Recovered {
        index: Index::default(),
        topics: Vec::new(),
        end: MAGIC.len() as u64,
        allocated: size,
    };
    let mut body = Vec::new();
    // The frames of the group being read: they count once its end frame is read.
    let mut group: Vec<(Frame, u64)> = Vec::new();
    // First version: frames applied since the last end frame (an interrupted upgrade's).
    let mut standalone = 0usize;
    let mut at = state.end;
    loop {
        let mut head = [0; HEADER];
        match read_full(&mut reader, &mut head) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io("reading")(e)),
        }
        let (len, crc) = frame::header(&head);
        // Zeros (a preallocated or torn tail) end the journal: no body is empty.
        if len == 0 || at + (HEADER + len) as u64 > size {
            break;
        }
        body.resize(len, 0);
        match read_full(&mut reader, &mut body) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(io("reading")(e)),
        }
        if !frame::checksum_ok(&body, crc) {
            break;
        }
        let next = at + (HEADER + len) as u64;
        match frame::decode(&body, at)? {
            Frame::End { frames } => {
                let seen = if first_version {
                    standalone
                } else {
                    group.len()
                };
                if frames as usize != seen {
                    return Err(LogError::Storage(format!(
                        "the journal {} is damaged at byte {at}: the end of a group of {frames} \
                         frames follows {} frames",
                        path.display(),
                        seen
                    )));
                }
                for (frame, at) in group.drain(..) {
                    apply(&mut state, frame, at, path)?;
                }
                standalone = 0;
                state.end = next;
            }
            // The first version's frames stand alone.
            frame if first_version => {
                apply(&mut state, frame, at, path)?;
                standalone += 1;
                state.end = next;
            }
            frame => group.push((without_contents(frame), at)),
        }
        at = next;
    }
    if state.end < size && !zeros(file, state.end, size).map_err(io("reading"))? {
        tracing::warn!(
            journal = %path.display(),
            kept = state.end,
            dropped = size - state.end,
            "event log journal: cutting an unfinished write at its end (a crash interrupted it \
             before it was acknowledged)"
        );
        file.set_len(state.end).map_err(io("truncating"))?;
        file.sync_all().map_err(io("syncing"))?;
        state.allocated = state.end;
    }
    if first_version {
        upgrade(file, &mut state, standalone).map_err(io("upgrading"))?;
        tracing::info!(journal = %path.display(), "event log journal: moved to format version 2 (groups end with an end frame)");
    }
    Ok(state)
}

/// What recovery keeps of a frame until its group's end: all [`apply`] reads, without a
/// record's key, headers and payload. A group is usually small, but the one an upgrade from
/// the first version closes holds every frame written before it.
fn without_contents(frame: Frame) -> Frame {
    match frame {
        Frame::Record {
            topic_id,
            partition,
            offset,
            timestamp_ms,
            ..
        } => Frame::Record {
            topic_id,
            partition,
            offset,
            timestamp_ms,
            key: String::new(),
            headers: Vec::new(),
            payload: Vec::new(),
        },
        other => other,
    }
}

/// Moves a first-version file to the current one: an end frame after its last frame,
/// closing the `standalone` frames since the previous end (so every frame so far counts as
/// ended), synced, then the current [`MAGIC`]. A crash between the two leaves a
/// first-version file whose extra end frame is read as such.
fn upgrade(file: &File, state: &mut Recovered, standalone: usize) -> std::io::Result<()> {
    let mut end = Vec::new();
    let frames = u32::try_from(standalone).map_err(std::io::Error::other)?;
    frame::encode_end(&mut end, frames);
    file.write_all_at(&end, state.end)?;
    file.sync_data()?;
    file.write_all_at(MAGIC, 0)?;
    file.sync_data()?;
    state.end += end.len() as u64;
    state.allocated = state.allocated.max(state.end);
    Ok(())
}

/// Whether the file holds only zeros from `from` to `to`: space preallocated and never
/// written (see `prealloc`), as opposed to an interrupted write.
fn zeros(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    let mut buf = vec![0; 1 << 20];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(buf.len(), |left| left.min(buf.len()));
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether a file of `size` bytes (at most a header) holds a header being written: nothing,
/// a prefix of [`MAGIC`], or zeros (a size that reached the disk before its data).
fn unfinished_header(file: &File, size: u64) -> std::io::Result<bool> {
    let mut head = vec![0; size as usize];
    file.read_exact_at(&mut head, 0)?;
    Ok(MAGIC.starts_with(&head) || head.iter().all(|&b| b == 0))
}

/// Reads exactly `buf.len()` bytes; `false` when the file ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Adds one recovered frame to the state, checking what the writer guarantees (topics before
/// their records, offsets without gaps), so a damaged file is reported instead of served.
fn apply(state: &mut Recovered, frame: Frame, at: u64, path: &Path) -> Result<()> {
    let corrupt = |what: String| {
        LogError::Storage(format!(
            "the journal {} is damaged at byte {at}: {what}",
            path.display()
        ))
    };
    let partitions_of = |state: &Recovered, id: u32| {
        state
            .topics
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.partitions)
    };
    match frame {
        Frame::Topic {
            id,
            partitions,
            name,
        } => {
            if state.topics.iter().any(|t| t.id == id || t.name == name) {
                return Err(corrupt(format!("topic {name:?} (id {id}) appears twice")));
            }
            state.topics.push(StoredTopic {
                id,
                name,
                partitions,
            });
        }
        Frame::Record {
            topic_id,
            partition,
            offset,
            ..
        } => {
            match partitions_of(state, topic_id) {
                Some(n) if partition < n => {}
                _ => {
                    return Err(corrupt(format!(
                        "a record of unknown topic {topic_id} partition {partition}"
                    )));
                }
            }
            let positions = state
                .index
                .records
                .entry((topic_id, partition))
                .or_default();
            if offset != positions.len {
                return Err(corrupt(format!(
                    "topic {topic_id} partition {partition} expects offset {}, found {offset}",
                    positions.len
                )));
            }
            positions.push(at);
        }
        Frame::Commit {
            topic_id,
            partition,
            next,
            group,
        } => {
            if partitions_of(state, topic_id).is_none_or(|n| partition >= n) {
                return Err(corrupt(format!(
                    "a commit of unknown topic {topic_id} partition {partition}"
                )));
            }
            state
                .index
                .commits
                .insert((group, topic_id, partition), next);
        }
        // A group's end is handled by the scan; the first version's may end with one.
        Frame::End { .. } => {}
    }
    Ok(())
}

/// Makes a new file's directory entry durable.
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::Storage(format!("syncing the directory {}: {e}", dir.display())))
}

fn topic_id(source: &Source) -> Result<u32> {
    u32::try_from(source.topic_id)
        .map_err(|_| LogError::Storage(format!("topic id {} out of range", source.topic_id)))
}

/// The read side: positional reads of the file, located through the shared index.
#[derive(Debug)]
pub(crate) struct JournalStorage {
    file: File,
    index: Arc<RwLock<Index>>,
}

/// Reads frames one after the other from a position of the file, in chunks.
struct Scan<'a> {
    file: &'a File,
    /// File position of `buf[0]`.
    buf_at: u64,
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    next: usize,
}

/// Bytes read from the file at once by a [`Scan`] (more when a frame is larger).
const SCAN_CHUNK: usize = 256 * 1024;

impl<'a> Scan<'a> {
    fn new(file: &'a File, at: u64) -> Self {
        Self {
            file,
            buf_at: at,
            buf: Vec::new(),
            next: 0,
        }
    }

    /// Makes `buf[next..]` hold at least `needed` bytes.
    fn fill(&mut self, needed: usize) -> std::io::Result<()> {
        if self.buf.len() - self.next >= needed {
            return Ok(());
        }
        self.buf.drain(..self.next);
        self.buf_at += self.next as u64;
        self.next = 0;
        let mut filled = self.buf.len();
        self.buf.resize(needed.max(SCAN_CHUNK), 0);
        while filled < needed {
            match self
                .file
                .read_at(&mut self.buf[filled..], self.buf_at + filled as u64)?
            {
                0 => break,
                n => filled += n,
            }
        }
        self.buf.truncate(filled);
        if filled < needed {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// The next frame's position and checked body.
    fn next_frame(&mut self) -> Result<(u64, &[u8])> {
        let at = self.buf_at + self.next as u64;
        let io =
            |e: std::io::Error| LogError::Storage(format!("reading the journal at byte {at}: {e}"));
        self.fill(HEADER).map_err(io)?;
        let head: &[u8; HEADER] = self.buf[self.next..self.next + HEADER]
            .try_into()
            .expect("HEADER bytes");
        let (len, crc) = frame::header(head);
        self.fill(HEADER + len).map_err(io)?;
        let body = &self.buf[self.next + HEADER..self.next + HEADER + len];
        if !frame::checksum_ok(body, crc) {
            return Err(LogError::Storage(format!(
                "the journal's frame at byte {at} fails its checksum"
            )));
        }
        self.next += HEADER + len;
        Ok((at, body))
    }
}

impl Storage for JournalStorage {
    fn read(&self, source: &Source, from: u64, max: usize) -> Result<Vec<Record>> {
        let key = (topic_id(source)?, source.partition);
        let (start, end) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            match index.records.get(&key) {
                Some(positions) if from < positions.len => {
                    (positions.scan_start(from), positions.len)
                }
                _ => return Ok(Vec::new()),
            }
        };
        // Every record below `end` is durable, and so is every frame before it: the scan
        // never reads past what a finished group wrote.
        let want = usize::try_from(end - from).map_or(max, |n| n.min(max));
        let mut records = Vec::with_capacity(want.min(1024));
        let mut scan = Scan::new(&self.file, start);
        while records.len() < want {
            let (at, body) = scan.next_frame()?;
            if frame::record_slot(body)
                .is_some_and(|(t, p, offset)| (t, p) == key && offset >= from)
            {
                records.push(frame::decode_record(body, at, &source.topic)?);
            }
        }
        Ok(records)
    }

    fn group_offset(&self, group: &str, source: &Source) -> Result<Option<u64>> {
        let key = (group.to_owned(), topic_id(source)?, source.partition);
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        Ok(index.commits.get(&key).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{embedded, payloads};
    use crate::{EventLog, NewRecord};

    fn open_plain(path: &Path) -> Arc<dyn EventLog> {
        let open = |path: &Path| -> Result<Arc<dyn EventLog>> {
            let options = JournalOptions { preallocate: false };
            Ok(Arc::new(JournalLog::open_with(path, options)?))
        };
        embedded::open_when_released(open, path).expect("open")
    }

    /// Given records of one partition close together, every `STRIDE`-th is sampled; given
    /// records far apart in the file, each is, so a read never scans from far behind.
    #[test]
    fn positions_are_sampled_by_count_and_by_distance() {
        let mut dense = Positions::default();
        for i in 0..(2 * STRIDE + 1) {
            dense.push(100 + i * 10);
        }
        assert_eq!(
            dense.sampled,
            vec![
                (0, 100),
                (STRIDE, 100 + STRIDE * 10),
                (2 * STRIDE, 100 + 2 * STRIDE * 10)
            ]
        );
        assert_eq!(dense.scan_start(STRIDE - 1), 100);
        assert_eq!(dense.scan_start(STRIDE + 5), 100 + STRIDE * 10);

        let mut sparse = Positions::default();
        let at = [10, 20, 20 + GAP, 30 + GAP, 40 + 3 * GAP];
        for pos in at {
            sparse.push(pos);
        }
        assert_eq!(
            sparse.sampled,
            vec![(0, 10), (2, 20 + GAP), (4, 40 + 3 * GAP)]
        );
        assert_eq!(sparse.scan_start(1), 10);
        assert_eq!(sparse.scan_start(3), 20 + GAP);
        assert_eq!(
            sparse.scan_start(4),
            40 + 3 * GAP,
            "a far record starts its own scan"
        );
    }

    /// The index keeps a sample of the positions only: a read from any offset, of any
    /// length, in a partition whose records are interleaved with other partitions' and
    /// topics' frames and commits, returns exactly the records asked for, before and after
    /// the file is reopened (recovery samples the positions the same way; the reopened log
    /// has no in-memory tail, so every read goes to the file).
    #[tokio::test]
    async fn reads_from_any_offset_between_sampled_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.journal");
        let log = open_plain(&path);
        log.create_topic("a", 2).await.expect("topic a");
        log.create_topic("b", 1).await.expect("topic b");
        let n = 3 * STRIDE + 5;
        for i in 0..n {
            // Group sizes vary, so sampled records sit at every place in a group.
            let mut group = vec![NewRecord::new("a", "k", format!("a{i}").into_bytes())];
            for j in 0..(i % 3) {
                group.push(NewRecord::new("b", "k", format!("b{i}.{j}").into_bytes()));
            }
            if i == STRIDE + 3 {
                // Larger than a scan's chunk.
                group.push(NewRecord::new("b", "k", vec![7; 3 * SCAN_CHUNK / 2]));
            }
            log.append(group).await.expect("append");
        }
        let partition = log
            .append(vec![NewRecord::new("a", "k", b"probe".to_vec())])
            .await
            .expect("probe")[0]
            .partition;
        let expected: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("a{i}").into_bytes())
            .chain([b"probe".to_vec()])
            .collect();
        let check = |log: Arc<dyn EventLog>| {
            let expected = expected.clone();
            async move {
                for from in 0..expected.len() as u64 {
                    for max in [1, 2, STRIDE as usize + 1] {
                        let got: Vec<Vec<u8>> = log
                            .read("a", partition, from, max, std::time::Duration::ZERO)
                            .await
                            .expect("read")
                            .into_iter()
                            .map(|r| {
                                assert_eq!(r.partition, partition);
                                r.payload
                            })
                            .collect();
                        let end = (from as usize + max).min(expected.len());
                        assert_eq!(got, expected[from as usize..end], "from {from}, max {max}");
                    }
                }
            }
        };
        check(Arc::clone(&log)).await;
        drop(log);
        check(open_plain(&path)).await;
    }

    /// A file of the first format version (frames without end frames, each standing alone)
    /// opens with all its frames, is marked as the current version, and goes on.
    #[tokio::test]
    async fn a_first_version_file_keeps_its_frames_and_is_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.journal");
        let mut bytes = MAGIC_V1.to_vec();
        frame::encode_topic(&mut bytes, 1, 1, "t");
        for offset in 0..2u8 {
            let record = NewRecord::new("t", "k", vec![offset; 10]);
            frame::encode_record(&mut bytes, 1, 0, u64::from(offset), &record, 1_000);
        }
        std::fs::write(&path, &bytes).expect("write");

        let log = open_plain(&path);
        assert_eq!(
            payloads(log.as_ref(), "t", 0).await,
            vec![vec![0; 10], vec![1; 10]]
        );
        let upgraded = std::fs::read(&path).expect("read");
        assert_eq!(
            &upgraded[..MAGIC.len()],
            MAGIC,
            "marked as the current version"
        );
        let at = log
            .append(vec![NewRecord::new("t", "k", vec![2; 10])])
            .await
            .expect("append");
        assert_eq!(at[0].offset, 2);
        drop(log);

        let log = open_plain(&path);
        assert_eq!(
            payloads(log.as_ref(), "t", 0).await,
            vec![vec![0; 10], vec![1; 10], vec![2; 10]]
        );
    }
}
