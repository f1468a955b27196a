//! The only wiring: builds each stage from the configuration, connects them, spawns
//! them, tracks readiness, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::health::Readiness;
use crate::http::{self, HttpState};
use crate::telemetry::Metrics;

/// Runs the daemon until SIGTERM or SIGINT, then drains within `server.grace_period`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("registering metrics")?;
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    create_state_dir(&config.state.dir)?;
    let listener = bind(config.server.listen).await?;
    let local = listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    tracing::info!(addr = %local, environment = %config.environment, "listening");

    let state = Arc::new(HttpState {
        metrics,
        readiness: readiness.clone(),
    });
    tracker.spawn(http::serve(
        listener,
        state,
        shutdown.clone(),
        readiness.register("http"),
    ));
    tracker.close();

    let signal = wait_for_signal().await?;
    tracing::info!(signal, grace_period = ?config.server.grace_period.0, "shutting down");
    readiness.start_draining();
    shutdown.cancel();
    if tokio::time::timeout(config.server.grace_period.0, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_period = ?config.server.grace_period.0,
            "grace period over with work still running; exiting anyway"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (server.listen); stop whatever holds it or choose another address"
        )
    })
}

fn create_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {} (state.dir)", dir.display()))
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
