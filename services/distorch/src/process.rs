//! `distorch api|engine|saga|projector`: one service per process on a shared broker, the
//! deployment for when one machine is not enough. Each process serves HTTP: the API, or
//! `/healthz`, `/readyz` and `/metrics` for the others (probes and scraping).

use crate::backends;
use crate::config::Config;
use crate::services::{self, Context};
use crate::supervisor::Supervisor;
use anyhow::Context as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Engine,
    Saga,
    Projector,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Engine => "engine",
            Role::Saga => "saga",
            Role::Projector => "projector",
        }
    }
}

pub async fn run(role: Role, cfg: Config) -> anyhow::Result<()> {
    let log = backends::log(&cfg.backends.log, &cfg.kafka, &cfg.api.topic_prefix).await?;
    let ctx = Context::new(log, &cfg);
    // Whoever starts first creates the topics, so no consumer subscribes to a missing one.
    distorch_engine::ensure_topics(ctx.log.as_ref(), &ctx.topics, cfg.api.partitions.commands)
        .await
        .context("cannot create the topics")?;
    let mut sup = Supervisor::new();
    // The API binds first: the other replicas reach it at the address it got (port 0 picks
    // one). The others bind once their services run, so reachable means ready.
    let mut listener = None;
    let app = match role {
        Role::Api => {
            let bound = bind(&cfg.server.listen).await?;
            let mut cfg = cfg.clone();
            if cfg.api.advertise_url.is_none() {
                cfg.api.advertise_url = Some(advertise_url(bound.local_addr()?));
            }
            listener = Some(bound);
            let store = backends::store(&cfg.backends.store).await?;
            let analytics = backends::analytics(&cfg.backends.analytics).await?;
            services::api(&ctx, store, analytics, &cfg).await?
        }
        Role::Engine => {
            services::engine(&mut sup, &ctx, &cfg).await?;
            services::ops_router(&ctx)
        }
        Role::Saga => {
            services::saga(&mut sup, &ctx, &cfg)?;
            services::ops_router(&ctx)
        }
        Role::Projector => {
            let store = backends::store(&cfg.backends.store).await?;
            let analytics = backends::analytics(&cfg.backends.analytics).await?;
            services::projector(&mut sup, &ctx, store, analytics, &cfg)?;
            services::ops_router(&ctx)
        }
    };
    let listener = match listener {
        Some(listener) => listener,
        None => bind(&cfg.server.listen).await?,
    };
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("distorch {} listening on http://{addr}", role.name());
    tracing::info!(%addr, role = role.name(), "distorch service started");
    sup.serve(listener, app);
    sup.run().await
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Where the other API replicas reach this one when `[api] advertise_url` is not set: the
/// address it listens on, or, listening on every interface, the host's name (set
/// `advertise_url` where that name does not resolve, as in a Kubernetes Deployment).
fn advertise_url(addr: std::net::SocketAddr) -> String {
    if !addr.ip().is_unspecified() {
        return format!("http://{addr}");
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("http://{host}:{}", addr.port())
}

/// `distorch projector --rebuild`: resets `backends.store` (and `backends.analytics`) and
/// replays the whole log into them, then exits. Every projector must be stopped meanwhile;
/// see [`distorch_projector::Projector::rebuild`].
pub async fn rebuild(cfg: Config) -> anyhow::Result<()> {
    let log = backends::replay_log(&cfg.backends.log, &cfg.kafka, &cfg.api.topic_prefix).await?;
    let log = std::sync::Arc::new(distorch_engine::fenced(log, &cfg.api.topics()));
    let store = backends::store(&cfg.backends.store).await?;
    let analytics = backends::analytics(&cfg.backends.analytics).await?;
    let mut projector =
        distorch_projector::Projector::new(log, store, cfg.api.topics(), cfg.projector.clone());
    if let Some(analytics) = analytics {
        projector = projector.with_analytics(analytics);
    }
    let report = projector
        .rebuild()
        .await
        .context("the rebuild failed; the read models are incomplete, run it again")?;
    println!(
        "rebuilt {}{} from {} partitions: {} records, {} events, {} definitions, {} undecodable \
         (skipped)",
        cfg.backends.store,
        if report.analytics {
            format!(" and {}", cfg.backends.analytics)
        } else {
            String::new()
        },
        report.partitions,
        report.records,
        report.events,
        report.definitions,
        report.undecodable,
    );
    Ok(())
}
