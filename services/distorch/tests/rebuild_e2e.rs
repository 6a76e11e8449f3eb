//! `distorch projector --rebuild` on a stopped standalone's data dir: the read models and
//! analytics rebuilt from scratch out of the log answer every query as before.

mod common;

use common::{Api, Server, tempdir};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const FLOW: &str = r#"
name: flow
defaults:
  retry: {max_attempts: 3, initial_interval: 10ms, backoff_coefficient: 1.0, max_interval: 10ms}
steps:
  - id: fetch
    task: fetch
    queue: rebuild
  - id: store
    task: store
    queue: rebuild
"#;

const FRAGILE: &str = r#"
name: fragile
steps:
  - {id: only, task: only, queue: rebuild, on_failure: park, retry: {max_attempts: 1}}
"#;

/// An explicit window holding every run: the default one ends at the wall clock, which
/// would move between the two reads.
const WINDOW: &str = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";

/// Everything the API answers about `runs` and the store as a whole.
async fn read_models(api: &Api, runs: &[String]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for id in runs {
        for suffix in ["", "/history", "/path"] {
            let path = format!("/workflows/{id}{suffix}");
            let (status, body) = api.get(&path).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            out.push((path, body));
        }
    }
    for path in [
        "/workflows".to_string(),
        "/workflows?status=completed".into(),
        "/workflows?definition=fragile".into(),
        "/definitions".into(),
        "/definitions/flow".into(),
        "/dlq".into(),
        format!("/analytics/performance?{WINDOW}"),
        format!("/analytics/bottlenecks?{WINDOW}"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        out.push((path, body));
    }
    out
}

/// A config for the per-service subcommands over a stopped standalone's data dir; `log` is
/// the event log's file (`log.journal`, or `log.db` for SQLite).
fn write_config(dir: &Path, log: &str) -> std::path::PathBuf {
    let config = dir.join("rebuild.toml");
    let db = |name: &str| {
        let scheme = if name.ends_with(".journal") {
            "journal"
        } else {
            "sqlite"
        };
        format!("{scheme}://{}", dir.join(name).display())
    };
    std::fs::write(
        &config,
        format!(
            "[backends]\nlog = {:?}\nstore = {:?}\nanalytics = {:?}\n",
            db(log),
            db("read.db"),
            db("analytics.db")
        ),
    )
    .expect("write config");
    config
}

fn run_distorch(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distorch"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run distorch")
}

fn rebuild(dir: &Path) -> String {
    let out = run_distorch(
        &write_config(dir, "log.journal"),
        &["projector", "--rebuild"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rebuild failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_projector_rebuilt_from_scratch_gives_the_same_read_models() {
    let dir = tempdir();
    let mut server = Server::start(dir.path());
    let api = server.api();
    assert_eq!(api.register_yaml(FLOW).await.0, 201);
    assert_eq!(api.register_yaml(FRAGILE).await.0, 201);

    // Completed straight through.
    let plain = api.start("flow", json!({"n": 1})).await;
    for _ in 0..2 {
        let t = api.take("rebuild").await;
        assert_eq!(api.complete(&t, json!({"ok": t["step_id"]})).await.0, 200);
    }
    api.wait_status(&plain, "completed").await;

    // A failed attempt, retried, then completed.
    let retried = api.start("flow", json!({"n": 2})).await;
    let t = api.take("rebuild").await;
    assert_eq!(api.fail(&t, "flaky", true).await.0, 200);
    let t = api.take("rebuild").await;
    assert_eq!(t["attempt"], 2, "{t}");
    assert_eq!(api.complete(&t, json!({"second": true})).await.0, 200);
    let t = api.take("rebuild").await;
    assert_eq!(api.complete(&t, json!({})).await.0, 200);
    api.wait_status(&retried, "completed").await;

    // A fatal failure: the task is parked (a dead letter).
    let parked = api.start("fragile", json!({"n": 3})).await;
    let t = api.take("rebuild").await;
    assert_eq!(api.fail(&t, "fatal", false).await.0, 200);
    api.wait_status(&parked, "parked").await;

    // Cancelled while its first task runs.
    let cancelled = api.start("flow", json!({"n": 4})).await;
    let _running = api.take("rebuild").await;
    let (status, body) = api
        .post(&format!("/workflows/{cancelled}/cancel"), json!({}))
        .await;
    assert!(status == 200 || status == 202, "{body}");
    api.wait_status(&cancelled, "cancelled").await;

    let runs = [plain, retried, parked, cancelled];
    let before = read_models(&api, &runs).await;
    let performance = &before
        .iter()
        .find(|(p, _)| p.contains("performance"))
        .unwrap()
        .1;
    assert_ne!(performance["definitions"], json!([]), "{performance}");
    assert!(server.terminate(), "standalone stops cleanly on SIGTERM");

    let printed = rebuild(dir.path());
    assert!(printed.starts_with("rebuilt "), "{printed}");
    assert!(printed.contains(" 2 definitions"), "{printed}");

    let server = Server::start(dir.path());
    let after = read_models(&server.api(), &runs).await;
    // Nothing is ignored: every field, timestamps included, comes from the events (their
    // `at_ms`), not from when they were folded in, so a rebuild reproduces it exactly.
    for ((path, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(a, b, "GET {path} differs after the rebuild");
    }
    assert_eq!(before.len(), after.len());
}

#[test]
fn a_rebuild_without_the_log_fails_and_a_service_still_refuses_the_embedded_log() {
    let dir = tempdir();
    let config = write_config(dir.path(), "missing.journal");
    let out = run_distorch(&config, &["projector", "--rebuild"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no event log at"), "{stderr}");
    assert!(
        !dir.path().join("read.db").exists(),
        "nothing is touched before the log is found"
    );

    for log in ["log.journal", "log.db"] {
        let config = write_config(dir.path(), log);
        let out = run_distorch(&config, &["projector", "--listen", "127.0.0.1:0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("serves one process"), "{log}: {stderr}");
    }
}
