//! `pixelfarm run`: the whole pipeline in one process — the scheduler's API, dispatcher and
//! maintenance over SQLite, an in-process broker, a worker, and the output folder as the blob
//! store. Same code paths as the distributed stack; only the seams differ.

use anyhow::Context;
use pixelfarm_api::BatchView;
use pixelfarm_blob::LocalBlob;
use pixelfarm_broker::InProcBroker;
use pixelfarm_core::{BlobStore, Broker, JobStore, parse_manifest};
use pixelfarm_runtime::Settings;
use pixelfarm_scheduler::app::Core;
use pixelfarm_store::SqliteStore;
use pixelfarm_worker::{Worker, WorkerMetrics};
use prometheus::Registry;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::export::{self, Local};

/// State kept in the output folder: the job database (so a re-run with the same idempotency key
/// resumes the same batch).
pub const STATE_DIR: &str = ".pixelfarm";

/// What a run produced.
pub struct RunReport {
    /// The final view of the batch.
    pub batch: BatchView,
    /// What the export wrote.
    pub export: export::Summary,
}

/// Render `manifest` into `out` with `workers` concurrent jobs.
///
/// # Errors
/// A bad manifest (before anything is written), or I/O and rendering failures.
pub async fn run(
    manifest: String,
    out: &Path,
    workers: usize,
    progress: bool,
) -> anyhow::Result<RunReport> {
    // Refuse a bad manifest before creating anything.
    let model = parse_manifest(&manifest)
        .map_err(|e| anyhow::anyhow!(e.chain()))?
        .model;

    let mut settings = Settings::default();
    settings.scheduler.dispatch_interval_ms = 10;
    settings.scheduler.maintenance_interval_ms = 500;
    settings.broker.window_per_model = (workers as u32 * 4).max(8);
    settings.worker.models = vec![model.to_string()];
    settings.worker.id = "embedded".into();
    settings.worker.concurrency = workers.max(1);
    settings.worker.prefetch = (workers.max(1) * 2).min(u16::MAX as usize) as u16;

    std::fs::create_dir_all(out.join(STATE_DIR))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let store: Arc<dyn JobStore> = Arc::new(
        SqliteStore::open(&out.join(STATE_DIR).join("jobs.sqlite"))
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?,
    );
    let broker: Arc<dyn Broker> = Arc::new(InProcBroker::new());
    let blob: Arc<dyn BlobStore> = Arc::new(
        LocalBlob::open(out)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?,
    );
    let tenant = pixelfarm_scheduler::tenants::ensure(store.as_ref(), "local", 1, &[])
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;

    let registry = Registry::new();
    let core = Core::new(&settings, store.clone(), blob.clone(), &registry);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    core.spawn_loops(&settings, broker.clone(), &mut tasks, &stop);
    let worker = Arc::new(Worker::new(
        pixelfarm_worker::app::config(&settings)?,
        store,
        broker,
        blob,
        pixelfarm_worker::app::renderer(&settings).await?,
        Arc::new(WorkerMetrics::register(&registry)),
    ));
    let worker_stop = stop.clone();
    tasks.spawn(async move {
        worker
            .run(worker_stop)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))
    });

    let result = async {
        let submitted = core
            .api
            .submit(tenant, manifest)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
        let views = core.api.clone().watch(tenant, submitted.batch_id);
        let batch = if progress {
            crate::progress::follow(views).await
        } else {
            crate::progress::follow_quietly(views).await
        }
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
        let source = Local {
            api: core.api.clone(),
            tenant,
        };
        let export = export::export(&source, submitted.batch_id, out)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
        Ok(RunReport { batch, export })
    }
    .await;
    stop.cancel();
    while let Some(r) = tasks.join_next().await {
        r.context("embedded task panicked")??;
    }
    result
}
