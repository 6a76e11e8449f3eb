//! The configurations shipped in `infra/k8s` are accepted by the binary and run DisTorch
//! (unknown keys are rejected at startup, so a drift between the manifests and the code fails
//! here; `scripts/check_deploy_files.py` checks the rest of the files statically):
//!
//! - `infra/k8s/configmap.yaml`, the distributed services' `distorch.toml`: `migrate`, then
//!   `engine`, `saga`, `projector` and `api` start from it as separate processes, each answers
//!   `/healthz` and `/readyz`, and a run goes through them. Only what names the cluster is
//!   changed: the backends (the test broker, the test ClickHouse when the file names
//!   ClickHouse, a SQLite read store since no ScyllaDB runs here), the topic prefix (one per
//!   run) and the replication factor (one broker);
//! - `infra/k8s/standalone/configmap.yaml`: `standalone` starts from it.
//!
//! Needs `DISTORCH_TEST_KAFKA` (host:port of a Kafka-compatible broker) and, while the
//! ConfigMap's analytics are ClickHouse, `DISTORCH_TEST_CLICKHOUSE` (its HTTP URL);
//! `bash scripts/test.sh` starts both and sets them.

mod common;

use common::{Server, tempdir};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `distorch.toml: |` block of a ConfigMap under the repository root, unindented.
fn configmap_toml(path: &str) -> String {
    let path = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("distorch.toml: |"));
    lines
        .next()
        .unwrap_or_else(|| panic!("{path}: no distorch.toml block"));
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `key` in `[table]` of a simple TOML text (one `key = value` per line), if set.
fn get_key<'a>(toml: &'a str, table: &str, key: &str) -> Option<&'a str> {
    let header = format!("[{table}]");
    toml.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
}

/// `toml` with `key = value` in `[table]`: replaced where the file sets it, added otherwise.
fn set_key(toml: &str, table: &str, key: &str, value: &str) -> String {
    let header = format!("[{table}]");
    let line = format!("{key} = {value}");
    let mut out: Vec<String> = toml.lines().map(str::to_owned).collect();
    let Some(start) = out.iter().position(|l| l.trim() == header) else {
        out.extend([String::new(), header, line]);
        return out.join("\n") + "\n";
    };
    let end = out[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(out.len(), |i| start + 1 + i);
    let existing = (start + 1..end).find(|&i| {
        out[i]
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key && !k.trim_start().starts_with('#'))
    });
    match existing {
        Some(i) => out[i] = line,
        None => out.insert(start + 1, line),
    }
    out.join("\n") + "\n"
}

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: {what}. `bash scripts/test.sh` starts one and sets it; this test \
             never runs against a fake"
        )
    })
}

fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("deploy_{}_{nanos}", std::process::id())
}

/// GETs `url` until it answers 200 (30 s at most; `/readyz` may say 503 for a moment).
async fn wait_200(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = reqwest::get(url).await.map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {url} never answered 200; last: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_config_runs_every_service() {
    let shipped = configmap_toml("infra/k8s/configmap.yaml");
    assert!(
        shipped.contains("[backends]") && get_key(&shipped, "backends", "log").is_some(),
        "the ConfigMap names no log backend: {shipped}"
    );
    let broker = required_env(
        "DISTORCH_TEST_KAFKA",
        "it names the Kafka-compatible broker (host:port) the services share",
    );
    let broker = broker.strip_prefix("kafka://").unwrap_or(&broker);
    let dir = tempdir();
    let unique = unique_name();

    let mut toml = set_key(
        &shipped,
        "backends",
        "log",
        &format!("\"kafka://{broker}\""),
    );
    // No ScyllaDB can run here: the read store is SQLite, shared by the api and projector.
    let store = dir.path().join("read.db");
    toml = set_key(
        &toml,
        "backends",
        "store",
        &format!("\"sqlite://{}\"", store.display()),
    );
    let analytics = get_key(&shipped, "backends", "analytics").unwrap_or("\"\"");
    let clickhouse = analytics.starts_with("\"clickhouse://");
    let analytics = if clickhouse {
        let server = required_env(
            "DISTORCH_TEST_CLICKHOUSE",
            "the ConfigMap keeps analytics in ClickHouse, and this names one (http://host:port)",
        );
        let host = server
            .trim_end_matches('/')
            .strip_prefix("http://")
            .unwrap_or_else(|| {
                panic!("DISTORCH_TEST_CLICKHOUSE must be http://host:port: {server}")
            });
        format!("\"clickhouse://{host}/{unique}\"")
    } else {
        format!("\"sqlite://{}\"", dir.path().join("analytics.db").display())
    };
    toml = set_key(&toml, "backends", "analytics", &analytics);
    // One broker: topics can only have one replica.
    toml = set_key(&toml, "kafka", "replication_factor", "1");
    // Topics and consumer groups of their own, so earlier runs never interfere.
    toml = set_key(&toml, "api", "topic_prefix", &format!("\"{unique}\""));
    let file = dir.path().join("distorch.toml");
    std::fs::write(&file, &toml).expect("write config");

    // The migrate Job: the services refuse a ClickHouse database without the schema.
    let migrate = Command::new(env!("CARGO_BIN_EXE_distorch"))
        .arg("--config")
        .arg(&file)
        .arg("migrate")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run distorch migrate");
    let stdout = String::from_utf8_lossy(&migrate.stdout);
    assert!(
        migrate.status.success(),
        "distorch migrate failed:\n{stdout}\n{}\nconfig:\n{toml}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    if clickhouse {
        assert!(
            stdout.contains("ClickHouse database"),
            "migrate did not migrate ClickHouse: {stdout}"
        );
    }

    // One after another here; in a cluster they start in any order, and whichever comes
    // first creates the topics.
    let engine = Server::service("engine", &file);
    let saga = Server::service("saga", &file);
    let projector = Server::service("projector", &file);
    let api_server = Server::service("api", &file);
    for (role, server) in [
        ("engine", &engine),
        ("saga", &saga),
        ("projector", &projector),
        ("api", &api_server),
    ] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            wait_200(&format!("{}{path}", server.url)).await;
        }
        eprintln!("{role} at {} is live and ready", server.url);
    }

    // One run through all of them: api -> engine -> worker poll -> projector -> api.
    let api = api_server.api();
    let (status, body) = api
        .register_yaml("name: deploy-check\nsteps:\n  - {id: only, task: noop, queue: deploy}\n")
        .await;
    assert_eq!(status, 201, "register: {body}");
    let id = api.start("deploy-check", json!({"n": 1})).await;
    let task = api.take("deploy").await;
    let (status, body) = api.complete(&task, json!({"ok": true})).await;
    assert_eq!(status, 200, "complete: {body}");
    let run = api.wait_status(&id, "completed").await;
    assert_eq!(run["output"], json!({"only": {"ok": true}}), "{run}");

    // The analytics the api reports are the ones the projector wrote.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.get("/analytics/performance?window=1h").await;
        assert_eq!(status, 200, "analytics: {body}");
        let runs = body["definitions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["definition"] == "deploy-check")
            .map(|d| d["runs"].clone());
        if runs == Some(json!(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached the analytics: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_standalone_config_starts_a_server() {
    let toml = configmap_toml("infra/k8s/standalone/configmap.yaml");
    assert!(toml.contains("[api]"), "block extracted: {toml}");
    let dir = tempdir();
    let server = Server::start_with_config(dir.path(), &toml);
    for path in ["/healthz", "/readyz"] {
        wait_200(&format!("{}{path}", server.url)).await;
    }
}

#[test]
fn set_key_replaces_adds_and_appends() {
    let toml = "[a]\nx = 1\n# y = 0\n\n[b]\ny = 2\n";
    assert_eq!(
        set_key(toml, "a", "x", "5"),
        "[a]\nx = 5\n# y = 0\n\n[b]\ny = 2\n"
    );
    assert_eq!(
        set_key(toml, "a", "y", "3"),
        "[a]\ny = 3\nx = 1\n# y = 0\n\n[b]\ny = 2\n"
    );
    assert_eq!(
        set_key(toml, "c", "z", "\"s\""),
        "[a]\nx = 1\n# y = 0\n\n[b]\ny = 2\n\n[c]\nz = \"s\"\n"
    );
    assert_eq!(get_key(toml, "b", "y"), Some("2"));
    assert_eq!(get_key(toml, "a", "y"), None);
}
