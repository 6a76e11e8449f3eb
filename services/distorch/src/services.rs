//! The services a process can run, built the same way for `standalone` and for the
//! per-service subcommands (`distorch engine`, `saga`, `projector`, `api`).

use crate::config::Config;
use crate::supervisor::Supervisor;
use distorch_api::SharedRegistry;
use distorch_domain::topics::Topics;
use distorch_engine::{Engine, Metrics};
use distorch_eventlog::EventLog;
use distorch_eventlog::fence::FencedLog;
use distorch_projector::Projector;
use distorch_saga::{AlertMetrics, Alerter, HttpExecutor, HttpMetrics, Saga, SagaConfig};
use distorch_store::ReadStore;
use distorch_store::analytics::Analytics;
use std::sync::{Arc, RwLock};

/// What every service of a process shares: the log, topic names and the metrics registry.
#[derive(Clone)]
pub struct Context {
    /// The log every service reads and writes: `fenced`, as a trait object.
    pub log: Arc<dyn EventLog>,
    /// The same log, for the engine, which claims partitions on it.
    pub fenced: FencedLog,
    pub topics: Topics,
    pub registry: SharedRegistry,
}

impl Context {
    /// `log` as the backend opened it; every service reads it through the fencing rule.
    pub fn new(log: Arc<dyn EventLog>, cfg: &Config) -> Self {
        let topics = cfg.api.topics();
        let fenced = distorch_engine::fenced(log, &topics);
        Self {
            log: Arc::new(fenced.clone()),
            fenced,
            topics,
            registry: Arc::new(RwLock::new(prometheus_client::registry::Registry::default())),
        }
    }

    fn registry(&self) -> std::sync::RwLockWriteGuard<'_, prometheus_client::registry::Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine, after it has created the topics everyone else reads.
pub async fn engine(sup: &mut Supervisor, ctx: &Context, cfg: &Config) -> anyhow::Result<()> {
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.partitions = cfg.api.partitions.commands;
    let metrics = Metrics::new(&mut ctx.registry());
    let engine = Engine::new(ctx.fenced.clone(), ctx.topics.clone(), engine_cfg, metrics);
    engine.ensure_topics().await?;
    sup.spawn("engine", engine.run(sup.stopped()));
    Ok(())
}

/// The saga processor with its two siblings on the events topic: SLA alerts and the
/// executor of `http` steps.
pub fn saga(sup: &mut Supervisor, ctx: &Context, cfg: &Config) -> anyhow::Result<()> {
    let saga = Saga::new(ctx.log.clone(), ctx.topics.clone(), SagaConfig::default());
    let alerter = {
        let metrics = AlertMetrics::new(&mut ctx.registry());
        Alerter::new(
            ctx.log.clone(),
            ctx.topics.clone(),
            cfg.alerts.clone(),
            metrics,
        )?
    };
    let http = {
        let metrics = HttpMetrics::new(&mut ctx.registry());
        HttpExecutor::new(
            ctx.log.clone(),
            ctx.topics.clone(),
            cfg.http.clone(),
            metrics,
        )?
    };
    sup.spawn("saga", saga.run(sup.stopped()));
    sup.spawn("alerter", alerter.run(sup.stopped()));
    sup.spawn("http-executor", http.run(sup.stopped()));
    Ok(())
}

pub fn projector(
    sup: &mut Supervisor,
    ctx: &Context,
    store: Arc<dyn ReadStore>,
    analytics: Option<Arc<dyn Analytics>>,
    cfg: &Config,
) -> anyhow::Result<()> {
    let mut projector = Projector::new(
        ctx.log.clone(),
        store,
        ctx.topics.clone(),
        cfg.projector.clone(),
    );
    if let Some(analytics) = analytics {
        projector = projector.with_analytics(analytics);
    }
    projector.stats().register(&mut ctx.registry());
    sup.spawn("projector", projector.run(sup.stopped()));
    Ok(())
}

/// The HTTP API (REST, GraphQL, streams, analytics, metrics, health) as a router.
pub async fn api(
    ctx: &Context,
    store: Arc<dyn ReadStore>,
    analytics: Option<Arc<dyn Analytics>>,
    cfg: &Config,
) -> anyhow::Result<axum::Router> {
    Ok(distorch_api::router_with_analytics(
        ctx.log.clone(),
        store,
        analytics,
        cfg.api.clone(),
        ctx.registry.clone(),
    )
    .await?)
}

/// `/healthz`, `/readyz` and `/metrics` for a process that serves no API. The process binds
/// its port only once its services have started, so being reachable means ready.
pub fn ops_router(ctx: &Context) -> axum::Router {
    use axum::routing::get;
    let registry = ctx.registry.clone();
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(|| async { axum::Json(serde_json::json!({"status": "ready"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let reg = registry.read().unwrap_or_else(|p| p.into_inner());
                    match prometheus_client::encoding::text::encode(&mut body, &reg) {
                        Ok(()) => (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                            .into_response(),
                    }
                }
            }),
        )
}

use axum::response::IntoResponse;
