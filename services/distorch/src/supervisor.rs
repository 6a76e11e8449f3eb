//! Runs a process's services side by side until SIGTERM/Ctrl-C or until one of them stops,
//! then asks every service to stop and waits for them. `standalone` and each per-service
//! subcommand use it alike.

use anyhow::Context;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Supervisor {
    services: JoinSet<anyhow::Result<&'static str>>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

impl Supervisor {
    pub fn new() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        Self {
            services: JoinSet::new(),
            stop_tx,
            stop_rx,
        }
    }

    /// A future that resolves when the process is asked to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Runs a service; its returning (even successfully) before shutdown ends the process.
    pub fn spawn<E>(
        &mut self,
        name: &'static str,
        fut: impl Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.services.spawn(async move {
            fut.await.with_context(|| format!("{name} failed"))?;
            Ok(name)
        });
    }

    /// Serves `app` on `listener` until shutdown.
    pub fn serve(&mut self, listener: tokio::net::TcpListener, app: axum::Router) {
        let stop = self.stopped();
        self.services.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
            Ok("http")
        });
    }

    /// Waits for a termination signal or a service's end, then stops everything.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let result = tokio::select! {
            () = terminate_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
            Some(done) = self.services.join_next() => match done {
                Ok(Ok(name)) => Err(anyhow::anyhow!("the {name} service stopped unexpectedly")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a service panicked: {e}")),
            },
        };
        let _ = self.stop_tx.send(true);
        while let Some(done) = self.services.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "service failed while stopping");
            }
        }
        result
    }
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
