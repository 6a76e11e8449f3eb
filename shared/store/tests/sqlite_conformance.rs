//! The read-store conformance suite against the embedded SQLite backend.

use distorch_store::conformance;
use distorch_store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("read.db")).expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_keeps_its_views() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    conformance::views_match_the_fold(&SqliteStore::open(&path).expect("open")).await;
    // A second open sees the existing schema and data, and still conforms.
    conformance::run_all(&SqliteStore::open(&path).expect("reopen")).await;
}

#[tokio::test]
async fn a_second_store_on_the_same_file_sees_runs_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    let writer = SqliteStore::open(&path).expect("open");
    let reader = SqliteStore::open(&path).expect("open again");
    conformance::wait_for_end_reads_what_another_writer_folded(&writer, &reader).await;
}
