//! The analytics conformance suite and the migrations against a real ClickHouse server.
//!
//! The server comes from `DISTORCH_TEST_CLICKHOUSE` (its HTTP URL, e.g.
//! `http://127.0.0.1:8123`), which `bash scripts/test.sh` sets after starting one. Without
//! it these tests fail: they are never skipped and never run against a fake.

use distorch_store::StoreError;
use distorch_store::analytics::clickhouse::{ClickHouseAnalytics, schema};
use distorch_store::analytics::conformance;

/// A client for a fresh database on the test server (so runs never collide), and the
/// server's HTTP URL.
fn fresh() -> (ClickHouseAnalytics, String) {
    let server = std::env::var("DISTORCH_TEST_CLICKHOUSE").unwrap_or_else(|_| {
        panic!(
            "DISTORCH_TEST_CLICKHOUSE is not set: run `bash scripts/test.sh`, which installs \
             and starts ClickHouse (or point it at a server's HTTP URL, http://host:8123)"
        )
    });
    let host = server
        .trim_end_matches('/')
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("DISTORCH_TEST_CLICKHOUSE must be an http:// URL: {server}"));
    let database = format!("distorch_test_{}", uuid::Uuid::new_v4().simple());
    let analytics =
        ClickHouseAnalytics::from_url(&format!("clickhouse://{host}/{database}")).expect("url");
    (analytics, format!("http://{host}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_analytics_conforms() {
    let (analytics, _) = fresh();
    analytics.migrate().await.expect("migrate");
    conformance::run_all(&analytics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_check_schema_asks_for_it() {
    let (analytics, _) = fresh();

    let err = analytics.check_schema().await.unwrap_err();
    assert!(matches!(err, StoreError::Setup(_)), "{err}");
    assert!(err.to_string().contains("run `distorch migrate`"), "{err}");
    assert!(!err.is_retryable());

    let all: Vec<u32> = schema::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(analytics.migrate().await.expect("migrate"), all);
    analytics.check_schema().await.expect("schema is current");
    assert_eq!(analytics.migrate().await.expect("again"), Vec::<u32>::new());
    analytics.check_schema().await.expect("still current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_views_answer_over_recorded_facts() {
    use distorch_store::analytics::Analytics;
    let (analytics, url) = fresh();
    analytics.migrate().await.expect("migrate");
    let w = conformance::fresh_window();
    let mut run = conformance::Run::start("bi", serde_json::json!({}), w.from_ms);
    let t = run.schedule(w.from_ms, "s", "t", "q");
    run.begin(w.from_ms + 10, &t, 1);
    run.complete(w.from_ms + 30, &t, 1, None);
    run.completed(w.from_ms + 40);
    analytics.record(&run.events).await.expect("record");

    let client = clickhouse::Client::default()
        .with_url(url)
        .with_database(analytics.database())
        .with_option("network_compression_method", "lz4");
    for view in [
        "bi_attempts",
        "bi_definition_performance",
        "bi_step_performance",
        "bi_step_time",
        "bi_cost_usage",
    ] {
        let rows: u64 = client
            .query(&format!("SELECT count() FROM {view}"))
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
        assert_eq!(rows, 1, "{view}");
    }
}
