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
async fn write_behind_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_exclusive(dir.path().join("read.db")).expect("open");
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_store_is_completed_by_replay_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    conformance::replay_after_a_crash_completes_the_store(|| {
        SqliteStore::open_exclusive(&path).expect("open")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_is_completed_by_replay_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    conformance::replay_after_a_crash_completes_the_store(|| {
        SqliteStore::open(&path).expect("open")
    })
    .await;
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

#[tokio::test]
async fn two_stores_on_one_file_fold_a_run_in_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    let first = SqliteStore::open(&path).expect("open");
    let second = SqliteStore::open(&path).expect("open again");
    conformance::writers_taking_turns_fold_onto_each_others_views(&first, &second).await;
}

/// A file written before `workflows` became a rowid table (layout 0), with views stored as
/// plain JSON text, opens, keeps every run and view, and is moved to the current layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_0_file_is_migrated_and_keeps_its_runs() {
    use distorch_store::{ReadStore, WorkflowFilter};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.db");
    let store = SqliteStore::open(&path).expect("open");
    conformance::views_match_the_fold(&store).await;
    let all = WorkflowFilter::default();
    let before = store.workflows(&all, 100, None).await.expect("list");
    assert!(!before.items.is_empty());
    let mut views = Vec::new();
    for run in &before.items {
        views.push(store.workflow(run.workflow_id).await.expect("view"));
    }
    drop(store);

    // Rewrite the file as version 0 left it.
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute_batch(
        "ALTER TABLE workflows RENAME TO w;
         CREATE TABLE workflows (
             id TEXT PRIMARY KEY, definition TEXT NOT NULL, version INTEGER NOT NULL,
             status TEXT NOT NULL, created_at_ms INTEGER NOT NULL,
             updated_at_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL, view TEXT NOT NULL
         ) WITHOUT ROWID;
         INSERT INTO workflows SELECT * FROM w;
         DROP TABLE w;
         CREATE INDEX workflows_newest ON workflows (created_at_ms DESC, id DESC);
         CREATE INDEX workflows_by_status ON workflows (status, created_at_ms DESC, id DESC);
         CREATE INDEX workflows_by_definition
             ON workflows (definition, created_at_ms DESC, id DESC);
         PRAGMA user_version = 0;",
    )
    .expect("write layout 0");
    // Version 0 stored views as plain JSON text.
    for view in views.iter().flatten() {
        let text = serde_json::to_string(view).expect("view json");
        conn.execute(
            "UPDATE workflows SET view = ?1 WHERE id = ?2",
            rusqlite::params![text, view.workflow_id.to_string()],
        )
        .expect("write a text view");
    }
    drop(conn);

    let store = SqliteStore::open(&path).expect("open layout 0");
    assert_eq!(
        store.workflows(&all, 100, None).await.expect("list"),
        before
    );
    for (run, view) in before.items.iter().zip(&views) {
        assert_eq!(&store.workflow(run.workflow_id).await.expect("view"), view);
    }
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'workflows'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert!(!sql.contains("WITHOUT ROWID"), "still layout 0: {sql}");
    let indexes: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'workflows'
             AND name LIKE 'workflows_%'",
            [],
            |r| r.get(0),
        )
        .expect("indexes");
    assert_eq!(indexes, 3);
    drop(conn);
    conformance::run_all(&store).await;
}
