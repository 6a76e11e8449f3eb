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
