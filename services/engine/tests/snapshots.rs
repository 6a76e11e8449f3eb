//! Partition snapshots on a real (embedded) log: the latest complete snapshot is found, and
//! a torn one (a writer that died mid-append) is stepped over.

use distorch_domain::WorkflowId;
use distorch_domain::workflow::Status;
use distorch_engine::snapshot::{self, EndedRun, Header};
use distorch_eventlog::EventLog;
use distorch_eventlog::sqlite::SqliteLog;
use serde_json::value::RawValue;

const TOPIC: &str = "snapshots";
const PARTITIONS: u32 = 4;

fn ended(n: usize) -> Vec<EndedRun> {
    (0..n)
        .map(|i| EndedRun {
            id: WorkflowId::from_idempotency_key("d", &i.to_string()),
            status: Status::Completed,
            last_seq: i as u64,
        })
        .collect()
}

async fn write(
    log: &SqliteLog,
    p: u32,
    id: &str,
    events_offset: u64,
    prev: Option<u64>,
    n: usize,
) -> Vec<u64> {
    let key = snapshot::key_for_partition(p, PARTITIONS);
    let h = Header {
        topic: TOPIC,
        key: &key,
        partition: p,
        id,
        events_offset,
        prev,
    };
    let runs: Vec<Box<RawValue>> = Vec::new();
    let recs = snapshot::records(&h, runs, ended(n));
    let pos = log.append(recs).await.expect("append");
    assert!(
        pos.iter().all(|x| x.partition == p),
        "snapshot of {p} landed elsewhere"
    );
    pos.iter().map(|x| x.offset).collect()
}

#[tokio::test]
async fn the_latest_complete_snapshot_wins_and_a_torn_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db")).unwrap();
    log.create_topic(TOPIC, PARTITIONS).await.unwrap();
    assert!(
        snapshot::latest(&log, TOPIC, 1).await.unwrap().is_none(),
        "no snapshot yet"
    );

    let first = write(&log, 1, "a", 10, None, 3).await;
    // 10k ended runs need several chunks.
    let second = write(&log, 1, "b", 20, first.last().copied(), 10_000).await;
    assert!(second.len() > 1);
    let image = snapshot::latest(&log, TOPIC, 1)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!((image.events_offset, image.ended.len()), (20, 10_000));
    assert_eq!(image.last_chunk, *second.last().unwrap());

    // A writer dies after the first chunk of a multi-chunk snapshot.
    let key = snapshot::key_for_partition(1, PARTITIONS);
    let h = Header {
        topic: TOPIC,
        key: &key,
        partition: 1,
        id: "c",
        events_offset: 30,
        prev: second.last().copied(),
    };
    let torn = snapshot::records(&h, Vec::new(), ended(10_000));
    log.append(vec![torn[0].clone()]).await.unwrap();
    let image = snapshot::latest(&log, TOPIC, 1)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(image.events_offset, 20, "the torn snapshot must be skipped");
    assert_eq!(image.ended.len(), 10_000);

    assert!(
        snapshot::latest(&log, TOPIC, 2).await.unwrap().is_none(),
        "partitions are separate"
    );
}
