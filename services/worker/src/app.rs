//! Wiring: settings → seams + renderer → a running worker with its ops server.

use anyhow::Context;
use pixelfarm_core::{Backoff, Renderer};
use pixelfarm_runtime::{Settings, ops};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Worker, WorkerConfig, WorkerMetrics};

/// The renderer named by `worker.renderer`.
///
/// # Errors
/// For an unknown renderer name.
pub fn renderer(settings: &Settings) -> anyhow::Result<Arc<dyn Renderer>> {
    match settings.worker.renderer.as_str() {
        "test-pattern" => Ok(Arc::new(pixelfarm_render::TestPattern::with_delay(
            Duration::from_millis(settings.worker.test_pattern_delay_ms),
        ))),
        other => anyhow::bail!("worker.renderer is `{other}`; accepted: test-pattern"),
    }
}

/// The worker tunables from settings.
///
/// # Errors
/// `Invalid` settings.
pub fn config(settings: &Settings) -> anyhow::Result<WorkerConfig> {
    let w = &settings.worker;
    anyhow::ensure!(
        w.heartbeat_seconds < w.lease_seconds,
        "worker.heartbeat_seconds must be below worker.lease_seconds"
    );
    Ok(WorkerConfig {
        id: w.worker_id(),
        models: w.model_names().map_err(|e| anyhow::anyhow!(e.chain()))?,
        prefetch: w.prefetch.max(1),
        concurrency: w.concurrency.max(1),
        lease: Duration::from_secs(w.lease_seconds),
        heartbeat: Duration::from_secs(w.heartbeat_seconds.max(1)),
        drain_grace: Duration::from_secs(w.drain_grace_seconds),
        backoff: Backoff::default(),
    })
}

/// A started worker.
pub struct Running {
    /// Where `/metrics` and health listen.
    pub http_addr: SocketAddr,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Wait for the worker to drain and the ops server to stop.
    ///
    /// # Errors
    /// The first task error.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            let r = r.context("worker task panicked").and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Connect, and run the worker and its ops server until `stop` (then drain).
///
/// # Errors
/// When settings are invalid or a dependency is unreachable at start.
pub async fn start(settings: Settings, stop: CancellationToken) -> anyhow::Result<Running> {
    let cfg = config(&settings)?;
    let renderer = renderer(&settings)?;
    let store = settings
        .database
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let broker = settings
        .broker
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let blob = settings
        .blob
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let registry = Registry::new();
    let metrics = Arc::new(WorkerMetrics::register(&registry));
    tracing::info!(id = %cfg.id, "worker starting");
    let worker = Arc::new(Worker::new(cfg, store, broker, blob, renderer, metrics));

    let mut tasks = JoinSet::new();
    // The ops server outlives the drain, so probes and scrapes see it finish.
    let ops_stop = CancellationToken::new();
    let w = worker.clone();
    let ready: ops::ReadyCheck = Arc::new(move || {
        let w = w.clone();
        Box::pin(async move { w.is_consuming() })
    });
    let (listener, http_addr) = ops::bind(&settings.worker.http_addr).await?;
    let app = ops::router(registry, ready);
    let server_stop = ops_stop.clone();
    tasks.spawn(async move {
        ops::serve(listener, app, server_stop)
            .await
            .context("ops server failed")
    });
    tasks.spawn(async move {
        let r = worker
            .run(stop)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()));
        ops_stop.cancel();
        r
    });
    tracing::info!(%http_addr, "worker ops listening");
    Ok(Running { http_addr, tasks })
}
