//! The port's conformance suite against `JournalLog`, plus what only the journal promises:
//! crash durability under `kill -9`, recovery from a torn tail, exclusive ownership.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use distorch_eventlog::conformance::{self, embedded, payloads};
use distorch_eventlog::journal::{JournalLog, JournalOptions};
use distorch_eventlog::{EventLog, LogError, NewRecord, Result};

fn try_open(path: &Path) -> Result<Arc<dyn EventLog>> {
    Ok(Arc::new(JournalLog::open(path)?))
}

fn open(path: &Path) -> Arc<dyn EventLog> {
    embedded::open_when_released(try_open, path).expect("open")
}

/// Without preallocation, so the file ends where the frames do.
fn open_plain(path: &Path) -> Arc<dyn EventLog> {
    let plain = |path: &Path| -> Result<Arc<dyn EventLog>> {
        let options = JournalOptions { preallocate: false };
        Ok(Arc::new(JournalLog::open_with(path, options)?))
    };
    embedded::open_when_released(plain, path).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_a_fresh_file_per_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::fresh_file_per_check(try_open, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_one_shared_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::one_shared_log(try_open, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::durability_across_reopen(try_open, dir.path()).await;
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    embedded::a_second_open_fails_until_the_first_is_dropped(try_open, dir.path()).await;
}

#[tokio::test]
async fn a_file_that_is_not_a_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    std::fs::write(&path, b"SQLite format 3\0 and more").expect("write");
    match JournalLog::open(&path) {
        Err(LogError::Storage(msg)) => assert!(msg.contains("not a DisTorch journal"), "{msg}"),
        other => panic!("expected a Storage error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"SQLite format 3\0 and more"
    );
}

/// A crash while a new journal's header was being written leaves at most the header, or a
/// prefix of it, or zeros: the journal starts over instead of refusing to open.
#[tokio::test]
async fn a_journal_whose_creation_was_interrupted_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, bytes) in [&b""[..], b"DTJR", b"\0\0\0\0\0\0\0\0", b"DTJRNL02"]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("new-{i}.journal"));
        std::fs::write(&path, bytes).expect("write");
        let log = open(&path);
        log.create_topic("t", 1).await.expect("create");
        let at = log
            .append(vec![NewRecord::new("t", "k", b"v".to_vec())])
            .await
            .expect("append");
        assert_eq!(at[0].offset, 0, "{bytes:?}");
    }
    let path = dir.path().join("short.journal");
    std::fs::write(&path, b"DTJX").expect("write");
    assert!(
        matches!(JournalLog::open(&path), Err(LogError::Storage(m)) if m.contains("not a DisTorch journal")),
        "a short file that is not a header being written is refused"
    );
}

/// Writes three records to a fresh journal (without preallocation) and returns its size
/// after each append.
async fn three_appends(path: &Path) -> Vec<u64> {
    let log = open_plain(path);
    log.create_topic("t", 1).await.expect("create");
    let mut sizes = Vec::new();
    for i in 0..3u8 {
        log.append(vec![NewRecord::new("t", "k", vec![i; 100])])
            .await
            .expect("append");
        sizes.push(std::fs::metadata(path).expect("size").len());
    }
    sizes
}

/// Damages a journal, given its size after each of [`three_appends`].
type Damage = fn(&Path, &[u64]);

/// A crash in the middle of a write leaves part of a frame (or garbage) after the last
/// acknowledged one: reopening keeps every complete frame, cuts the rest, and appends go on
/// at the next offset.
#[tokio::test]
async fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, Damage); 3] = [
        ("half of the last frame", |path, sizes| {
            let cut = sizes[1] + (sizes[2] - sizes[1]) / 2;
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(cut))
                .expect("cut");
        }),
        ("a flipped byte in the last frame", |path, sizes| {
            let mut bytes = std::fs::read(path).expect("read");
            let at = usize::try_from(sizes[2]).expect("size") - 1;
            bytes[at] ^= 0xff;
            std::fs::write(path, bytes).expect("write");
        }),
        ("garbage after the last frame", |path, sizes| {
            let mut bytes = std::fs::read(path).expect("read");
            bytes.truncate(usize::try_from(sizes[1]).expect("size"));
            bytes.extend_from_slice(&[0xAB; 37]);
            std::fs::write(path, bytes).expect("write");
        }),
    ];
    for (i, (case, damage)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("torn-{i}.journal"));
        let sizes = three_appends(&path).await;
        damage(&path, &sizes);

        let log = open_plain(&path);
        assert_eq!(
            payloads(log.as_ref(), "t", 0).await,
            vec![vec![0; 100], vec![1; 100]],
            "{case}: the two complete records survive, the torn one is gone"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("size").len(),
            sizes[1],
            "{case}: the file is cut after the last complete frame"
        );
        let at = log
            .append(vec![NewRecord::new("t", "k", vec![9; 10])])
            .await
            .expect("append after recovery");
        assert_eq!(at[0].offset, 2, "{case}: offsets continue");
        drop(log);
        let log = open(&path);
        assert_eq!(
            payloads(log.as_ref(), "t", 0).await.len(),
            3,
            "{case}: reopened"
        );
    }
}

/// A group commit is atomic: a crash that loses any part of it (here the last byte, in its
/// end frame) loses all of it, though its first records' frames are whole. The records of
/// one append (a command's events, say) are thus all in the log or none are.
#[tokio::test]
async fn a_group_missing_its_end_is_cut_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    let log = open_plain(&path);
    log.create_topic("t", 1).await.expect("create");
    log.append(vec![NewRecord::new("t", "k", vec![0; 100])])
        .await
        .expect("append");
    let before = std::fs::metadata(&path).expect("size").len();
    let group: Vec<NewRecord> = (1..=3u8)
        .map(|i| NewRecord::new("t", "k", vec![i; 100]))
        .collect();
    log.append(group).await.expect("append a group");
    drop(log);
    let after = std::fs::metadata(&path).expect("size").len();
    assert!(after > before + 300, "three records were written");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(after - 1))
        .expect("cut the last byte");

    let log = open_plain(&path);
    assert_eq!(
        payloads(log.as_ref(), "t", 0).await,
        vec![vec![0; 100]],
        "none of the group's records survive"
    );
    assert_eq!(std::fs::metadata(&path).expect("size").len(), before, "cut");
    let at = log
        .append(vec![NewRecord::new("t", "k", vec![9; 100])])
        .await
        .expect("append after recovery");
    assert_eq!(at[0].offset, 1);
}

/// The size of the journal at `path` once its preallocated space has been added.
async fn preallocated_size(path: &Path, data: u64) -> u64 {
    for _ in 0..200 {
        let size = std::fs::metadata(path).expect("size").len();
        if size > data {
            return size;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no space was preallocated past the {data} bytes of frames");
}

/// Where the frames of a preallocated journal end: walks the frames' length fields from
/// the 8-byte header to the first zero length (the preallocated zeros).
fn frames_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read");
    let mut at = 8;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
    }
    at as u64
}

/// Appends records `[1; 100]`, `[2; 100]`... `[n; 100]` to a fresh journal with
/// preallocation, and returns where its frames end and its size once space was added.
async fn preallocated_journal(path: &Path, n: u8) -> (u64, u64) {
    let log = open(path);
    log.create_topic("t", 1).await.expect("create");
    for i in 1..=n {
        log.append(vec![NewRecord::new("t", "k", vec![i; 100])])
            .await
            .expect("append");
    }
    let data = frames_end(path);
    (data, preallocated_size(path, data).await)
}

/// Zeros ahead of the end are written in advance, kept across a reopen (no cut, no
/// warning: they are not a torn write), and written over by later appends.
#[tokio::test]
async fn preallocated_space_is_kept_and_written_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    let (data, size) = preallocated_journal(&path, 3).await;

    let log = open_plain(&path);
    assert_eq!(payloads(log.as_ref(), "t", 0).await.len(), 3);
    assert_eq!(
        std::fs::metadata(&path).expect("size").len(),
        size,
        "the zeros are kept"
    );
    let at = log
        .append(vec![NewRecord::new("t", "k", vec![4; 100])])
        .await
        .expect("append");
    assert_eq!(at[0].offset, 3);
    assert!(frames_end(&path) > data, "written over the zeros");
    assert_eq!(std::fs::metadata(&path).expect("size").len(), size);
    drop(log);

    let log = open(&path);
    assert_eq!(
        payloads(log.as_ref(), "t", 0).await,
        (1..=4u8).map(|i| vec![i; 100]).collect::<Vec<_>>()
    );
}

/// A crash can persist the later sectors of a write and not the first: bytes after zeros
/// in the preallocated space. The journal ends at the zeros and the rest is cut, so no
/// stale frame can ever follow the next append.
#[tokio::test]
async fn a_torn_write_in_preallocated_space_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    let (data, _) = preallocated_journal(&path, 2).await;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &[0xAB; 300], data + 40))
        .expect("damage");

    let log = open_plain(&path);
    assert_eq!(payloads(log.as_ref(), "t", 0).await.len(), 2);
    assert_eq!(std::fs::metadata(&path).expect("size").len(), data, "cut");
    let at = log
        .append(vec![NewRecord::new("t", "k", vec![3; 100])])
        .await
        .expect("append");
    assert_eq!(at[0].offset, 2);
}

/// Damage that is not a torn write (a complete frame contradicting the ones before it) is
/// reported with its position, not silently dropped.
#[tokio::test]
async fn a_damaged_journal_is_refused_with_the_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    let sizes = three_appends(&path).await;
    // Append a copy of the last record frame: a valid checksum, but offset 2 again.
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes[usize::try_from(sizes[1]).expect("size")..].to_vec();
    bytes.extend_from_slice(&last);
    std::fs::write(&path, &bytes).expect("write");
    match JournalLog::open(&path) {
        Err(LogError::Storage(msg)) => {
            assert!(
                msg.contains(&format!("byte {}", sizes[2])) && msg.contains("expects offset 3"),
                "{msg}"
            );
        }
        other => panic!("expected a Storage error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).expect("read").len(),
        bytes.len(),
        "left as it was"
    );
}

/// Records that left the in-memory tail (the last 1,024 of a partition) are read back from
/// the file.
#[tokio::test]
async fn old_records_are_read_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.journal");
    let log = open(&path);
    log.create_topic("t", 1).await.expect("create");
    let records: Vec<NewRecord> = (0..3000u32)
        .map(|i| NewRecord::new("t", "k", i.to_le_bytes().to_vec()))
        .collect();
    log.append(records).await.expect("append");
    let read = log
        .read("t", 0, 5, 3, std::time::Duration::ZERO)
        .await
        .expect("read");
    let got: Vec<(u64, Vec<u8>)> = read.into_iter().map(|r| (r.offset, r.payload)).collect();
    assert_eq!(
        got,
        (5..8u32)
            .map(|i| (u64::from(i), i.to_le_bytes().to_vec()))
            .collect::<Vec<_>>()
    );
}

/// Appends and commits from many tasks until killed (a no-op in a normal test run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    if let Some(path) = std::env::var_os(CRASH_ENV) {
        conformance::crash::child(open(Path::new(&path))).await;
    }
}

#[test]
fn acknowledged_appends_and_commits_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.journal");
    let acknowledged = conformance::crash::kill_child("kill9_child", CRASH_ENV, &path);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(conformance::crash::verify(open(&path), &acknowledged));
}

const CRASH_ENV: &str = "DISTORCH_EVENTLOG_KILL9_JOURNAL";
