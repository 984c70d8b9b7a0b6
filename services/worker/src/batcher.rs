//! Micro-batching: a worker's executions hand their renders to one [`Batcher`], which calls the
//! renderer one batch at a time with the compatible requests waiting at that moment (same model
//! and [`BatchKey`], the rule the engine groups by too; at most the renderer's batch size). While the device works on one
//! batch the next one gathers, so no timer decides the batch size: the load does. Renderers whose
//! batch size is 1 (the test pattern) are called directly, concurrently, as before.
//!
//! Each model's batch size starts at its `max_batch` (the registry's per-model limit, else the
//! renderer's). A batch in which the renderer reports a transient failure (out of device memory,
//! a device error) halves it, so the retries of those jobs — and what follows — run in smaller
//! batches; [`RECOVER_AFTER`] full batches in a row without one double it again, up to the max, so
//! one passing shortage (another process on the GPU, a fragmented allocator) does not cost the
//! worker its throughput for the rest of its life.

use pixelfarm_core::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::WorkerMetrics;

/// One job's render, waiting for a batch.
struct Request {
    model: ModelName,
    params: JobParams,
    control: RenderControl,
    reply: oneshot::Sender<Result<RenderedImage>>,
}

impl Request {
    fn key(&self) -> (&ModelName, BatchKey) {
        (&self.model, BatchKey::of(&self.params))
    }
}

/// The next batch out of `waiting`: its first request and every later one with the same model and
/// [`BatchKey`], at most `cap`, in arrival order; the others stay, in their order.
fn next_batch<T>(
    waiting: &mut VecDeque<T>,
    cap: usize,
    key: impl Fn(&T) -> (&ModelName, BatchKey),
) -> Vec<T> {
    let Some(first) = waiting.pop_front() else {
        return Vec::new();
    };
    let mut batch = vec![first];
    let mut rest = VecDeque::with_capacity(waiting.len());
    for r in waiting.drain(..) {
        if batch.len() < cap && key(&r) == key(&batch[0]) {
            batch.push(r);
        } else {
            rest.push_back(r);
        }
    }
    *waiting = rest;
    batch
}

/// Groups the renders of concurrent executions into renderer batches.
pub struct Batcher {
    renderer: Arc<dyn Renderer>,
    /// `None` when the renderer's batch size is 1: render directly.
    queue: Option<mpsc::UnboundedSender<Request>>,
}

impl Batcher {
    /// A batcher over `renderer`. For batching renderers it starts the batching task, which ends
    /// when the batcher is dropped. `linger` is how long the first request of an idle batcher
    /// waits for company (executions claimed together arrive a few milliseconds apart).
    pub fn start(
        renderer: Arc<dyn Renderer>,
        linger: Duration,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        let max = renderer.max_batch();
        let queue = (max > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batch_loop(renderer.clone(), rx, max, linger, metrics));
            tx
        });
        Batcher { renderer, queue }
    }

    /// The renderer behind the batcher.
    pub fn renderer(&self) -> &Arc<dyn Renderer> {
        &self.renderer
    }

    /// Render one job, alone or inside a batch; the result is the same either way (the
    /// [`Renderer::render_batch`] contract). Jobs with input images (init, control) render alone. `control`
    /// receives the render's progress and stops it once cancelled (a batch stops when all of its
    /// jobs are).
    ///
    /// # Errors
    /// The renderer's error for this job; `Transient` if the render thread died.
    pub async fn render(
        &self,
        model: &ModelName,
        params: &JobParams,
        inputs: JobInputs,
        control: &RenderControl,
    ) -> Result<RenderedImage> {
        let (r, m, p, c) = (
            self.renderer.clone(),
            model.clone(),
            params.clone(),
            control.clone(),
        );
        if !inputs.is_empty() {
            return blocking(move || r.render_from(&m, &p, &inputs, &c)).await;
        }
        let Some(queue) = &self.queue else {
            return blocking(move || {
                let mut out = r.render_batch(&m, std::slice::from_ref(&p), &[c]);
                out.pop().unwrap_or_else(|| Err(no_result()))
            })
            .await;
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send(Request {
                model: m,
                params: p,
                control: c,
                reply,
            })
            .map_err(|_| Error::new(ErrorKind::Transient, "the worker's render queue is closed"))?;
        answer.await.unwrap_or_else(|_| Err(no_result()))
    }
}

/// Full batches in a row without a transient failure after which a shrunk batch size doubles.
pub const RECOVER_AFTER: u32 = 16;

/// One model's batch size now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cap {
    max: usize,
    now: usize,
    /// Full batches (of `now` jobs) since `now` last changed, none failing transiently.
    clean: u32,
}

impl Cap {
    fn new(max: usize) -> Self {
        Cap {
            max,
            now: max,
            clean: 0,
        }
    }

    /// Account for a batch of `n` jobs; the new size when it changed.
    fn after(&mut self, n: usize, transient: bool) -> Option<usize> {
        if transient {
            self.clean = 0;
            if n > 1 && self.now > 1 {
                self.now = (n / 2).max(1);
                return Some(self.now);
            }
            return None;
        }
        if self.now < self.max && n >= self.now {
            self.clean += 1;
            if self.clean >= RECOVER_AFTER {
                self.clean = 0;
                self.now = (self.now * 2).min(self.max);
                return Some(self.now);
            }
        }
        None
    }
}

/// Run a blocking closure on the blocking pool; a panic there is a `Transient` error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::with_source(ErrorKind::Transient, "render thread failed", e))?
}

fn no_result() -> Error {
    Error::new(
        ErrorKind::Transient,
        "the renderer returned no result for this job",
    )
}

async fn batch_loop(
    renderer: Arc<dyn Renderer>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    max: usize,
    linger: Duration,
    metrics: Arc<WorkerMetrics>,
) {
    let mut caps: HashMap<ModelName, Cap> = HashMap::new();
    let mut waiting: VecDeque<Request> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(r) => waiting.push_back(r),
                None => return,
            }
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
            }
        }
        while let Ok(r) = rx.try_recv() {
            waiting.push_back(r);
        }
        // Executions that gave up (lease lost, shutdown) need no pixels.
        waiting.retain(|r| !r.reply.is_closed());
        let Some(first) = waiting.front() else {
            continue;
        };
        let cap = caps.entry(first.model.clone()).or_insert_with(|| {
            Cap::new(
                renderer
                    .limits(&first.model)
                    .map_or(max, |l| l.max_batch.max(1)),
            )
        });
        let batch = next_batch(&mut waiting, cap.now, Request::key);

        let n = batch.len();
        metrics.batch_size.observe(n as f64);
        let model = batch[0].model.clone();
        let params: Vec<JobParams> = batch.iter().map(|r| r.params.clone()).collect();
        let controls: Vec<RenderControl> = batch.iter().map(|r| r.control.clone()).collect();
        let r = renderer.clone();
        // A render thread that died fails every job of the batch (no result for any).
        let results = blocking(move || Ok(r.render_batch(&model, &params, &controls)))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e.chain(), "render thread failed");
                Vec::new()
            });
        let transient = results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Transient));
        let cap = caps.get_mut(&batch[0].model).expect("inserted above");
        match cap.after(n, transient) {
            Some(now) if transient => tracing::warn!(
                model = %batch[0].model,
                batch = n,
                new_max = now,
                "transient failure in a batch; batching fewer jobs until {RECOVER_AFTER} full batches pass"
            ),
            Some(now) => tracing::info!(
                model = %batch[0].model,
                new_max = now,
                "{RECOVER_AFTER} full batches without a transient failure; batching more jobs again"
            ),
            None => {}
        }
        let mut results = results.into_iter();
        for req in batch {
            // The execution may have gone meanwhile; nothing to do then.
            let _ = req
                .reply
                .send(results.next().unwrap_or_else(|| Err(no_result())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_halves_the_size_and_clean_full_batches_restore_it() {
        let mut cap = Cap::new(8);
        assert_eq!(cap.after(8, false), None, "at its max: nothing to recover");
        assert_eq!(cap.after(8, true), Some(4));
        assert_eq!(cap.after(4, true), Some(2));
        // Smaller batches than the size say nothing about whether it fits again.
        for _ in 0..RECOVER_AFTER * 2 {
            assert_eq!(cap.after(1, false), None);
        }
        for _ in 1..RECOVER_AFTER {
            assert_eq!(cap.after(2, false), None);
        }
        assert_eq!(cap.after(2, false), Some(4));
        // A failure meanwhile starts the count again.
        for _ in 1..RECOVER_AFTER {
            cap.after(4, false);
        }
        assert_eq!(
            cap.after(1, true),
            None,
            "a lone job's failure shrinks nothing"
        );
        for _ in 1..RECOVER_AFTER {
            assert_eq!(cap.after(4, false), None);
        }
        assert_eq!(cap.after(4, false), Some(8));
        assert_eq!(cap, Cap::new(8));
    }

    /// A job of `model` whose size, steps, sampler and guidance are picked by `pick` from a few
    /// values each, so that random lists hold many equal and many different keys.
    fn job(pick: &mut impl FnMut(usize) -> usize) -> (ModelName, JobParams) {
        let model = ModelName::parse(["a", "b"][pick(2)]).unwrap();
        let params = JobParams {
            prompt: Prompt::parse("p").unwrap(),
            negative_prompt: NegativePrompt::default(),
            width: [64, 128][pick(2)],
            height: 64,
            steps: StepCount::parse([10, 20][pick(2)]).unwrap(),
            guidance: GuidanceScale::parse([1.0, 4.0, 7.5][pick(3)]).unwrap(),
            sampler: Sampler::ALL[pick(2)],
            seed: Seed::parse(pick(1000) as u64).unwrap(),
            init: None,
            hires: None,
            loras: Default::default(),
            control: Default::default(),
            output: Default::default(),
        };
        (model, params)
    }

    #[test]
    fn the_engine_never_splits_a_batch_and_the_batcher_never_separates_what_the_engine_fuses() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut pick = move |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 33) % n as u64) as usize
        };
        fn key(r: &(ModelName, JobParams)) -> (&ModelName, BatchKey) {
            (&r.0, BatchKey::of(&r.1))
        }
        for _ in 0..500 {
            let cap = 1 + pick(5);
            let mut waiting: VecDeque<_> = (0..pick(12)).map(|_| job(&mut pick)).collect();
            while !waiting.is_empty() {
                let batch = next_batch(&mut waiting, cap, key);
                let params: Vec<JobParams> = batch.iter().map(|r| r.1.clone()).collect();
                let all: Vec<usize> = (0..batch.len()).collect();
                assert_eq!(
                    pixelfarm_core::batch::groups(&params, cap),
                    vec![all],
                    "the engine renders the worker's batch as one group"
                );
                let left_behind = waiting.iter().any(|r| key(r) == key(&batch[0]));
                assert!(
                    !left_behind || batch.len() == cap,
                    "a job the engine would fuse waits only when the batch is full"
                );
            }
        }
    }
}
