//! The port's conformance suite against a Kafka-protocol broker, plus what only a distributed
//! log does: members of one group share its partitions and take over from each other at the
//! committed offsets.
//!
//! The broker is named by `DISTORCH_TEST_KAFKA` (`host:port` or a `kafka://` URL);
//! `scripts/test.sh` installs and starts one. Without it these tests fail: a green run must
//! mean the Kafka backend was tested.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use distorch_eventlog::conformance::{self, poll_n, unique_topic};
use distorch_eventlog::kafka::{KafkaConfig, KafkaLog};
use distorch_eventlog::{Consumer, EventLog, LogError, NewRecord, Record, partition_for};

const BROKER_ENV: &str = "DISTORCH_TEST_KAFKA";
/// One poll of a group member in the rebalance tests, and how many rounds they may take
/// (joins and rebalances take seconds on a real broker).
const POLL_WAIT: Duration = Duration::from_millis(250);
const ROUNDS: usize = 240;

fn broker_config() -> KafkaConfig {
    let broker = std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!(
            "{BROKER_ENV} is not set: run `bash scripts/test.sh`, which installs and starts a broker"
        )
    });
    if broker.starts_with("kafka://") {
        KafkaConfig::from_url(&broker).expect("DISTORCH_TEST_KAFKA is a valid kafka:// URL")
    } else {
        KafkaConfig::new(broker)
    }
}

async fn connect() -> Arc<dyn EventLog> {
    let config = broker_config();
    let servers = config.bootstrap_servers.clone();
    match KafkaLog::connect(config).await {
        Ok(log) => Arc::new(log),
        Err(e) => panic!("cannot reach the test broker at {servers}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_one_shared_client() {
    let log = connect().await;
    conformance::run_all(|| {
        let log = Arc::clone(&log);
        async move { log }
    })
    .await;
}

/// Kafka's version of "survives a restart": everything one client had acknowledged is there
/// for a new client (nothing lived only in the first client's memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_visible_to_a_new_client() {
    conformance::durability(connect).await;
}

#[tokio::test]
async fn a_topic_needs_a_partition() {
    let log = connect().await;
    let err = log
        .create_topic(&unique_topic("empty"), 0)
        .await
        .expect_err("0 partitions");
    assert!(matches!(err, LogError::Invalid(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_beyond_the_end_waits_and_returns_nothing() {
    let log = connect().await;
    let topic = unique_topic("beyond");
    log.create_topic(&topic, 1).await.expect("create");
    log.append(vec![NewRecord::new(&topic, "k", b"only".to_vec())])
        .await
        .expect("append");
    let got = log
        .read(&topic, 0, 5, 10, Duration::from_millis(300))
        .await
        .expect("read beyond the end");
    assert!(got.is_empty(), "{got:?}");
    // The reader that went out of range is not left broken for the next caller.
    let all = log
        .read(&topic, 0, 0, 10, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(all.len(), 1);
}

/// Two members of one group split the partitions; when one leaves, the other takes over its
/// partitions from the committed offsets: records after a commit are delivered again, records
/// before it are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_share_partitions_and_take_over_from_the_commit() {
    const PARTITIONS: u32 = 4;
    const PER_PARTITION: u64 = 10;
    const COMMITTED: u64 = 6;
    let log = connect().await;
    let topic = unique_topic("members");
    let group = unique_topic("members-g");
    let topics = vec![topic.clone()];
    log.create_topic(&topic, PARTITIONS).await.expect("create");
    let name = topic.as_str();
    let batch: Vec<NewRecord> = (0..PARTITIONS)
        .flat_map(|p| {
            let key = key_for(p, PARTITIONS);
            (0..PER_PARTITION).map(move |i| NewRecord::new(name, &key, format!("{p}/{i}").into()))
        })
        .collect();
    log.append(batch).await.expect("append");
    let all: BTreeSet<(String, u32)> = (0..PARTITIONS).map(|p| (topic.clone(), p)).collect();

    // Alone, the first member gets every partition.
    let mut first = log.consumer(&group, &topics).await.expect("first member");
    let got = poll_n(first.as_mut(), (PARTITIONS as u64 * PER_PARTITION) as usize).await;
    assert_eq!(got.len() as u64, PARTITIONS as u64 * PER_PARTITION);
    assert_eq!(
        set(&first.assignment()),
        all,
        "a lone member owns every partition"
    );

    // A second member joins: they split the partitions, and each reads its own from the
    // start (nothing is committed yet).
    let mut second = log.consumer(&group, &topics).await.expect("second member");
    let mut members = [Member::new(), Member::new()];
    let mut split = false;
    for _ in 0..ROUNDS {
        let (a, b) = tokio::join!(first.poll(100, POLL_WAIT), second.poll(100, POLL_WAIT));
        members[0].observe(first.as_ref(), a.expect("poll first"));
        members[1].observe(second.as_ref(), b.expect("poll second"));
        let (mine, theirs) = (set(&first.assignment()), set(&second.assignment()));
        split = !mine.is_empty()
            && !theirs.is_empty()
            && mine.is_disjoint(&theirs)
            && mine.union(&theirs).cloned().collect::<BTreeSet<_>>() == all;
        if split && members.iter().all(|m| m.read_everything(PER_PARTITION)) {
            break;
        }
    }
    assert!(
        split,
        "two members split the partitions: {:?} / {:?}",
        first.assignment(),
        second.assignment()
    );
    for (i, member) in members.iter().enumerate() {
        assert!(
            member.read_everything(PER_PARTITION),
            "member {i} read every record of its partitions {:?}: {:?}",
            member.assignment,
            member.since_change
        );
    }

    // The second member commits part of its partitions, the first all of its own.
    let theirs = second.assignment();
    let partial: Vec<(String, u32, u64)> = theirs
        .iter()
        .map(|(t, p)| (t.clone(), *p, COMMITTED))
        .collect();
    second.commit(&partial).await.expect("commit second");
    let complete: Vec<(String, u32, u64)> = first
        .assignment()
        .iter()
        .map(|(t, p)| (t.clone(), *p, PER_PARTITION))
        .collect();
    first.commit(&complete).await.expect("commit first");
    for (t, p) in &theirs {
        assert_eq!(
            log.committed(&group, t, *p).await.expect("committed"),
            Some(COMMITTED)
        );
    }

    // The second member leaves: the first takes over its partitions after their commits.
    drop(second);
    let mut taken_over: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let expected: BTreeMap<u32, Vec<u64>> = theirs
        .iter()
        .map(|(_, p)| (*p, (COMMITTED..PER_PARTITION).collect()))
        .collect();
    for _ in 0..ROUNDS {
        let records = first.poll(100, POLL_WAIT).await.expect("poll first");
        let owned = set(&first.assignment());
        for r in records {
            assert!(
                owned.contains(&(r.topic.clone(), r.partition)),
                "poll returned a record of partition {} it does not own",
                r.partition
            );
            taken_over.entry(r.partition).or_default().push(r.offset);
        }
        if owned == all && taken_over == expected {
            break;
        }
    }
    assert_eq!(
        set(&first.assignment()),
        all,
        "the remaining member owns everything"
    );
    assert_eq!(
        taken_over, expected,
        "exactly the records after the leaver's commits are delivered again, in order; none \
         of the first member's own (committed) partitions"
    );
}

/// What one member received since its assignment last changed.
struct Member {
    assignment: BTreeSet<(String, u32)>,
    since_change: BTreeMap<u32, Vec<u64>>,
}

impl Member {
    fn new() -> Self {
        Self {
            assignment: BTreeSet::new(),
            since_change: BTreeMap::new(),
        }
    }

    fn observe(&mut self, consumer: &dyn Consumer, records: Vec<Record>) {
        let now = set(&consumer.assignment());
        if now != self.assignment {
            // A (re)assigned partition restarts at the committed offset.
            self.assignment = now;
            self.since_change.clear();
        }
        for r in records {
            assert!(
                self.assignment.contains(&(r.topic.clone(), r.partition)),
                "poll returned a record of partition {} outside the assignment {:?}",
                r.partition,
                self.assignment
            );
            self.since_change
                .entry(r.partition)
                .or_default()
                .push(r.offset);
        }
    }

    /// Whether every record of every owned partition arrived, in order, since the change.
    /// (A poll may end with the rebalance, so a few records of the previous assignment can
    /// precede the complete run that follows it.)
    fn read_everything(&self, per_partition: u64) -> bool {
        let run: Vec<u64> = (0..per_partition).collect();
        !self.assignment.is_empty()
            && self.assignment.iter().all(|(_, p)| {
                self.since_change
                    .get(p)
                    .is_some_and(|offsets| offsets.ends_with(&run))
            })
    }
}

fn set(assignment: &[(String, u32)]) -> BTreeSet<(String, u32)> {
    assignment.iter().cloned().collect()
}

fn key_for(partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for(k, partitions) == partition)
        .expect("a key for every partition")
}
