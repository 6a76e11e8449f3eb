//! Backends chosen by URL, here and only here (DESIGN.md section 2).

use anyhow::Context;
use distorch_eventlog::EventLog;
use distorch_eventlog::kafka::{KafkaConfig, KafkaLog};
use distorch_store::ReadStore;
use distorch_store::scylla::ScyllaStore;
use distorch_store::sqlite::SqliteStore;
use std::sync::Arc;

/// The event log of a service process. Only a broker can be shared by processes: the
/// embedded log wakes its readers in-process and serves `standalone` alone.
pub async fn log(
    url: &str,
    kafka: &crate::config::KafkaSection,
) -> anyhow::Result<Arc<dyn EventLog>> {
    match scheme(url) {
        "kafka" => {
            let mut cfg = KafkaConfig::from_url(url)?;
            if kafka.replication_factor.is_some() {
                cfg.replication_factor = kafka.replication_factor;
            }
            cfg.properties.extend(kafka.properties.clone());
            let log = KafkaLog::connect(cfg)
                .await
                .with_context(|| format!("cannot connect to the Kafka log at {url}"))?;
            Ok(Arc::new(log))
        }
        "sqlite" => anyhow::bail!(
            "backends.log = {url:?}: the embedded SQLite log serves one process; run \
             `distorch standalone`, or point backends.log at a broker (kafka://host:9092)"
        ),
        "" => anyhow::bail!(
            "backends.log is not set: give the broker as kafka://host:port[,host:port] \
             (config file or DISTORCH__BACKENDS__LOG)"
        ),
        other => {
            anyhow::bail!("backends.log = {url:?}: unknown scheme {other:?}; expected kafka://")
        }
    }
}

/// The read-model store: `sqlite://<path>` or `scylla://host:9042[,host]/keyspace`.
pub async fn store(url: &str) -> anyhow::Result<Arc<dyn ReadStore>> {
    match scheme(url) {
        "sqlite" => {
            let path = &url["sqlite://".len()..];
            let store = SqliteStore::open(path)
                .with_context(|| format!("cannot open the SQLite read store at {path}"))?;
            Ok(Arc::new(store))
        }
        "scylla" => Ok(Arc::new(ScyllaStore::connect(url).await.with_context(
            || format!("cannot use the ScyllaDB read store at {url}"),
        )?)),
        "" => anyhow::bail!(
            "backends.store is not set: give sqlite://<path> or scylla://host:9042/keyspace \
             (config file or DISTORCH__BACKENDS__STORE)"
        ),
        other => anyhow::bail!(
            "backends.store = {url:?}: unknown scheme {other:?}; expected sqlite:// or scylla://"
        ),
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(s, _)| s)
}
