//! Partition snapshots on a real (embedded) log: the latest complete snapshot is found; a
//! torn one (a writer that died mid-append) is stepped over, and so is one that an owner
//! wrote after another had fenced it.

use distorch_domain::WorkflowId;
use distorch_domain::workflow::Status;
use distorch_engine::snapshot::{self, EndedRun, Header};
use distorch_eventlog::EventLog;
use distorch_eventlog::fence::Epoch;
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
    write_under(log, p, id, events_offset, prev, n, None).await
}

async fn write_under(
    log: &SqliteLog,
    p: u32,
    id: &str,
    events_offset: u64,
    prev: Option<u64>,
    n: usize,
    epoch: Option<&Epoch>,
) -> Vec<u64> {
    let key = distorch_eventlog::fence::key_for_partition(p, PARTITIONS);
    let h = Header {
        topic: TOPIC,
        key: &key,
        partition: p,
        id,
        events_offset,
        prev,
        epoch,
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
        snapshot::latest(&log, TOPIC, 1, no_fence)
            .await
            .unwrap()
            .is_none(),
        "no snapshot yet"
    );

    let first = write(&log, 1, "a", 10, None, 3).await;
    // 10k ended runs need several chunks.
    let second = write(&log, 1, "b", 20, first.last().copied(), 10_000).await;
    assert!(second.len() > 1);
    let image = snapshot::latest(&log, TOPIC, 1, no_fence)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!((image.events_offset, image.ended.len()), (20, 10_000));
    assert_eq!(image.last_chunk, *second.last().unwrap());

    // A writer dies after the first chunk of a multi-chunk snapshot.
    let key = distorch_eventlog::fence::key_for_partition(1, PARTITIONS);
    let h = Header {
        topic: TOPIC,
        key: &key,
        partition: 1,
        id: "c",
        events_offset: 30,
        prev: second.last().copied(),
        epoch: None,
    };
    let torn = snapshot::records(&h, Vec::new(), ended(10_000));
    log.append(vec![torn[0].clone()]).await.unwrap();
    let image = snapshot::latest(&log, TOPIC, 1, no_fence)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(image.events_offset, 20, "the torn snapshot must be skipped");
    assert_eq!(image.ended.len(), 10_000);

    assert!(
        snapshot::latest(&log, TOPIC, 2, no_fence)
            .await
            .unwrap()
            .is_none(),
        "partitions are separate"
    );
}

fn no_fence(_: u64) -> Option<Epoch> {
    None
}

fn epoch(n: u64, owner: &str) -> Epoch {
    Epoch {
        n,
        owner: owner.into(),
    }
}

#[tokio::test]
async fn given_a_newer_owner_when_a_fenced_one_snapshots_past_its_marker_then_restore_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteLog::open(dir.path().join("log.db")).unwrap();
    log.create_topic(TOPIC, PARTITIONS).await.unwrap();
    let (old, new) = (epoch(1, "paused"), epoch(2, "taker"));
    // The events partition: epoch 1 from the start, epoch 2's marker at offset 50.
    let in_force = |e: u64| Some(if e > 50 { new.clone() } else { old.clone() });

    let before = write_under(&log, 1, "a", 40, None, 3, Some(&old)).await;
    // The paused owner resumes and snapshots a fold that includes its ignored events.
    let fenced = write_under(&log, 1, "b", 60, before.last().copied(), 5, Some(&old)).await;
    let image = snapshot::latest(&log, TOPIC, 1, in_force)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(
        (image.events_offset, image.ended.len()),
        (40, 3),
        "the fenced owner's snapshot is skipped for the one before it"
    );

    // The new owner's snapshot after its marker is current.
    write_under(&log, 1, "c", 70, fenced.last().copied(), 7, Some(&new)).await;
    let image = snapshot::latest(&log, TOPIC, 1, in_force)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!((image.events_offset, image.ended.len()), (70, 7));
}
