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

/// A real local blob store whose first `fail` puts fail with a transient error (S3 down), and whose
/// objects named [`CHANGING`] read back other bytes after their first read (replaced after submit).
struct FlakyBlob {
    inner: pixelfarm_blob::LocalBlob,
    fail: AtomicU32,
    read: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The file name of inputs that change after their first read.
const CHANGING: &str = "changing.png";

impl FlakyBlob {
    /// `bytes` of `key`, changed if `key` is [`CHANGING`] and was read before.
    fn maybe_changed(&self, key: &str, bytes: Bytes) -> Bytes {
        let seen_before = !self.read.lock().unwrap().insert(key.to_string());
        if key.ends_with(&format!("/{CHANGING}")) && seen_before {
            let mut changed = bytes.to_vec();
            changed.push(0);
            return changed.into();
        }
        bytes
    }
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
        let bytes = self.inner.get(key).await?;
        Ok(self.maybe_changed(key, bytes))
    }
    async fn get_limited(&self, key: &str, max_bytes: u64) -> Result<Bytes> {
        let bytes = self.inner.get_limited(key, max_bytes).await?;
        Ok(self.maybe_changed(key, bytes))
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
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
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

/// A renderer that batches up to `max` jobs, records the size of every call, fails every call of
/// more than `oom_above` jobs as out of device memory, and paints each image with its job's seed.
struct BatchingRenderer {
    max: usize,
    oom_above: usize,
    calls: std::sync::Mutex<Vec<usize>>,
}

impl BatchingRenderer {
    fn new(max: usize, oom_above: usize) -> Arc<Self> {
        Arc::new(BatchingRenderer {
            max,
            oom_above,
            calls: Default::default(),
        })
    }
    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

/// The colour a job's image is painted with.
fn seed_colour(seed: Seed) -> u8 {
    (seed.get() % 251) as u8
}

impl Renderer for BatchingRenderer {
    fn identity(&self, model: &ModelName) -> Result<ModelIdentity> {
        pixelfarm_render::TestPattern::default().identity(model)
    }
    fn render(&self, _: &ModelName, params: &JobParams) -> Result<RenderedImage> {
        let n = (params.width * params.height * 3) as usize;
        Ok(RenderedImage {
            image: RgbImage {
                width: params.width,
                height: params.height,
                rgb: vec![seed_colour(params.seed); n],
            },
            phases: Default::default(),
        })
    }
    fn max_batch(&self) -> usize {
        self.max
    }
    fn render_batch(
        &self,
        model: &ModelName,
        jobs: &[JobParams],
        _: &[RenderControl],
    ) -> Vec<Result<RenderedImage>> {
        self.calls.lock().unwrap().push(jobs.len());
        if jobs.len() > self.oom_above {
            return jobs
                .iter()
                .map(|_| Err(Error::new(ErrorKind::Transient, "CUDA_ERROR_OUT_OF_MEMORY")))
                .collect();
        }
        jobs.iter().map(|p| self.render(model, p)).collect()
    }
}

/// A renderer that takes each job's steps at 20 ms a step, reporting them and stopping between
/// steps once cancelled; it counts the steps it took. Its models have `limits` when set.
#[derive(Default)]
struct SteppingRenderer {
    steps_taken: AtomicU32,
    stopped: std::sync::atomic::AtomicBool,
    limits: Option<ModelLimits>,
}

impl SteppingRenderer {
    /// Wait until the render stopped (by `deadline`) and check it did before its `total` steps.
    async fn stopped_early(&self, total: u32, deadline: tokio::time::Instant) {
        while !self.stopped.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the render did not stop"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let taken = self.steps_taken.load(Ordering::SeqCst);
        assert!(taken < total, "stopped after {taken} of {total} steps");
    }
}

impl Renderer for SteppingRenderer {
    fn identity(&self, model: &ModelName) -> Result<ModelIdentity> {
        pixelfarm_render::TestPattern::default().identity(model)
    }
    fn limits(&self, _: &ModelName) -> Option<ModelLimits> {
        self.limits
    }
    fn render(&self, model: &ModelName, params: &JobParams) -> Result<RenderedImage> {
        pixelfarm_render::TestPattern::default().render(model, params)
    }
    fn render_batch(
        &self,
        model: &ModelName,
        jobs: &[JobParams],
        controls: &[RenderControl],
    ) -> Vec<Result<RenderedImage>> {
        let one = |p: &JobParams, c: &RenderControl| {
            let total = p.steps.get();
            for step in 1..=total {
                if c.is_cancelled() {
                    self.stopped.store(true, Ordering::SeqCst);
                    return Err(Error::cancelled());
                }
                std::thread::sleep(Duration::from_millis(20));
                self.steps_taken.fetch_add(1, Ordering::SeqCst);
                c.report(step, total);
            }
            self.render(model, p)
        };
        jobs.iter().zip(controls).map(|(p, c)| one(p, c)).collect()
    }
}

struct Harness {
    core: Core,
    store: Arc<dyn JobStore>,
    tenant: TenantId,
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    blob: Arc<dyn BlobStore>,
    _dir: tempfile::TempDir,
}

async fn harness(failing_puts: u32, max_attempts: u32) -> Harness {
    let renderer = Arc::new(KnowsSomeModels(Default::default()));
    harness_with(failing_puts, max_attempts, renderer, 1).await
}

async fn harness_with(
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
    )
    .await
}

async fn harness_timed(
    failing_puts: u32,
    max_attempts: u32,
    renderer: Arc<dyn Renderer>,
    concurrency: usize,
    render_timeout: Duration,
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
    let core = Core::new(&settings, store.clone(), blob.clone(), &registry);
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
    async fn run(mut self, model: &str) -> Vec<JobRecord> {
        self.run_seeds(model, 1).await
    }

    /// Submit one job per seed 1..=`seeds`, wait for the batch, stop the worker; the job records.
    async fn run_seeds(&mut self, model: &str, seeds: u32) -> Vec<JobRecord> {
        let list: Vec<String> = (1..=seeds).map(|s| s.to_string()).collect();
        self.run_manifest(format!(
            "name: b\nmodel: {model}\ndefaults: {{width: 16, height: 16}}\nprompt: p\nseeds: [{}]\n",
            list.join(", ")
        ))
        .await
    }

    /// Submit `m`, wait for the batch, stop the worker; the job records.
    async fn run_manifest(&mut self, m: String) -> Vec<JobRecord> {
        let out = self.core.api.submit(self.tenant, m).await.unwrap();
        self.finish(out.batch_id).await
    }

    /// Wait for `batch`, stop the worker; the job records.
    async fn finish(&mut self, batch: BatchId) -> Vec<JobRecord> {
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

/// The first pixel of a stored PNG.
fn first_pixel(png_bytes: &[u8]) -> [u8; 3] {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).unwrap();
    [buf[0], buf[1], buf[2]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_render_in_micro_batches_and_each_gets_its_own_image() {
    let renderer = BatchingRenderer::new(4, usize::MAX);
    let mut h = harness_with(0, 3, renderer.clone(), 4).await;
    let jobs = h.run_seeds("test", 12).await;
    let calls = renderer.calls();
    assert_eq!(
        calls.iter().sum::<usize>(),
        12,
        "every job rendered once: {calls:?}"
    );
    assert!(
        calls.iter().all(|&n| n <= 4),
        "batches respect max_batch: {calls:?}"
    );
    assert!(
        calls.iter().any(|&n| n > 1),
        "some jobs shared a batch: {calls:?}"
    );
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        let png = h.blob.get(j.object_key.as_deref().unwrap()).await.unwrap();
        let c = seed_colour(j.params.seed);
        assert_eq!(
            first_pixel(&png),
            [c, c, c],
            "job {} got another job's image",
            j.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_out_of_device_memory_is_retried_in_smaller_batches() {
    // Batches of more than one job fail like a GPU out of memory; singles work.
    let renderer = BatchingRenderer::new(4, 1);
    let mut h = harness_with(0, 5, renderer.clone(), 4).await;
    let jobs = h.run_seeds("test", 8).await;
    let calls = renderer.calls();
    let first_oom = calls
        .iter()
        .position(|&n| n > 1)
        .unwrap_or_else(|| panic!("no batch formed: {calls:?}"));
    // After a failed batch of n, no batch is bigger than n / 2.
    let mut cap = usize::MAX;
    for &n in &calls[first_oom..] {
        assert!(
            n <= cap,
            "batch of {n} after the limit fell to {cap}: {calls:?}"
        );
        if n > 1 {
            cap = n / 2;
        }
    }
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    }
    assert!(
        jobs.iter()
            .any(|j| j.attempt > 1 && j.error_kind.as_deref() == Some("transient")),
        "the failed batch's jobs were retried: {jobs:?}"
    );
}

/// An 8x8 grey PNG.
fn small_png() -> Bytes {
    let image = RgbImage {
        width: 8,
        height: 8,
        rgb: vec![90; 8 * 8 * 3],
    };
    let meta = pixelfarm_image::PngMetadata {
        parameters: String::new(),
        provenance_json: String::new(),
    };
    pixelfarm_image::output::encode(&image, &OutputSpec::default(), &meta)
        .unwrap()
        .into()
}

/// A one-job manifest starting from the input `key`.
fn img2img(key: &str) -> String {
    format!(
        "name: b\nmodel: test\ndefaults: {{width: 16, height: 16}}\njobs:\n  - {{prompt: p, seed: 1, init: {{image: {{key: {key}}}, strength: 0.5}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_image_replaced_after_submit_is_refused_permanently() {
    let mut h = harness(0, 3).await;
    let up = h
        .core
        .api
        .upload(h.tenant, Some(CHANGING), small_png())
        .await
        .unwrap();
    // Submit reads (and pins) the image; the worker's read sees other bytes.
    let jobs = h.run_manifest(img2img(&up.key)).await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("changed since the batch was submitted") && err.contains(&up.key),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_no_input_outside_the_jobs_tenant() {
    let mut h = harness(0, 3).await;
    let other = h.store.create_tenant("other", 1).await.unwrap();
    let theirs = h
        .core
        .api
        .upload(other, Some("theirs"), small_png())
        .await
        .unwrap();
    // A job row naming another tenant's input, written past the API's check (as a bug or a
    // hand-edited row would): the worker refuses to read it.
    let spec = parse_manifest(&img2img(&theirs.key)).unwrap();
    let out = h.store.submit(h.tenant, &spec, 3).await.unwrap();
    let jobs = h.finish(out.batch_id).await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(
        j.last_error.as_deref(),
        Some(
            format!(
                "init image `{}` is not an input of the job's tenant",
                theirs.key
            )
            .as_str()
        ),
        "{j:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_reports_progress_and_cancel_stops_it_between_steps() {
    let renderer = Arc::new(SteppingRenderer::default());
    let h = harness_with(0, 3, renderer.clone(), 1).await;
    let m = "name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 200}\nprompt: p\nseeds: [1]\n";
    let out = h.core.api.submit(h.tenant, m.into()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Progress reaches the job record through the heartbeats.
    let seen = loop {
        let jobs = h
            .core
            .api
            .jobs(h.tenant, out.batch_id, None, 10)
            .await
            .unwrap();
        if let Some(p) = jobs[0].progress.filter(|p| p.done >= 3) {
            assert_eq!(jobs[0].state, JobState::Running);
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", jobs[0]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(seen.total, 200);
    assert_eq!(h.core.api.cancel(h.tenant, out.batch_id).await.unwrap(), 1);
    renderer.stopped_early(200, deadline).await;
    // The worker records nothing over the cancellation.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = h.core.api.batch(h.tenant, out.batch_id).await.unwrap();
    assert!(view.done);
    assert_eq!(view.status.counts.cancelled, 1);
    let j = &h
        .core
        .api
        .jobs(h.tenant, out.batch_id, None, 10)
        .await
        .unwrap()[0];
    assert_eq!(
        (j.state, j.object_key.as_deref()),
        (JobState::Cancelled, None)
    );
    h.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_models_limits_dies_before_rendering() {
    let renderer = Arc::new(SteppingRenderer {
        limits: Some(ModelLimits {
            max_width: 64,
            max_height: 64,
            max_steps: 5,
            max_output_side: 64,
            max_batch: 1,
        }),
        ..Default::default()
    });
    let mut h = harness_with(0, 3, renderer.clone(), 1).await;
    let jobs = h
        .run_manifest("name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 6}\nprompt: p\nseeds: [1]\n".into())
        .await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    assert_eq!(j.error_kind.as_deref(), Some("invalid"));
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("`steps` is 6") && err.contains("at most 5"),
        "{err}"
    );
    assert_eq!(
        renderer.steps_taken.load(Ordering::SeqCst),
        0,
        "never rendered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_the_timeout_stops_and_its_job_dies_without_retries() {
    let renderer = Arc::new(SteppingRenderer::default());
    let mut h = harness_timed(0, 3, renderer.clone(), 1, Duration::from_millis(300)).await;
    // 200 steps of 20 ms: 4 s, far past the 300 ms timeout.
    let jobs = h
        .run_manifest("name: b\nmodel: test\ndefaults: {width: 16, height: 16, steps: 200}\nprompt: p\nseeds: [1]\n".into())
        .await;
    let j = &jobs[0];
    assert_eq!((j.state, j.attempt), (JobState::Dead, 1), "{j:?}");
    let err = j.last_error.as_deref().unwrap();
    assert!(
        err.contains("worker.render_timeout_seconds") && err.contains("of 200"),
        "{err}"
    );
    // The render thread stops at its next step.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    renderer.stopped_early(200, deadline).await;
    assert_eq!(j.object_key, None);
}
