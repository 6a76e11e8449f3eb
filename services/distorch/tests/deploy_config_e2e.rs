//! The configuration shipped in `infra/k8s/configmap.yaml` is accepted by the binary (unknown
//! keys are rejected at startup, so a drift between the manifests and the code fails here).

mod common;

use common::{Server, tempdir};

/// The `distorch.toml: |` block of the ConfigMap, unindented.
fn configmap_toml() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/k8s/configmap.yaml"
    );
    let yaml = std::fs::read_to_string(path).expect("read configmap.yaml");
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("distorch.toml: |"));
    lines.next().expect("a distorch.toml block");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_kubernetes_config_starts_a_server() {
    let toml = configmap_toml();
    assert!(toml.contains("[api]"), "block extracted: {toml}");
    let dir = tempdir();
    let server = Server::start_with_config(dir.path(), &toml);
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}
