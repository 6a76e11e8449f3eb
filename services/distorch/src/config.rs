//! Configuration: defaults, then a TOML file, then `DISTORCH__SECTION__KEY` environment
//! variables, then command-line flags (each layer overrides the one before).

use distorch_api::ApiConfig;
use distorch_engine::EngineConfig;
use distorch_projector::ProjectorConfig;
use distorch_saga::AlertsConfig;
use distorch_saga::HttpConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub standalone: StandaloneConfig,
    pub telemetry: TelemetryConfig,
    pub api: ApiConfig,
    pub engine: EngineConfig,
    pub projector: ProjectorConfig,
    pub alerts: AlertsConfig,
    /// The executor of `http` steps and its circuit breakers.
    pub http: HttpConfig,
    /// Backends of the per-service subcommands (`standalone` uses its data dir).
    pub backends: BackendsConfig,
    /// Client settings added to a `kafka://` log.
    pub kafka: KafkaSection,
    /// The HTTP port of a per-service subcommand (API, or health and metrics).
    pub server: ServerConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    /// `kafka://host:port[,host:port]`.
    pub log: String,
    /// `sqlite://<path>` or `scylla://host:9042[,host]/keyspace`.
    pub store: String,
    /// `sqlite://<path>` or `clickhouse://host:8123/database`.
    pub analytics: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Replication factor of the topics DisTorch creates (default: the broker's).
    pub replication_factor: Option<u16>,
    /// librdkafka properties, e.g. `"session.timeout.ms" = "10000"`, or TLS and SASL
    /// (`security.protocol`, `ssl.*`, `sasl.*`: docs/kafka.md).
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `127.0.0.1:0` picks a free port and prints it.
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Address of the HTTP API (`127.0.0.1:0` picks a free port and prints it).
    pub listen: String,
    /// Where the embedded log and read models live.
    pub data_dir: PathBuf,
    /// Partitions of every per-run topic (commands, events, replies, snapshots, task queues)
    /// when a data dir is created; a data dir keeps the count it was created with. One
    /// process gains nothing from more, and each partition a group commit touches is one more
    /// page written. `[api.partitions]` is for the services on Kafka.
    pub partitions: u32,
    /// How a new data dir stores its event log: `journal` (an append-only file,
    /// `log.journal`) or `sqlite` (`log.db`). A data dir keeps the one it was created with.
    pub log: EmbeddedLog,
}

/// The storage of `standalone`'s event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddedLog {
    Journal,
    Sqlite,
}

impl EmbeddedLog {
    /// The log's file name in a data dir.
    pub fn file_name(self) -> &'static str {
        match self {
            EmbeddedLog::Journal => "log.journal",
            EmbeddedLog::Sqlite => "log.db",
        }
    }
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            data_dir: PathBuf::from("./distorch-data"),
            partitions: 1,
            log: EmbeddedLog::Journal,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// A `tracing` filter, e.g. `info,distorch_engine=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            log_level: "info".into(),
        }
    }
}

/// Loads the layered configuration. `file` must exist when given explicitly; the default
/// `distorch.toml` in the working directory is optional.
pub fn load(file: Option<&Path>, overrides: Figment) -> anyhow::Result<Config> {
    let mut fig = Figment::new();
    match file {
        Some(path) => {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            fig = fig.merge(Toml::file(path));
        }
        None => fig = fig.merge(Toml::file("distorch.toml")),
    }
    fig = fig
        .merge(Env::prefixed("DISTORCH__").split("__"))
        .merge(overrides);
    fig.extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

/// Flag overrides of a per-service subcommand.
pub fn service_flags(listen: Option<String>) -> Figment {
    let mut fig = Figment::new();
    if let Some(listen) = listen {
        fig = fig.merge(Serialized::default("server.listen", listen));
    }
    fig
}

/// Flag overrides for the `standalone` section.
pub fn standalone_flags(listen: Option<String>, data_dir: Option<PathBuf>) -> Figment {
    let mut fig = Figment::new();
    if let Some(listen) = listen {
        fig = fig.merge(Serialized::default("standalone.listen", listen));
    }
    if let Some(dir) = data_dir {
        fig = fig.merge(Serialized::default("standalone.data_dir", dir));
    }
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Config, String> {
        Figment::new()
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_misspelt_key_is_rejected_in_every_section() {
        for section in [
            "standalone",
            "telemetry",
            "api",
            "api.cost_rates",
            "engine",
            "projector",
            "alerts",
            "http",
            "backends",
            "kafka",
            "server",
        ] {
            let err = parse(&format!("[{section}]\nsnapshot_evry = 1\n")).expect_err(section);
            assert!(err.contains("snapshot_evry"), "[{section}]: {err}");
        }
        assert!(parse("[engine]\nsnapshot_every = 1\n").is_ok());
    }
}
