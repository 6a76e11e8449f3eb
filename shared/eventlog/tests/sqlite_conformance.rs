//! The port's conformance suite against `SqliteLog`, plus what only the embedded log
//! promises: crash durability under `kill -9`, exclusive ownership of the file, fair polls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distorch_eventlog::conformance::{self, embedded, poll_n, read_partition};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, LogError, NewRecord, Result, partition_for};

fn try_open(path: &Path) -> Result<Arc<dyn EventLog>> {
    Ok(Arc::new(SqliteLog::open(path)?))
}

fn open(path: &Path) -> Arc<dyn EventLog> {
    embedded::open_when_released(try_open, path).expect("open")
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
async fn a_topic_needs_a_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir.path().join("log.db"));
    let err = log.create_topic("t", 0).await.expect_err("0 partitions");
    assert!(matches!(err, LogError::Invalid(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_consumer_keeps_the_log_open_after_its_handle_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir.path().join("log.db"));
    log.create_topic("t", 1).await.expect("create");
    log.append(vec![NewRecord::new("t", "k", b"v".to_vec())])
        .await
        .expect("append");
    let mut consumer = log
        .consumer("g", &["t".to_owned()])
        .await
        .expect("consumer");
    drop(log);
    assert_eq!(poll_n(consumer.as_mut(), 1).await.len(), 1);
    consumer
        .commit(&[("t".to_owned(), 0, 1)])
        .await
        .expect("commit");
}

/// A partition with a backlog must not hold back another partition's records.
#[tokio::test]
async fn poll_shares_a_batch_across_busy_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir.path().join("log.db"));
    log.create_topic("t", 2).await.expect("create");
    let key_of = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| partition_for(k, 2) == p)
            .expect("a key for every partition")
    };
    let (busy, quiet) = (key_of(0), key_of(1));
    log.append(
        (0..500)
            .map(|i| NewRecord::new("t", busy.as_str(), format!("{i}").into_bytes()))
            .collect(),
    )
    .await
    .expect("append backlog");
    log.append(vec![NewRecord::new("t", quiet.as_str(), b"q".to_vec())])
        .await
        .expect("append");

    let mut consumer = log
        .consumer("g", &["t".to_owned()])
        .await
        .expect("consumer");
    let first = consumer
        .poll(10, Duration::from_secs(5))
        .await
        .expect("poll");
    assert_eq!(first.len(), 10);
    assert!(
        first.iter().any(|r| r.partition == 1),
        "the quiet partition is served in the first batch"
    );
}

/// Appends and commits from many tasks until killed (a no-op in a normal test run); see
/// [`conformance::crash`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_child() {
    if let Some(path) = std::env::var_os(CRASH_ENV) {
        conformance::crash::child(open(Path::new(&path))).await;
    }
}

#[test]
fn acknowledged_appends_and_commits_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let acknowledged = conformance::crash::kill_child("kill9_child", CRASH_ENV, &path);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(conformance::crash::verify(open(&path), &acknowledged));
}

const CRASH_ENV: &str = "DISTORCH_EVENTLOG_KILL9_DB";

/// A file of layout 0 (`records` as a `WITHOUT ROWID` table) opens with every record at its
/// topic, partition and offset, and appends continue where they stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_0_log_is_migrated_and_keeps_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    let topics = [("orders", 3), ("big", 1)];
    let log = open(&path);
    for (topic, partitions) in topics {
        log.create_topic(topic, partitions).await.expect("create");
    }
    let mut records: Vec<NewRecord> = (0..120)
        .map(|i| {
            let mut r = NewRecord::new("orders", format!("k{}", i % 7), vec![b'x'; 50 + i]);
            if i % 3 == 0 {
                r.headers.push(("n".into(), i.to_string()));
            }
            r
        })
        .collect();
    // Larger than a page: stored with overflow pages in either layout.
    records.push(NewRecord::new("big", "k", vec![b'y'; 200_000]));
    log.append(records).await.expect("append");
    let mut before = Vec::new();
    for (topic, partitions) in topics {
        for p in 0..partitions {
            before.push(read_partition(log.as_ref(), topic, p).await);
        }
    }
    drop(log);

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch(
        "ALTER TABLE records RENAME TO r;
         CREATE TABLE records (
             topic_id INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
             key TEXT NOT NULL, headers BLOB, payload BLOB NOT NULL,
             timestamp_ms INTEGER NOT NULL, PRIMARY KEY (topic_id, part, off)
         ) WITHOUT ROWID;
         INSERT INTO records SELECT topic_id, part, off, key, headers, payload, timestamp_ms
             FROM r;
         DROP TABLE r;
         PRAGMA user_version = 0;",
    )
    .expect("write layout 0");
    drop(conn);

    let log = open(&path);
    let mut after = Vec::new();
    for (topic, partitions) in topics {
        for p in 0..partitions {
            after.push(read_partition(log.as_ref(), topic, p).await);
        }
    }
    assert_eq!(after, before);
    assert_eq!(after.iter().map(Vec::len).sum::<usize>(), 121);
    let end = log.end_offset("orders", 0).await.expect("end");
    let key = (0..)
        .map(|i| format!("new{i}"))
        .find(|k| partition_for(k, 3) == 0)
        .expect("a key of partition 0");
    let at = log
        .append(vec![NewRecord::new("orders", key, b"next".to_vec())])
        .await
        .expect("append after migration");
    assert_eq!((at[0].partition, at[0].offset), (0, end));
    drop(log);

    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'records'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert!(!sql.contains("WITHOUT ROWID"), "still layout 0: {sql}");
}

/// `PacedCommits` holds handled offsets until its interval passes, and `commit_rest` commits
/// them at once (what the saga and the alerter do at shutdown).
#[tokio::test]
async fn paced_commits_commit_the_rest_at_shutdown() {
    use distorch_eventlog::offsets::PacedCommits;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(&dir.path().join("log.db"));
    log.create_topic("events", 1).await.expect("create");
    let records = (0..3)
        .map(|i| NewRecord::new("events", "k", vec![i]))
        .collect();
    log.append(records).await.expect("append");
    let mut consumer = log
        .consumer("g", &["events".to_owned()])
        .await
        .expect("join");
    let polled = poll_n(consumer.as_mut(), 3).await;

    let mut paced = PacedCommits::new(Duration::from_secs(3600));
    paced.handled(&polled);
    assert_eq!(paced.due(std::time::Instant::now()), None);
    assert_eq!(
        log.committed("g", "events", 0).await.expect("committed"),
        None
    );
    paced
        .commit_rest(consumer.as_mut())
        .await
        .expect("commit the rest");
    assert_eq!(
        log.committed("g", "events", 0).await.expect("committed"),
        Some(3)
    );
    paced
        .commit_rest(consumer.as_mut())
        .await
        .expect("nothing left is fine");
}
