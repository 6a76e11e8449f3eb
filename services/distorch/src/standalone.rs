//! `distorch standalone`: the engine, saga processor, projector and API in one process,
//! meeting only through the embedded SQLite log, exactly as they would over Kafka.

use crate::config::Config;
use anyhow::Context;
use distorch_api::SharedRegistry;
use distorch_engine::{Engine, Metrics};
use distorch_eventlog::EventLog;
use distorch_eventlog::sqlite::SqliteLog;
use distorch_projector::Projector;
use distorch_saga::{AlertMetrics, Alerter, Saga, SagaConfig};
use distorch_saga::{HttpExecutor, HttpMetrics};
use distorch_store::ReadStore;
use distorch_store::sqlite::SqliteStore;
use std::future::Future;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let dir = &cfg.standalone.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let log: Arc<dyn EventLog> = Arc::new(
        SqliteLog::open(dir.join("log.db"))
            .with_context(|| format!("cannot open the event log in {}", dir.display()))?,
    );
    let store: Arc<dyn ReadStore> = Arc::new(
        SqliteStore::open(dir.join("read.db"))
            .with_context(|| format!("cannot open the read store in {}", dir.display()))?,
    );
    let topics = cfg.api.topics();
    let registry: SharedRegistry =
        Arc::new(RwLock::new(prometheus_client::registry::Registry::default()));
    let mut engine_cfg = cfg.engine.clone();
    engine_cfg.partitions = cfg.api.partitions.commands;
    let engine = {
        let mut reg = registry.write().unwrap_or_else(|p| p.into_inner());
        Engine::new(
            log.clone(),
            topics.clone(),
            engine_cfg,
            Metrics::new(&mut reg),
        )
    };
    // The engine creates the topics before anyone reads them.
    engine.ensure_topics().await?;
    let projector = Projector::new(
        log.clone(),
        store.clone(),
        topics.clone(),
        cfg.projector.clone(),
    );
    projector
        .stats()
        .register(&mut registry.write().unwrap_or_else(|p| p.into_inner()));
    let saga = Saga::new(log.clone(), topics.clone(), SagaConfig::default());
    let alerter = {
        let mut reg = registry.write().unwrap_or_else(|p| p.into_inner());
        let metrics = AlertMetrics::new(&mut reg);
        Alerter::new(log.clone(), topics.clone(), cfg.alerts.clone(), metrics)?
    };
    let http_executor = {
        let mut reg = registry.write().unwrap_or_else(|p| p.into_inner());
        let metrics = HttpMetrics::new(&mut reg);
        HttpExecutor::new(log.clone(), topics.clone(), cfg.http.clone(), metrics)?
    };
    let app = distorch_api::router(log.clone(), store, cfg.api.clone(), registry).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut services: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    spawn(
        &mut services,
        "engine",
        engine.run(stopped(stop_rx.clone())),
    );
    spawn(&mut services, "saga", saga.run(stopped(stop_rx.clone())));
    spawn(
        &mut services,
        "alerter",
        alerter.run(stopped(stop_rx.clone())),
    );
    spawn(
        &mut services,
        "http-executor",
        http_executor.run(stopped(stop_rx.clone())),
    );
    spawn(
        &mut services,
        "projector",
        projector.run(stopped(stop_rx.clone())),
    );

    let listener = tokio::net::TcpListener::bind(&cfg.standalone.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.standalone.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("distorch standalone listening on http://{addr}");
    tracing::info!(%addr, data_dir = %dir.display(), "distorch standalone started");
    let http_stop = stopped(stop_rx.clone());
    services.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(http_stop)
            .await?;
        Ok("api")
    });

    let result = tokio::select! {
        () = terminate_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(done) = services.join_next() => match done {
            Ok(Ok(name)) => Err(anyhow::anyhow!("the {name} service stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a service panicked: {e}")),
        },
    };
    let _ = stop_tx.send(true);
    while let Some(done) = services.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "service failed while stopping");
        }
    }
    drop(log);
    result
}

fn spawn<E>(
    set: &mut JoinSet<anyhow::Result<&'static str>>,
    name: &'static str,
    fut: impl Future<Output = Result<(), E>> + Send + 'static,
) where
    E: std::error::Error + Send + Sync + 'static,
{
    set.spawn(async move {
        fut.await.with_context(|| format!("{name} failed"))?;
        Ok(name)
    });
}

async fn terminate_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
