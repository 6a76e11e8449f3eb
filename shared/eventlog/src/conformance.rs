//! The conformance suite of the [`EventLog`] port: every backend runs it unchanged.
//!
//! Each check states one clause of the crate contract as behaviour and panics (with a message
//! naming the clause) when a backend breaks it. Checks create their own uniquely named topics
//! (unique across processes too, since a real broker keeps topics between runs), so one log
//! instance may serve them all, concurrently or in sequence.
//!
//! Usage from a backend's integration test (under `#[tokio::test(flavor = "multi_thread")]`):
//! ```no_run
//! use distorch_eventlog::{EventLog, sqlite::SqliteLog};
//! use std::sync::Arc;
//! # async fn conformance() {
//! let dir = tempfile::tempdir().expect("tempdir");
//! let log: Arc<dyn EventLog> =
//!     Arc::new(SqliteLog::open(dir.path().join("log.db")).expect("open"));
//! distorch_eventlog::conformance::run_all(|| {
//!     let log = Arc::clone(&log);
//!     async move { log }
//! })
//! .await;
//! # }
//! ```
//! plus [`durability`] with a factory that reopens the same storage.
//!
//! No check measures time: waits are generous upper bounds after which the check fails on
//! what it did (not) receive, never on how long it took.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Consumer, EventLog, LogError, NewRecord, Record, partition_for};

/// How long a single poll in a check waits, and how many polls it tries before giving up.
/// Generous for a remote broker (group join + rebalance); an embedded log returns at once.
const POLL_WAIT: Duration = Duration::from_millis(250);
const POLL_ROUNDS: usize = 120;
/// Long enough that a long-poll which does not wake up on append surely fails its check.
const LONG_POLL: Duration = Duration::from_secs(20);

/// Runs every check except [`durability`], each on a log from `make` (which may return the
/// same instance every time).
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    create_topic_is_idempotent(&make().await).await;
    append_and_read_in_order(&make().await).await;
    keys_land_on_partition_for(&make().await).await;
    headers_and_timestamps_round_trip(&make().await).await;
    unknown_topic_and_partition_are_errors(&make().await).await;
    group_resumes_after_commit_and_redelivers_the_rest(&make().await).await;
    groups_are_independent(&make().await).await;
    read_long_poll_wakes_on_append(&make().await).await;
    consumer_long_poll_wakes_on_append(&make().await).await;
    concurrent_appends_land_exactly_once_in_key_order(&make().await).await;
    fenced_readers_ignore_what_a_superseded_owner_writes(&make().await).await;
}

/// A topic name no other check, run or process has used.
pub fn unique_topic(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "conformance.{prefix}.{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn record(topic: &str, key: &str, payload: impl Into<Vec<u8>>) -> NewRecord {
    NewRecord::new(topic, key, payload.into())
}

/// The payloads of every record of a partition, in offset order.
pub async fn payloads(log: &dyn EventLog, topic: &str, partition: u32) -> Vec<Vec<u8>> {
    read_partition(log, topic, partition)
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect()
}

/// Every record of a partition, from offset 0 to its end offset.
pub async fn read_partition(log: &dyn EventLog, topic: &str, partition: u32) -> Vec<Record> {
    let end = log.end_offset(topic, partition).await.expect("end_offset");
    let mut out: Vec<Record> = Vec::new();
    while (out.len() as u64) < end {
        let from = out.len() as u64;
        let batch = log
            .read(topic, partition, from, 1000, POLL_WAIT)
            .await
            .expect("read");
        assert!(
            !batch.is_empty(),
            "read below the end offset returned nothing"
        );
        out.extend(batch);
    }
    out
}

/// Polls until `n` records arrived (or the rounds ran out).
pub async fn poll_n(consumer: &mut dyn Consumer, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for _ in 0..POLL_ROUNDS {
        if out.len() >= n {
            break;
        }
        out.extend(consumer.poll(n - out.len(), POLL_WAIT).await.expect("poll"));
    }
    out
}

fn by_partition(records: &[Record]) -> BTreeMap<u32, Vec<u64>> {
    let mut map: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r.offset);
    }
    map
}

/// `create_topic` is idempotent; another partition count is `PartitionMismatch`.
pub async fn create_topic_is_idempotent(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("create");
    log.create_topic(&topic, 3).await.expect("create");
    log.create_topic(&topic, 3)
        .await
        .expect("creating an existing topic with the same partitions is a no-op");
    assert_eq!(log.partitions(&topic).await.expect("partitions"), 3);
    match log.create_topic(&topic, 5).await {
        Err(LogError::PartitionMismatch {
            topic: t,
            existing: 3,
            requested: 5,
        }) => assert_eq!(t, topic),
        other => panic!("expected PartitionMismatch, got {other:?}"),
    }
    assert_eq!(log.partitions(&topic).await.expect("partitions"), 3);
}

/// Offsets start at 0 per partition and grow by one; positions come back in input order and
/// keep per-key order; reads return records in offset order from any starting point.
pub async fn append_and_read_in_order(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("order");
    log.create_topic(&topic, 3).await.expect("create");
    let input: Vec<NewRecord> = (0..40)
        .map(|i| record(&topic, &format!("key-{}", i % 6), format!("v{i}")))
        .collect();
    let positions = log.append(input.clone()).await.expect("append");
    assert_eq!(positions.len(), input.len(), "one position per record");

    let mut last_of_key: HashMap<&str, u64> = HashMap::new();
    for (rec, pos) in input.iter().zip(&positions) {
        if let Some(prev) = last_of_key.insert(rec.key.as_str(), pos.offset) {
            assert!(pos.offset > prev, "records of a key keep their batch order");
        }
    }
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for pos in &positions {
        per_partition
            .entry(pos.partition)
            .or_default()
            .push(pos.offset);
    }
    for (partition, mut offsets) in per_partition.clone() {
        offsets.sort_unstable();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "offsets of partition {partition} start at 0, no gaps"
        );
    }

    for partition in 0..3 {
        let count = per_partition.get(&partition).map_or(0, Vec::len) as u64;
        assert_eq!(log.end_offset(&topic, partition).await.expect("end"), count);
        let records = read_partition(log.as_ref(), &topic, partition).await;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..count).collect::<Vec<_>>(),
            "read in offset order"
        );
        for r in &records {
            assert_eq!((r.topic.as_str(), r.partition), (topic.as_str(), partition));
            let i = positions
                .iter()
                .position(|p| p.partition == partition && p.offset == r.offset)
                .expect("every stored record was appended");
            assert_eq!((&r.key, &r.payload), (&input[i].key, &input[i].payload));
        }
        if count > 2 {
            let tail = log
                .read(&topic, partition, 1, 1, Duration::ZERO)
                .await
                .expect("read from the middle");
            assert_eq!(
                tail,
                records[1..2].to_vec(),
                "read honours `from` and `max`"
            );
        }
    }

    // A second batch continues where the first ended.
    let more = log
        .append(vec![record(&topic, "key-0", "after")])
        .await
        .expect("append");
    let p = more[0].partition;
    assert_eq!(
        more[0].offset,
        per_partition.get(&p).map_or(0, Vec::len) as u64
    );
}

/// A keyed record lands in `partition_for(key, partitions)`.
pub async fn keys_land_on_partition_for(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("keys");
    log.create_topic(&topic, 7).await.expect("create");
    let keys: Vec<String> = (0..70).map(|i| format!("workflow-{i}")).collect();
    let positions = log
        .append(keys.iter().map(|k| record(&topic, k, k.clone())).collect())
        .await
        .expect("append");
    for (key, pos) in keys.iter().zip(&positions) {
        assert_eq!(pos.partition, partition_for(key, 7), "partition of {key:?}");
    }
    let used: HashSet<u32> = positions.iter().map(|p| p.partition).collect();
    assert!(
        used.len() > 1,
        "70 keys spread over more than one partition"
    );
}

/// Headers (ordered, duplicates allowed) and payload bytes come back unchanged, with an
/// append timestamp.
pub async fn headers_and_timestamps_round_trip(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("headers");
    log.create_topic(&topic, 1).await.expect("create");
    let mut with_headers = record(&topic, "k", vec![0u8, 159, 146, 150, 255]);
    with_headers.headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("trace".to_owned(), String::new()),
        ("dup".to_owned(), "1".to_owned()),
        ("dup".to_owned(), "2 ✓".to_owned()),
    ];
    let plain = record(&topic, "k", Vec::new());
    let before = now_ms();
    log.append(vec![with_headers.clone(), plain.clone()])
        .await
        .expect("append");
    let after = now_ms();

    let records = read_partition(log.as_ref(), &topic, 0).await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].headers, with_headers.headers);
    assert_eq!(records[0].payload, with_headers.payload);
    assert!(records[1].headers.is_empty());
    assert!(records[1].payload.is_empty());
    // Clocks of a remote broker may differ a little; an hour of slack still catches a
    // missing or mis-scaled (seconds, micros) timestamp.
    let slack = 3_600_000;
    for r in &records {
        assert!(
            (before - slack..=after + slack).contains(&r.timestamp_ms),
            "timestamp {} is milliseconds since the epoch, around now",
            r.timestamp_ms
        );
    }
}

/// Unknown topics and partitions are reported as such, by every call.
pub async fn unknown_topic_and_partition_are_errors(log: &Arc<dyn EventLog>) {
    let missing = unique_topic("missing");
    let is_unknown = |r: &LogError| matches!(r, LogError::UnknownTopic(t) if *t == missing);
    assert!(is_unknown(
        &log.partitions(&missing).await.expect_err("partitions")
    ));
    assert!(is_unknown(
        &log.end_offset(&missing, 0).await.expect_err("end")
    ));
    assert!(is_unknown(
        &log.read(&missing, 0, 0, 10, Duration::ZERO)
            .await
            .expect_err("read")
    ));
    assert!(is_unknown(
        &log.append(vec![record(&missing, "k", "v")])
            .await
            .expect_err("append")
    ));
    assert!(is_unknown(
        &log.committed("g", &missing, 0)
            .await
            .expect_err("committed")
    ));
    match log.consumer("g", std::slice::from_ref(&missing)).await {
        Err(e) => assert!(is_unknown(&e), "consumer: {e:?}"),
        Ok(_) => panic!("consumer of an unknown topic must fail"),
    }

    let topic = unique_topic("partitions");
    log.create_topic(&topic, 2).await.expect("create");
    let is_unknown_partition = |r: &LogError| matches!(r, LogError::UnknownPartition { topic: t, partitions: 2, partition: 2 } if *t == topic);
    assert!(is_unknown_partition(
        &log.end_offset(&topic, 2).await.expect_err("end")
    ));
    assert!(is_unknown_partition(
        &log.read(&topic, 2, 0, 10, Duration::ZERO)
            .await
            .expect_err("read")
    ));
    assert!(is_unknown_partition(
        &log.committed("g", &topic, 2).await.expect_err("committed")
    ));
    // Errors are not sticky: the topic still works.
    log.append(vec![record(&topic, "k", "v")])
        .await
        .expect("append after errors");
}

/// A new member of a group starts after the group's committed offsets, so exactly the
/// uncommitted records are delivered again; with nothing committed it starts at 0.
pub async fn group_resumes_after_commit_and_redelivers_the_rest(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("group");
    let group = unique_topic("group-g");
    log.create_topic(&topic, 2).await.expect("create");
    log.append(
        (0..20)
            .map(|i| record(&topic, &format!("k{i}"), format!("{i}")))
            .collect(),
    )
    .await
    .expect("append");
    let topics = vec![topic.clone()];

    let mut first = log.consumer(&group, &topics).await.expect("consumer");
    let got = poll_n(first.as_mut(), 20).await;
    assert_eq!(got.len(), 20, "a fresh group reads from the beginning");
    for (partition, offsets) in by_partition(&got) {
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} delivered in offset order"
        );
    }

    // Commit half of each partition (next offset = processed + 1).
    let ends: BTreeMap<u32, u64> = by_partition(&got)
        .into_iter()
        .map(|(p, offsets)| (p, offsets.len() as u64))
        .collect();
    let commits: Vec<(String, u32, u64)> = ends
        .iter()
        .map(|(&p, &end)| (topic.clone(), p, end / 2))
        .collect();
    first.commit(&commits).await.expect("commit");
    for (_, p, next) in &commits {
        assert_eq!(
            log.committed(&group, &topic, *p).await.expect("committed"),
            Some(*next),
            "commit is visible once it returned"
        );
    }
    drop(first);

    let mut second = log.consumer(&group, &topics).await.expect("consumer");
    let expected_count: u64 = ends.values().map(|end| end - end / 2).sum();
    let redelivered = poll_n(second.as_mut(), expected_count as usize).await;
    let expected: BTreeMap<u32, Vec<u64>> = ends
        .iter()
        .map(|(&p, &end)| (p, (end / 2..end).collect()))
        .collect();
    assert_eq!(
        by_partition(&redelivered),
        expected,
        "exactly the uncommitted records are delivered again, in order"
    );
    assert!(
        second.poll(100, POLL_WAIT).await.expect("poll").is_empty(),
        "nothing beyond the end"
    );
}

/// Two groups each see every record; one group's commits do not move the other.
pub async fn groups_are_independent(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("groups");
    let (a, b) = (unique_topic("group-a"), unique_topic("group-b"));
    log.create_topic(&topic, 1).await.expect("create");
    log.append(
        (0..5)
            .map(|i| record(&topic, "k", format!("{i}")))
            .collect(),
    )
    .await
    .expect("append");
    let topics = vec![topic.clone()];

    let mut ca = log.consumer(&a, &topics).await.expect("consumer a");
    let got_a = poll_n(ca.as_mut(), 5).await;
    ca.commit(&[(topic.clone(), 0, 5)]).await.expect("commit");
    assert_eq!(log.committed(&b, &topic, 0).await.expect("committed"), None);

    let mut cb = log.consumer(&b, &topics).await.expect("consumer b");
    let got_b = poll_n(cb.as_mut(), 5).await;
    assert_eq!(got_a.len(), 5);
    assert_eq!(got_a, got_b, "both groups receive every record");
    assert_eq!(
        log.committed(&a, &topic, 0).await.expect("committed"),
        Some(5)
    );
    assert_eq!(cb.assignment(), vec![(topic.clone(), 0)]);
}

/// `read` waiting at the end of a partition returns the record appended meanwhile.
pub async fn read_long_poll_wakes_on_append(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("read-wake");
    log.create_topic(&topic, 1).await.expect("create");
    log.append(vec![record(&topic, "k", "first")])
        .await
        .expect("append");
    let reader = {
        let (log, topic) = (Arc::clone(log), topic.clone());
        tokio::spawn(async move { log.read(&topic, 0, 1, 10, LONG_POLL).await })
    };
    // Let the read start waiting; the outcome is the same if the append wins the race.
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(vec![record(&topic, "k", "second")])
        .await
        .expect("append");
    let got = reader.await.expect("reader task").expect("read");
    assert_eq!(got.len(), 1, "the waiting read returns the new record");
    assert_eq!(
        (got[0].offset, got[0].payload.as_slice()),
        (1, &b"second"[..])
    );
}

/// A consumer polling an idle topic returns the record appended meanwhile.
pub async fn consumer_long_poll_wakes_on_append(log: &Arc<dyn EventLog>) {
    let topic = unique_topic("poll-wake");
    log.create_topic(&topic, 3).await.expect("create");
    let mut consumer = log
        .consumer(&unique_topic("wake-g"), std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let poller = tokio::spawn(async move { consumer.poll(10, LONG_POLL).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.append(vec![record(&topic, "wake", "up")])
        .await
        .expect("append");
    let got = poller.await.expect("poller task").expect("poll");
    assert_eq!(got.len(), 1, "the waiting poll returns the new record");
    assert_eq!(got[0].payload, b"up");
}

/// Many tasks appending at once: every record lands exactly once, each key's records in the
/// order its task appended them, offsets gapless, positions pointing at the right records.
pub async fn concurrent_appends_land_exactly_once_in_key_order(log: &Arc<dyn EventLog>) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 30;
    let topic = unique_topic("concurrent");
    log.create_topic(&topic, 4).await.expect("create");

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let (log, topic) = (Arc::clone(log), topic.clone());
        handles.push(tokio::spawn(async move {
            let key = format!("task-{task}");
            let mut acked = Vec::new();
            let mut seq = 0;
            while seq < PER_TASK {
                // Mix single appends and small batches.
                let n = (1 + seq % 3).min(PER_TASK - seq);
                let batch: Vec<NewRecord> = (seq..seq + n)
                    .map(|s| record(&topic, &key, format!("{task}:{s}")))
                    .collect();
                let positions = log.append(batch).await.expect("append");
                acked.extend(positions.into_iter().zip(seq..seq + n));
                seq += n;
            }
            acked
        }));
    }
    let mut acked = HashMap::new();
    for (task, handle) in handles.into_iter().enumerate() {
        for (pos, seq) in handle.await.expect("append task") {
            assert!(
                acked
                    .insert((pos.partition, pos.offset), format!("{task}:{seq}"))
                    .is_none(),
                "two appends acknowledged at one position {pos:?}"
            );
        }
    }
    assert_eq!(acked.len(), TASKS * PER_TASK);

    let mut last_seq: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for partition in 0..4 {
        let records = read_partition(log.as_ref(), &topic, partition).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "gapless offsets");
            let payload = String::from_utf8(r.payload.clone()).expect("utf8 payload");
            assert_eq!(
                acked.get(&(partition, r.offset)),
                Some(&payload),
                "the acknowledged position holds the record"
            );
            let (task, seq) = payload.split_once(':').expect("task:seq");
            let seq: usize = seq.parse().expect("seq");
            assert_eq!(r.key, format!("task-{task}"));
            assert_eq!(r.partition, partition_for(&r.key, 4));
            let expected = last_seq.get(&r.key).map_or(0, |s| s + 1);
            assert_eq!(seq, expected, "records of {} in append order", r.key);
            last_seq.insert(r.key.clone(), seq);
        }
        total += records.len();
    }
    assert_eq!(total, TASKS * PER_TASK, "every record exactly once");
}

/// What was acknowledged before the log went away is there after reopening it: topics,
/// records (with headers and timestamps), group commits; offsets continue.
///
/// `reopen` must return a log over the same storage; the check drops every handle it holds
/// before reopening.
pub async fn durability<F, Fut>(reopen: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let topic = unique_topic("durable");
    let group = unique_topic("durable-g");
    let topics = vec![topic.clone()];

    let (before, commits) = {
        let log = reopen().await;
        log.create_topic(&topic, 2).await.expect("create");
        let mut batch: Vec<NewRecord> = (0..30)
            .map(|i| record(&topic, &format!("k{}", i % 5), format!("{i}")))
            .collect();
        batch[0].headers = vec![("h".to_owned(), "v".to_owned())];
        log.append(batch).await.expect("append");
        let mut consumer = log.consumer(&group, &topics).await.expect("consumer");
        let got = poll_n(consumer.as_mut(), 30).await;
        assert_eq!(got.len(), 30);
        let commits: Vec<(String, u32, u64)> = by_partition(&got)
            .into_iter()
            .map(|(p, offsets)| (topic.clone(), p, offsets.len() as u64 - 1))
            .collect();
        consumer.commit(&commits).await.expect("commit");
        let mut before = Vec::new();
        for p in 0..2 {
            before.push(read_partition(log.as_ref(), &topic, p).await);
        }
        (before, commits)
    };

    let log = reopen().await;
    assert_eq!(log.partitions(&topic).await.expect("topic survives"), 2);
    log.create_topic(&topic, 2)
        .await
        .expect("re-creating after reopen is a no-op");
    for p in 0..2u32 {
        assert_eq!(
            read_partition(log.as_ref(), &topic, p).await,
            before[p as usize],
            "records of partition {p} survive unchanged"
        );
    }
    for (_, p, next) in &commits {
        assert_eq!(
            log.committed(&group, &topic, *p).await.expect("committed"),
            Some(*next),
            "group commit survives"
        );
    }
    let mut consumer = log.consumer(&group, &topics).await.expect("consumer");
    let rest = poll_n(consumer.as_mut(), commits.len()).await;
    let expected: BTreeMap<u32, Vec<u64>> =
        commits.iter().map(|(_, p, n)| (*p, vec![*n])).collect();
    assert_eq!(
        by_partition(&rest),
        expected,
        "the group resumes at its commits"
    );

    let next = log
        .append(vec![record(&topic, "k0", "after reopen")])
        .await
        .expect("append");
    assert_eq!(
        next[0].offset,
        before[next[0].partition as usize].len() as u64,
        "offsets continue after reopen"
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What every log stored in local files must do beyond [`run_all`] and [`durability`],
/// given a function that opens (creating if missing) the log at a path; each check keeps its
/// files in `dir`.
pub mod embedded {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::{EventLog, LogError};

    /// Opens the log stored at a path.
    pub type Open = fn(&Path) -> crate::Result<Arc<dyn EventLog>>;

    fn opened(open: Open, path: &Path) -> Arc<dyn EventLog> {
        open_when_released(open, path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// Opens the log at `path`, retrying for up to two seconds while its lock is held. A
    /// process that a parallel test spawns holds copies of every descriptor, the lock
    /// file's included, until it `exec`s; a lock never released still fails.
    pub fn open_when_released(open: Open, path: &Path) -> crate::Result<Arc<dyn EventLog>> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match open(path) {
                Err(LogError::Storage(msg))
                    if msg.contains("already open") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// [`run_all`](super::run_all) with a fresh file per check.
    pub async fn fresh_file_per_check(open: Open, dir: &Path) {
        let n = AtomicUsize::new(0);
        super::run_all(|| {
            let path = dir.join(format!("log-{}", n.fetch_add(1, Ordering::Relaxed)));
            async move { opened(open, &path) }
        })
        .await;
    }

    /// [`run_all`](super::run_all) with every check on one log.
    pub async fn one_shared_log(open: Open, dir: &Path) {
        let log = opened(open, &dir.join("shared"));
        super::run_all(|| {
            let log = Arc::clone(&log);
            async move { log }
        })
        .await;
    }

    /// [`durability`](super::durability), reopening the same file.
    pub async fn durability_across_reopen(open: Open, dir: &Path) {
        let path = dir.join("durable");
        super::durability(|| {
            let path = path.clone();
            async move { opened(open, &path) }
        })
        .await;
    }

    /// One process, one writer: a second open of the same file fails clearly while the
    /// first is open, and succeeds once it was dropped.
    pub async fn a_second_open_fails_until_the_first_is_dropped(open: Open, dir: &Path) {
        let path = dir.join("owned");
        let first = opened(open, &path);
        match open(&path) {
            Err(LogError::Storage(msg)) => assert!(msg.contains("already open"), "{msg}"),
            Err(other) => panic!("expected a Storage error, got {other:?}"),
            Ok(_) => panic!("a second open of {} succeeded", path.display()),
        }
        drop(first);
        opened(open, &path);
    }
}

/// `kill -9` in the middle of appends and commits, for embedded backends.
///
/// A backend's test binary has a test that calls [`crash::child`] when an environment variable names
/// the storage, and a test that calls [`crash::kill_child`] (which re-runs that binary with the
/// variable set, reads what the child acknowledged and SIGKILLs it mid-flight) and then
/// [`crash::verify`] on a freshly opened log.
pub mod crash {
    use std::collections::{HashMap, HashSet};
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{read_partition, unique_topic};
    use crate::{EventLog, NewRecord, partition_for};

    const TOPIC: &str = "crash";
    const PARTITIONS: u32 = 4;
    const GROUP: &str = "crash-group";
    /// How many acknowledged appends the parent waits for before it kills the child.
    const BEFORE_KILL: usize = 2_000;

    /// What the child acknowledged before it died.
    #[derive(Debug, Default)]
    pub struct Acknowledged {
        /// (partition, offset, payload) of every acknowledged append.
        pub appends: Vec<(u32, u64, String)>,
        /// The highest acknowledged commit per partition.
        pub commits: HashMap<u32, u64>,
    }

    /// The child's body: 16 tasks append (printing `ACK partition offset payload` once
    /// acknowledged) while a consumer polls and commits (printing `COMMIT partition next`).
    pub async fn child(log: Arc<dyn EventLog>) {
        log.create_topic(TOPIC, PARTITIONS).await.expect("create");
        let mut tasks = Vec::new();
        for task in 0..16 {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                let key = format!("task-{task}");
                // Bounded, so an orphaned child cannot run forever.
                for seq in 0..20_000 {
                    let payload = format!("{task}:{seq}");
                    let record = NewRecord::new(TOPIC, key.as_str(), payload.clone().into());
                    let pos = log.append(vec![record]).await.expect("append");
                    println!("ACK {} {} {payload}", pos[0].partition, pos[0].offset);
                }
            }));
        }
        let committer = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut consumer = log
                    .consumer(GROUP, &[TOPIC.to_owned()])
                    .await
                    .expect("consumer");
                let mut next: HashMap<u32, u64> = HashMap::new();
                loop {
                    for r in consumer
                        .poll(100, Duration::from_millis(100))
                        .await
                        .expect("poll")
                    {
                        next.insert(r.partition, r.offset + 1);
                    }
                    let offsets: Vec<(String, u32, u64)> = next
                        .iter()
                        .map(|(&p, &n)| (TOPIC.to_owned(), p, n))
                        .collect();
                    consumer.commit(&offsets).await.expect("commit");
                    for (_, p, n) in offsets {
                        println!("COMMIT {p} {n}");
                    }
                }
            })
        };
        for task in tasks {
            task.await.expect("append task");
        }
        committer.abort();
    }

    /// Runs the test `child_test` of the current test binary with `env` set to `path`, kills
    /// it with SIGKILL once it acknowledged a few thousand appends, and returns everything it
    /// acknowledged (including what it printed before dying).
    pub fn kill_child(child_test: &str, env: &str, path: &Path) -> Acknowledged {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .env(env, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
        let mut acknowledged = Acknowledged::default();
        let mut record = |line: &str| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ACK", p, o, payload] => acknowledged.appends.push((
                    p.parse().expect("partition"),
                    o.parse().expect("offset"),
                    (*payload).to_owned(),
                )),
                ["COMMIT", p, n] => {
                    let n: u64 = n.parse().expect("offset");
                    let slot = acknowledged
                        .commits
                        .entry(p.parse().expect("partition"))
                        .or_default();
                    *slot = (*slot).max(n);
                }
                _ => {}
            }
        };
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.expect("child output");
            record(&line);
            seen += usize::from(line.starts_with("ACK"));
            if seen >= BEFORE_KILL {
                break;
            }
        }
        child.kill().expect("SIGKILL child");
        for line in lines {
            record(&line.expect("child output"));
        }
        child.wait().expect("reap child");
        assert!(
            acknowledged.appends.len() >= BEFORE_KILL,
            "child acknowledged only {} appends",
            acknowledged.appends.len()
        );
        acknowledged
    }

    /// Every acknowledged append is stored once at its position, every acknowledged commit
    /// holds, and the log keeps appending where it stopped.
    pub async fn verify(log: Arc<dyn EventLog>, acknowledged: &Acknowledged) {
        let mut stored = HashMap::new();
        for p in 0..PARTITIONS {
            for r in read_partition(log.as_ref(), TOPIC, p).await {
                stored.insert((p, r.offset), r);
            }
        }
        for (p, o, payload) in &acknowledged.appends {
            let r = stored
                .get(&(*p, *o))
                .unwrap_or_else(|| panic!("acknowledged record {p}/{o} lost"));
            assert_eq!(r.payload, payload.as_bytes(), "record at {p}/{o}");
        }
        let distinct: HashSet<&Vec<u8>> = stored.values().map(|r| &r.payload).collect();
        assert_eq!(distinct.len(), stored.len(), "no record stored twice");
        for (p, n) in &acknowledged.commits {
            let committed = log
                .committed(GROUP, TOPIC, *p)
                .await
                .expect("committed")
                .unwrap_or(0);
            assert!(
                committed >= *n,
                "commit {n} of partition {p} lost (found {committed})"
            );
        }
        let topic = unique_topic("after-crash");
        log.create_topic(&topic, 1).await.expect("create");
        let end = log.end_offset(TOPIC, 0).await.expect("end");
        let key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| partition_for(k, PARTITIONS) == 0)
            .expect("key");
        let pos = log
            .append(vec![NewRecord::new(TOPIC, key, b"after".to_vec())])
            .await
            .expect("append after crash");
        assert_eq!(pos[0].offset, end, "offsets continue after the crash");
    }
}

/// The fencing rule ([`crate::fence`]) holds over this backend: after a second owner claims a
/// partition, what the first writes there is ignored by every reader (from the start, from
/// the middle, in a group), what it wrote before the claim is history, and a group that
/// commits past its last delivered record commits past the ignored ones too.
pub async fn fenced_readers_ignore_what_a_superseded_owner_writes(log: &Arc<dyn EventLog>) {
    use crate::fence::{FencedLog, stamp};
    let topic = unique_topic("fenced");
    let index = unique_topic("fences");
    log.create_topic(&topic, 2).await.expect("create");
    let fenced = || FencedLog::new(Arc::clone(log), index.clone(), std::slice::from_ref(&topic));
    let key = crate::fence::key_for_partition(1, 2);
    let write = |epoch: &crate::fence::Epoch, body: &str| {
        let mut r = record(&topic, &key, body);
        stamp(&mut r, epoch);
        r
    };

    let first = fenced();
    let a = first
        .claim(&topic, &[1], "a")
        .await
        .expect("claim a")
        .remove(0);
    log.append(vec![write(&a, "a1"), write(&a, "a2")])
        .await
        .expect("append");
    let second = fenced();
    // The second owner reads the partition to its end before it claims it.
    let history = read_fenced(&second, &topic, 1, 0).await;
    assert_eq!(bodies(&history), ["a1", "a2"], "markers are not delivered");
    // A write of the first owner lands between the second's read and its claim: history.
    log.append(vec![write(&a, "a3")]).await.expect("append");
    let b = second
        .claim(&topic, &[1], "b")
        .await
        .expect("claim b")
        .remove(0);
    assert!(b > a, "a claim outranks every epoch before it: {b} vs {a}");
    let b_marker = log.end_offset(&topic, 1).await.expect("end") - 1;
    log.append(vec![write(&b, "b1")]).await.expect("append");
    log.append(vec![write(&a, "stale1")]).await.expect("append");
    log.append(vec![write(&b, "b2"), write(&a, "stale2")])
        .await
        .expect("append");
    let expected = ["a1", "a2", "a3", "b1", "b2"];

    let from_start = read_fenced(&fenced(), &topic, 1, 0).await;
    assert_eq!(bodies(&from_start), expected, "a reader from the start");
    let from_middle = read_fenced(&fenced(), &topic, 1, b_marker + 1).await;
    assert_eq!(
        bodies(&from_middle),
        ["b1", "b2"],
        "a reader that starts after the marker learns it from the index"
    );

    let after_b2 = from_start.last().expect("records").offset + 1;
    let (rest, through) = fenced()
        .read_through(&topic, 1, after_b2, 10, Duration::ZERO)
        .await
        .expect("read_through");
    assert!(rest.is_empty(), "nothing a reader sees after b2");
    assert_eq!(
        through,
        log.end_offset(&topic, 1).await.expect("end"),
        "read_through passes what it left out"
    );

    let group = unique_topic("fenced-g");
    let reader = fenced();
    let mut consumer = reader
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let polled = poll_n(consumer.as_mut(), expected.len()).await;
    assert_eq!(bodies(&polled), expected, "a group member");
    assert!(
        consumer.poll(10, POLL_WAIT).await.expect("poll").is_empty(),
        "the stale record at the end is not delivered"
    );
    let last = polled.last().expect("records").offset;
    consumer
        .commit(&[(topic.clone(), 1, last + 1)])
        .await
        .expect("commit");
    let end = log.end_offset(&topic, 1).await.expect("end");
    assert_eq!(
        log.committed(&group, &topic, 1).await.expect("committed"),
        Some(end),
        "a commit past the last delivered record covers the stale ones after it"
    );
    drop(consumer);

    // A member that starts after the marker, from the group's committed offset.
    let late = unique_topic("fenced-late");
    let mut consumer = fenced()
        .consumer(&late, std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let _ = poll_n(consumer.as_mut(), expected.len()).await;
    consumer
        .commit(&[(topic.clone(), 1, b_marker + 2)])
        .await
        .expect("commit");
    drop(consumer);
    let mut consumer = fenced()
        .consumer(&late, std::slice::from_ref(&topic))
        .await
        .expect("consumer");
    let resumed = poll_n(consumer.as_mut(), 1).await;
    assert_eq!(bodies(&resumed), ["b2"], "a member resuming mid-partition");
    assert!(
        consumer.poll(10, POLL_WAIT).await.expect("poll").is_empty(),
        "the stale record at the end is not delivered"
    );
    let later = fenced();
    later.catch_up().await.expect("catch up");
    assert_eq!(later.in_force(&topic, 1, b_marker + 1), Some(b.clone()));
    assert_eq!(later.in_force(&topic, 1, b_marker), Some(a.clone()));
    first.catch_up().await.expect("catch up");
    assert!(
        first.highest(&topic, 1).is_some_and(|h| h > a),
        "the first owner learns from the index that it was fenced"
    );
    second.catch_up().await.expect("catch up");
    assert_eq!(
        second.highest(&topic, 1),
        Some(b),
        "the second owner is not"
    );
}

/// Reads a fenced partition from `from` to its end.
async fn read_fenced(
    log: &crate::fence::FencedLog,
    topic: &str,
    partition: u32,
    from: u64,
) -> Vec<Record> {
    let end = log.end_offset(topic, partition).await.expect("end_offset");
    let mut out: Vec<Record> = Vec::new();
    let mut next = from;
    while next < end {
        let batch = log
            .read(topic, partition, next, 2, Duration::ZERO)
            .await
            .expect("read");
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        out.extend(batch);
    }
    out
}

fn bodies(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}
