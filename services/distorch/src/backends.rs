//! Backends chosen by URL, here and only here (docs/architecture.md, "Layering rules").

use anyhow::Context;
use distorch_eventlog::EventLog;
use distorch_eventlog::journal::JournalLog;
use distorch_eventlog::kafka::{KafkaConfig, KafkaLog};
use distorch_eventlog::sqlite::SqliteLog;
use distorch_store::ReadStore;
use distorch_store::analytics::Analytics;
use distorch_store::analytics::clickhouse::ClickHouseAnalytics;
use distorch_store::analytics::sqlite::SqliteAnalytics;
use distorch_store::scylla::ScyllaStore;
use distorch_store::sqlite::SqliteStore;
use std::sync::Arc;

/// The event log of a service process. Only a broker can be shared by processes: the
/// embedded log wakes its readers in-process and serves `standalone` alone.
pub async fn log(
    url: &str,
    kafka: &crate::config::KafkaSection,
    topic_prefix: &str,
) -> anyhow::Result<Arc<dyn EventLog>> {
    match scheme(url) {
        "kafka" => {
            let mut cfg = KafkaConfig::from_url(url)?;
            if kafka.replication_factor.is_some() {
                cfg.replication_factor = kafka.replication_factor;
            }
            cfg.properties.extend(kafka.properties.clone());
            // Groups are namespaced like topics: two deployments on one cluster never share
            // a consumer group (and never rebalance each other).
            cfg.group_prefix = format!("{topic_prefix}.");
            let log = KafkaLog::connect(cfg)
                .await
                .with_context(|| format!("cannot connect to the Kafka log at {url}"))?;
            Ok(Arc::new(log))
        }
        "sqlite" | "journal" => anyhow::bail!(
            "backends.log = {url:?}: the embedded log serves one process; run \
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

/// The event log a rebuild replays: a broker as for [`log`], or, unlike a running service,
/// the embedded log of a stopped `standalone` (`journal://<data dir>/log.journal`, or
/// `sqlite://<data dir>/log.db` for a data dir created on SQLite); the rebuild is then its
/// only user.
pub async fn replay_log(
    url: &str,
    kafka: &crate::config::KafkaSection,
    topic_prefix: &str,
) -> anyhow::Result<Arc<dyn EventLog>> {
    let embedded = scheme(url);
    if embedded != "sqlite" && embedded != "journal" {
        return log(url, kafka, topic_prefix).await;
    }
    let path = &url[embedded.len() + "://".len()..];
    // Opening creates a missing file; a rebuild from an empty log would wipe the store.
    anyhow::ensure!(
        std::path::Path::new(path).is_file(),
        "backends.log = {url:?}: no event log at {path}"
    );
    let log: Arc<dyn EventLog> = if embedded == "journal" {
        Arc::new(
            JournalLog::open(path)
                .with_context(|| format!("cannot open the event log journal at {path}"))?,
        )
    } else {
        Arc::new(
            SqliteLog::open(path)
                .with_context(|| format!("cannot open the SQLite event log at {path}"))?,
        )
    };
    Ok(log)
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

/// The analytics store: `sqlite://<path>` or `clickhouse://host:8123/database`; `None`
/// when not configured (the analytics endpoints then answer 503).
pub async fn analytics(url: &str) -> anyhow::Result<Option<Arc<dyn Analytics>>> {
    match scheme(url) {
        "" => Ok(None),
        "sqlite" => {
            let path = &url["sqlite://".len()..];
            let analytics = SqliteAnalytics::open(path)
                .with_context(|| format!("cannot open the SQLite analytics store at {path}"))?;
            Ok(Some(Arc::new(analytics)))
        }
        "clickhouse" => {
            let ch = ClickHouseAnalytics::from_url(url)?;
            ch.check_schema()
                .await
                .with_context(|| format!("ClickHouse at {url}"))?;
            Ok(Some(Arc::new(ch)))
        }
        other => anyhow::bail!(
            "backends.analytics = {url:?}: unknown scheme {other:?}; expected sqlite:// or \
             clickhouse://"
        ),
    }
}

/// `distorch migrate`: brings the ScyllaDB and ClickHouse schemas up to date (idempotent;
/// safe on every deploy). SQLite stores migrate themselves when they open.
pub async fn migrate(cfg: &crate::config::BackendsConfig) -> anyhow::Result<()> {
    let mut done = false;
    if scheme(&cfg.store) == "scylla" {
        let report = distorch_store::scylla::migrate(&cfg.store)
            .await
            .context("ScyllaDB migration failed")?;
        println!(
            "ScyllaDB keyspace {}: schema version {} (applied now: {})",
            report.keyspace,
            report.version,
            list(&report.applied)
        );
        done = true;
    }
    if scheme(&cfg.analytics) == "clickhouse" {
        let ch = ClickHouseAnalytics::from_url(&cfg.analytics)?;
        let applied = ch.migrate().await.context("ClickHouse migration failed")?;
        let applied: Vec<String> = applied.iter().map(|v| format!("{v:03}")).collect();
        println!(
            "ClickHouse database {}: up to date (applied now: {})",
            ch.database(),
            list(&applied)
        );
        done = true;
    }
    if !done {
        println!(
            "nothing to migrate: backends.store is not scylla:// and backends.analytics is not clickhouse://"
        );
    }
    Ok(())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(s, _)| s)
}
