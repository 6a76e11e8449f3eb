//! The analytics conformance suite against the embedded SQLite backend.

use distorch_store::analytics::sqlite::SqliteAnalytics;
use distorch_store::analytics::{Analytics, Window, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_analytics_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let analytics = SqliteAnalytics::open(dir.path().join("analytics.db")).expect("open");
    conformance::run_all(&analytics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_analytics_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let analytics = SqliteAnalytics::open_exclusive(dir.path().join("analytics.db")).expect("open");
    conformance::run_all(&analytics).await;
}

/// With write-behind, recorded events reach the file at `flush` (or before a report), and
/// a second process cannot open the file meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_writes_the_file_at_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("analytics.db");
    let analytics = SqliteAnalytics::open_exclusive(&path).expect("open");
    let refused = SqliteAnalytics::open_exclusive(&path)
        .err()
        .expect("second open refused");
    assert!(
        refused.to_string().contains("in use by another process"),
        "{refused}"
    );

    let w = conformance::fresh_window();
    let mut run = conformance::Run::start("behind", serde_json::json!({}), w.from_ms);
    let t = run.schedule(w.from_ms, "s", "t", "q");
    run.begin(w.from_ms + 10, &t, 1);
    run.complete(w.from_ms + 30, &t, 1, None);
    run.completed(w.from_ms + 40);
    analytics.record(&run.events).await.expect("record");
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let runs = || -> i64 {
        raw.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(runs(), 0, "nothing written before the flush");
    analytics.flush().await.expect("flush");
    assert_eq!(runs(), 1);
    let p = analytics.performance(w).await.expect("performance");
    assert_eq!(p.definitions[0].runs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_file_keeps_its_facts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("analytics.db");
    let w = conformance::fresh_window();
    let mut run = conformance::Run::start("reopen", serde_json::json!({}), w.from_ms);
    let t = run.schedule(w.from_ms, "s", "t", "q");
    run.begin(w.from_ms + 10, &t, 1);
    SqliteAnalytics::open(&path)
        .expect("open")
        .record(&run.events)
        .await
        .expect("record");

    // The rest of the run arrives after a restart: the open attempt was kept.
    run.complete(w.from_ms + 30, &t, 1, None);
    run.completed(w.from_ms + 40);
    let reopened = SqliteAnalytics::open(&path).expect("reopen");
    reopened.record(&run.events).await.expect("record");

    let p = reopened.performance(w).await.expect("performance");
    assert_eq!(p.definitions[0].runs, 1);
    assert_eq!(p.steps[0].run_ms.p50, Some(20.0));
    assert_eq!(p.steps[0].end_to_end_ms.p50, Some(30.0));
}

#[test]
fn a_reversed_window_is_refused() {
    let err = Window::new(2000, 1000).unwrap_err();
    assert!(err.to_string().contains("must be after"), "{err}");
    assert!(!err.is_retryable());
    assert!(Window::new(1000, 1000).is_err());
}
