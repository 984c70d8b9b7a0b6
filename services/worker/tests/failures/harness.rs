//! The real worker loop and scheduler core over the embedded seams, with the fakes plugged in.

use pixelfarm_core::*;
use pixelfarm_runtime::Settings;
use pixelfarm_scheduler::app::Core;
use pixelfarm_worker::{Worker, WorkerConfig, WorkerMetrics};
use prometheus::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::fakes::{FlakyBlob, KnowsSomeModels};

pub(crate) struct Harness {
    pub(crate) core: Core,
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) tenant: TenantId,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: JoinSet<anyhow::Result<()>>,
    pub(crate) blob: Arc<dyn BlobStore>,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn harness(failing_puts: u32, max_attempts: u32) -> Harness {
    let renderer = Arc::new(KnowsSomeModels(Default::default()));
    harness_with(failing_puts, max_attempts, renderer, 1).await
}

pub(crate) async fn harness_with(
    failing_puts: u32,
    max_attempts: u32,
    renderer: Arc<dyn Renderer>,
    concurrency: usize,
) -> Harness {
    harness_timed(
        failing_puts,
        max_attempts,
        renderer,
        concurrency,
        Duration::from_secs(60),
        Duration::from_millis(2),
    )
    .await
}

/// A harness whose worker stops renders after `render_timeout` and whose write groups wait at most
/// `group_wait` for company.
pub(crate) async fn harness_timed(
    failing_puts: u32,
    max_attempts: u32,
    renderer: Arc<dyn Renderer>,
    concurrency: usize,
    render_timeout: Duration,
    group_wait: Duration,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(
        pixelfarm_store::SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap(),
    );
    let broker: Arc<dyn Broker> = Arc::new(pixelfarm_broker::InProcBroker::new());
    let blob: Arc<dyn BlobStore> = Arc::new(FlakyBlob {
        inner: pixelfarm_blob::LocalBlob::open(dir.path().join("blobs"))
            .await
            .unwrap(),
        fail: AtomicU32::new(failing_puts),
        read: Default::default(),
    });
    let mut settings = Settings::default();
    settings.scheduler.max_attempts = max_attempts;
    settings.scheduler.dispatch_interval_ms = 5;
    settings.scheduler.maintenance_interval_ms = 20;
    let registry = Registry::new();
    let core = Core::new(&settings, store.clone(), blob.clone(), None, &registry);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    core.spawn_loops(&settings, broker.clone(), &mut tasks, &stop);
    let models = vec![
        ModelName::parse("test").unwrap(),
        ModelName::parse("missing").unwrap(),
    ];
    let cfg = WorkerConfig {
        id: "w".into(),
        models: models.clone(),
        prefetch: 2 * concurrency as u16,
        concurrency,
        lease: Duration::from_secs(30),
        // Short, so that a cancelled running job is noticed quickly.
        heartbeat: Duration::from_millis(50),
        drain_grace: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        // Generous, so that the jobs claimed together surely meet in the first batch.
        batch_linger: Duration::from_millis(200),
        render_timeout,
        write_group: pixelfarm_worker::group::GroupConfig {
            max: 8,
            wait: group_wait,
        },
        signer: Arc::new(pixelfarm_image::ContentSigner::development()),
        provenance_records: Default::default(),
    };
    let worker = Arc::new(Worker::new(
        cfg,
        store.clone(),
        broker,
        blob.clone(),
        renderer,
        Arc::new(WorkerMetrics::register(&registry)),
    ));
    let s = stop.clone();
    tasks.spawn(async move { Ok(worker.run(s).await.chained()?) });
    let tenant = store.create_tenant("t", 1).await.unwrap();
    // What `app::start` does before consuming: the dispatcher publishes only for live workers.
    store
        .announce_worker("w", &models, Duration::from_secs(3600))
        .await
        .unwrap();
    Harness {
        core,
        store,
        tenant,
        stop,
        tasks,
        blob,
        _dir: dir,
    }
}

impl Harness {
    pub(crate) async fn run(mut self, model: &str) -> Vec<JobRecord> {
        self.run_seeds(model, 1).await
    }

    /// Submit one job per seed 1..=`seeds`, wait for the batch, stop the worker; the job records.
    pub(crate) async fn run_seeds(&mut self, model: &str, seeds: u32) -> Vec<JobRecord> {
        let list: Vec<String> = (1..=seeds).map(|s| s.to_string()).collect();
        self.run_manifest(format!(
            "name: b\nmodel: {model}\ndefaults: {{width: 16, height: 16}}\nprompt: p\nseeds: [{}]\n",
            list.join(", ")
        ))
        .await
    }

    /// Submit `m`, wait for the batch, stop the worker; the job records.
    pub(crate) async fn run_manifest(&mut self, m: String) -> Vec<JobRecord> {
        let out = self.core.api.submit(self.tenant, m).await.unwrap();
        self.finish(out.batch_id).await
    }

    /// Wait for `batch`, stop the worker; the job records.
    pub(crate) async fn finish(&mut self, batch: BatchId) -> Vec<JobRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.core.api.batch(self.tenant, batch).await.unwrap();
            if v.done {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not done: {:?}",
                v.status.counts
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let jobs = self
            .core
            .api
            .jobs(self.tenant, batch, None, 1000)
            .await
            .unwrap();
        self.stop.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r.unwrap().unwrap();
        }
        jobs
    }
}
