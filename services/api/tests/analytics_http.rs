//! `/api/v1/analytics/*` over HTTP, served from the embedded analytics backend.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use distorch_api::{ApiConfig, SharedRegistry, router, router_with_analytics};
use distorch_domain::command::TaskMetrics;
use distorch_domain::view::rfc3339;
use distorch_eventlog::EventLog;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_store::analytics::conformance::{Run, fresh_window};
use distorch_store::analytics::sqlite::SqliteAnalytics;
use distorch_store::analytics::{Analytics, CostRates, Window};
use distorch_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

async fn get(app: &Router, uri: &str) -> (StatusCode, String, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

/// One run of `orders` in `w`: a `charge` task that waits 1 s and runs 2 s with 3 CPU-s.
async fn recorded(analytics: &SqliteAnalytics, w: Window) {
    let t = w.from_ms;
    let mut run = Run::start("orders", json!({"tenant": "acme"}), t);
    let task = run.schedule(t, "charge", "payments.charge", "payments");
    run.begin(t + 1000, &task, 1);
    let metrics = TaskMetrics {
        cpu_ms: Some(3000.0),
        ..TaskMetrics::default()
    };
    run.complete(t + 3000, &task, 1, Some(metrics));
    run.completed(t + 4000);
    analytics.record(&run.events).await.expect("record");
}

fn window_query(w: Window) -> String {
    format!("from={}&to={}", rfc3339(w.from_ms), rfc3339(w.to_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_served_for_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let store = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    let analytics = Arc::new(SqliteAnalytics::open(dir.path().join("analytics.db")).unwrap());
    let w = fresh_window();
    recorded(&analytics, w).await;
    let config = ApiConfig {
        cost_rates: CostRates {
            per_cpu_second: 0.5,
            per_attempt: 0.25,
            ..CostRates::default()
        },
        ..ApiConfig::default()
    };
    let app = router_with_analytics(
        log,
        store,
        Some(analytics),
        config,
        SharedRegistry::default(),
    )
    .await
    .unwrap();
    let q = window_query(w);

    let (status, _, perf) = get(&app, &format!("/api/v1/analytics/performance?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{perf}");
    assert_eq!(perf["from"], rfc3339(w.from_ms));
    assert_eq!(perf["definitions"][0]["definition"], "orders");
    assert_eq!(perf["definitions"][0]["runs"], 1);
    assert_eq!(perf["definitions"][0]["end_to_end_ms"]["p50"], 4000.0);
    assert_eq!(perf["steps"][0]["step_id"], "charge");
    assert_eq!(perf["steps"][0]["run_ms"]["p99"], 2000.0);

    let (status, _, b) = get(&app, &format!("/api/v1/analytics/bottlenecks?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["total_ms"], 3000);
    assert_eq!(b["steps"][0]["queue_wait_ms"], 1000);
    assert_eq!(b["steps"][0]["run_ms"], 2000);
    assert_eq!(b["steps"][0]["share"], 1.0);

    let (status, _, cost) = get(&app, &format!("/api/v1/analytics/cost?{q}")).await;
    assert_eq!(status, StatusCode::OK, "{cost}");
    assert_eq!(cost["rates"]["per_cpu_second"], 0.5);
    assert_eq!(cost["rows"][0]["tenant"], "acme");
    assert_eq!(cost["rows"][0]["cpu_seconds"], 3.0);
    // 3 CPU-s at 0.5 plus one attempt at 0.25.
    assert_eq!(cost["total"], 1.75);

    // The default window is the last 24 hours, which the recorded run is not in.
    let (status, _, recent) = get(&app, "/api/v1/analytics/performance").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(recent["definitions"], json!([]));
    let (status, _, _) = get(&app, "/api/v1/analytics/cost?window=7d").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_windows_and_missing_analytics_are_clear_problems() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(SqliteLog::open(dir.path().join("log.db")).unwrap());
    let store = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    let analytics = Arc::new(SqliteAnalytics::open(dir.path().join("analytics.db")).unwrap());
    let app = router_with_analytics(
        log.clone(),
        store.clone(),
        Some(analytics),
        ApiConfig::default(),
        SharedRegistry::default(),
    )
    .await
    .unwrap();
    for (uri, says) in [
        ("/api/v1/analytics/performance?from=yesterday", "RFC 3339"),
        ("/api/v1/analytics/bottlenecks?window=1week", "duration"),
        (
            "/api/v1/analytics/cost?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "must be after",
        ),
        (
            "/api/v1/analytics/cost?from=2026-01-01T00:00:00Z&window=1h",
            "not both",
        ),
    ] {
        let (status, content_type, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        assert!(
            body["detail"].as_str().unwrap().contains(says),
            "{uri}: {body}"
        );
    }

    let without = router(log, store, ApiConfig::default(), SharedRegistry::default())
        .await
        .unwrap();
    let (status, content_type, body) = get(&without, "/api/v1/analytics/performance").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("not configured"));
}
