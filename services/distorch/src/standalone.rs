//! `distorch standalone`: the engine, saga processor, projector and API in one process,
//! meeting only through the embedded event log, exactly as they would over Kafka.

use crate::config::{Config, EmbeddedLog};
use crate::services::{self, Context};
use crate::supervisor::Supervisor;
use anyhow::Context as _;
use distorch_eventlog::journal::JournalLog;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_eventlog::{EventLog, LogError};
use distorch_store::ReadStore;
use distorch_store::analytics::Analytics;
use distorch_store::analytics::sqlite::SqliteAnalytics;
use distorch_store::sqlite::SqliteStore;
use std::path::Path;
use std::sync::Arc;

pub async fn run(mut cfg: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.standalone.partitions >= 1,
        "[standalone] partitions must be at least 1 (it is {})",
        cfg.standalone.partitions
    );
    let dir = &cfg.standalone.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let log = open_log(dir, cfg.standalone.log)?;
    let p = partitions(log.as_ref(), &cfg).await?;
    let parts = &mut cfg.api.partitions;
    (parts.commands, parts.events, parts.tasks, parts.replies) = (p, p, p, p);
    let dir = &cfg.standalone.data_dir;
    let store: Arc<dyn ReadStore> = Arc::new(
        SqliteStore::open_exclusive(dir.join("read.db"))
            .with_context(|| format!("cannot open the read store in {}", dir.display()))?,
    );
    let analytics: Arc<dyn Analytics> = Arc::new(
        SqliteAnalytics::open_exclusive(dir.join("analytics.db"))
            .with_context(|| format!("cannot open the analytics store in {}", dir.display()))?,
    );
    let ctx = Context::new(log, &cfg);
    let mut sup = Supervisor::new();
    // The engine creates the topics before anyone reads them.
    services::engine(&mut sup, &ctx, &cfg).await?;
    services::saga(&mut sup, &ctx, &cfg)?;
    services::projector(&mut sup, &ctx, store.clone(), Some(analytics.clone()), &cfg)?;
    let app = services::api(&ctx, store, Some(analytics), &cfg).await?;

    let listener = tokio::net::TcpListener::bind(&cfg.standalone.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.standalone.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("distorch standalone listening on http://{addr}");
    tracing::info!(%addr, data_dir = %dir.display(), "distorch standalone started");
    sup.serve(listener, app);
    let result = sup.run().await;
    drop(ctx);
    result
}

/// The data dir's event log: the storage it was created with, or `configured` for a new one.
fn open_log(dir: &Path, configured: EmbeddedLog) -> anyhow::Result<Arc<dyn EventLog>> {
    let present: Vec<EmbeddedLog> = [EmbeddedLog::Journal, EmbeddedLog::Sqlite]
        .into_iter()
        .filter(|kind| dir.join(kind.file_name()).exists())
        .collect();
    let kind = match present.as_slice() {
        [] => configured,
        [one] => *one,
        _ => anyhow::bail!(
            "the data dir {} holds both log.journal and log.db; keep the one it runs on",
            dir.display()
        ),
    };
    if kind != configured {
        tracing::info!(
            log = kind.file_name(),
            "the data dir keeps the log storage it was created with"
        );
    }
    let path = dir.join(kind.file_name());
    let context = || format!("cannot open the event log {}", path.display());
    Ok(match kind {
        EmbeddedLog::Journal => Arc::new(JournalLog::open(&path).with_context(context)?),
        EmbeddedLog::Sqlite => Arc::new(SqliteLog::open(&path).with_context(context)?),
    })
}

/// Partitions of the per-run topics: those of the data dir's commands topic when it has one
/// (a data dir keeps the counts it was created with, whatever the configuration says now),
/// else `[standalone] partitions`.
async fn partitions(log: &dyn EventLog, cfg: &Config) -> anyhow::Result<u32> {
    let commands = cfg.api.topics().commands();
    match log.partitions(&commands).await {
        Ok(n) => {
            if n != cfg.standalone.partitions {
                tracing::info!(
                    partitions = n,
                    configured = cfg.standalone.partitions,
                    "the data dir keeps the partition count it was created with"
                );
            }
            Ok(n)
        }
        Err(LogError::UnknownTopic(_)) => Ok(cfg.standalone.partitions),
        Err(e) => Err(e).context("cannot read the event log's topics"),
    }
}
