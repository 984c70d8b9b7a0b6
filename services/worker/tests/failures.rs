//! Failure handling of the real worker loop over the real embedded seams (SQLite, in-process
//! broker, local folder), with faults injected by wrapping the blob store and the renderer.

use async_trait::async_trait;
use bytes::Bytes;
use pixelfarm_core::*;
use pixelfarm_runtime::Settings;
use pixelfarm_scheduler::app::Core;
use pixelfarm_worker::{Worker, WorkerConfig, WorkerMetrics};
use prometheus::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A real local blob store whose first `fail` puts fail with a transient error (S3 down).
struct FlakyBlob {
    inner: pixelfarm_blob::LocalBlob,
    fail: AtomicU32,
}

#[async_trait]
impl BlobStore for FlakyBlob {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) > 0 {
            self.fail.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::transient(
                "s3 unavailable",
                std::io::Error::other("connection refused"),
            ));
        }
        self.inner.put(key, bytes, content_type).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

/// The test-pattern renderer, except for model `missing`, which it does not know.
struct KnowsSomeModels(pixelfarm_render::TestPattern);

impl Renderer for KnowsSomeModels {
    fn identity(&self, model: &ModelName) -> Result<ModelIdentity> {
        if model.as_str() == "missing" {
            return Err(Error::permanent("unknown model `missing`"));
        }
        self.0.identity(model)
    }
    fn render(&self, model: &ModelName, params: &JobParams) -> Result<RenderedImage> {
        self.0.render(model, params)
    }
}

struct Harness {
    core: Core,
    tenant: TenantId,
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn harness(failing_puts: u32, max_attempts: u32) -> Harness {
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
    });
    let mut settings = Settings::default();
    settings.scheduler.max_attempts = max_attempts;
    settings.scheduler.dispatch_interval_ms = 5;
    settings.scheduler.maintenance_interval_ms = 20;
    let registry = Registry::new();
    let core = Core::new(&settings, store.clone(), blob.clone(), &registry);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    core.spawn_loops(&settings, broker.clone(), &mut tasks, &stop);
    let cfg = WorkerConfig {
        id: "w".into(),
        models: vec![
            ModelName::parse("test").unwrap(),
            ModelName::parse("missing").unwrap(),
        ],
        prefetch: 2,
        concurrency: 1,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_secs(5),
        drain_grace: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
    };
    let worker = Arc::new(Worker::new(
        cfg,
        store.clone(),
        broker,
        blob,
        Arc::new(KnowsSomeModels(Default::default())),
        Arc::new(WorkerMetrics::register(&registry)),
    ));
    let s = stop.clone();
    tasks.spawn(async move { worker.run(s).await.map_err(|e| anyhow::anyhow!(e.chain())) });
    let tenant = store.create_tenant("t", 1).await.unwrap();
    Harness {
        core,
        tenant,
        stop,
        tasks,
        _dir: dir,
    }
}

impl Harness {
    async fn run(mut self, model: &str) -> Vec<JobRecord> {
        let m = format!(
            "name: b\nmodel: {model}\ndefaults: {{width: 16, height: 16}}\nprompt: p\nseeds: [1]\n"
        );
        let out = self.core.api.submit(self.tenant, m).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .core
                .api
                .batch(self.tenant, out.batch_id)
                .await
                .unwrap();
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
            .jobs(self.tenant, out.batch_id, None, 10)
            .await
            .unwrap();
        self.stop.cancel();
        while let Some(r) = self.tasks.join_next().await {
            r.unwrap().unwrap();
        }
        jobs
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_after_backoff_and_succeeds() {
    let jobs = harness(1, 3).await.run("test").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Succeeded, 2), "{j:?}");
    assert_eq!(
        j.error_kind.as_deref(),
        Some("transient"),
        "the first failure stays on record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_dies_at_once_with_the_reason() {
    let jobs = harness(0, 3).await.run("missing").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(j.error_kind.as_deref(), Some("permanent"));
    assert!(
        j.last_error.as_deref().unwrap().contains("unknown model"),
        "{j:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_die_when_attempts_run_out() {
    let jobs = harness(100, 2).await.run("test").await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 2), "{j:?}");
    assert!(
        j.last_error
            .as_deref()
            .unwrap()
            .contains("attempts exhausted (2 of 2)"),
        "{j:?}"
    );
}
