//! The faults: a blob store that fails and changes objects, renderers that know some models,
//! batch, or step slowly.

use async_trait::async_trait;
use bytes::Bytes;
use pixelfarm_core::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A real local blob store whose first `fail` puts fail with a transient error (S3 down), and whose
/// objects named [`CHANGING`] read back other bytes after their first read (replaced after submit).
pub(crate) struct FlakyBlob {
    pub(crate) inner: pixelfarm_blob::LocalBlob,
    pub(crate) fail: AtomicU32,
    pub(crate) read: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The file name of inputs that change after their first read.
pub(crate) const CHANGING: &str = "changing.png";

impl FlakyBlob {
    /// `bytes` of `key`, changed if `key` is [`CHANGING`] and was read before.
    pub(crate) fn maybe_changed(&self, key: &str, bytes: Bytes) -> Bytes {
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
pub(crate) struct KnowsSomeModels(pub(crate) pixelfarm_render::TestPattern);

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
pub(crate) struct BatchingRenderer {
    pub(crate) max: usize,
    pub(crate) oom_above: usize,
    pub(crate) calls: std::sync::Mutex<Vec<usize>>,
}

impl BatchingRenderer {
    pub(crate) fn new(max: usize, oom_above: usize) -> Arc<Self> {
        Arc::new(BatchingRenderer {
            max,
            oom_above,
            calls: Default::default(),
        })
    }
    pub(crate) fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

/// The colour a job's image is painted with.
pub(crate) fn seed_colour(seed: Seed) -> u8 {
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
pub(crate) struct SteppingRenderer {
    pub(crate) steps_taken: AtomicU32,
    pub(crate) stopped: std::sync::atomic::AtomicBool,
    pub(crate) limits: Option<ModelLimits>,
}

impl SteppingRenderer {
    /// Wait until the render stopped (by `deadline`) and check it did before its `total` steps.
    pub(crate) async fn stopped_early(&self, total: u32, deadline: tokio::time::Instant) {
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
        self.limits.clone()
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
