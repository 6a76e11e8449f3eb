//! Clusters of DisTorch processes on the real Kafka-compatible broker the test run provides.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `host:port` of the broker named by `DISTORCH_TEST_KAFKA`. Panics with what to do when it
/// is unset: these tests never fall back to a fake.
pub fn broker() -> String {
    std::env::var("DISTORCH_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "DISTORCH_TEST_KAFKA is not set: run `bash scripts/test.sh`, which installs and \
             starts a Kafka-compatible broker (tansu) and sets it"
        )
    })
}

/// A topic prefix no other test (or earlier run) uses: `<name>-<pid>-<nanos>`.
pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// Writes `<dir>/distorch.toml` for every process of one cluster: the test broker, a SQLite
/// read store in `dir`, topics under `prefix`, plus `extra` TOML (sections other than
/// `[backends]` and `[api]`, or keys appended to `[api]` when `extra` starts with a key).
pub fn cluster_config(dir: &Path, prefix: &str, extra: &str) -> PathBuf {
    let toml = format!(
        r#"
[backends]
log = "kafka://{broker}"
store = "sqlite://{store}"

[api]
topic_prefix = "{prefix}"
# The API reads a store another process writes: it cannot wait for the projector.
read_your_writes_ms = 0
{extra}
"#,
        broker = broker(),
        store = dir.join("read.db").display(),
    );
    let file = dir.join("distorch.toml");
    std::fs::write(&file, toml).expect("write config");
    file
}
