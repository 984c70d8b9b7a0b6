//! Micro-batching: a worker's executions hand their renders to one [`Batcher`], which calls the
//! renderer one batch at a time with the compatible requests waiting at that moment (same model,
//! size, sampler and steps; at most the renderer's batch size). While the device works on one
//! batch the next one gathers, so no timer decides the batch size: the load does. Renderers whose
//! batch size is 1 (the test pattern) are called directly, concurrently, as before.
//!
//! A batch in which the renderer reports a transient failure (out of device memory, a device
//! error) halves the batch size for the rest of the process, so the retries of those jobs — and
//! everything after them — run in smaller batches.

use pixelfarm_core::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use crate::WorkerMetrics;
use crate::job::blocking;

/// One job's render, waiting for a batch.
struct Request {
    model: ModelName,
    params: JobParams,
    control: RenderControl,
    reply: oneshot::Sender<Result<RenderedImage>>,
}

impl Request {
    /// Whether `self` can share a renderer call with `other`.
    fn fits(&self, other: &Request) -> bool {
        let (a, b) = (&self.params, &other.params);
        self.model == other.model
            && a.width == b.width
            && a.height == b.height
            && a.sampler == b.sampler
            && a.steps == b.steps
    }
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
    /// [`Renderer::render_batch`] contract). Jobs that start from an image render alone. `control`
    /// receives the render's progress and stops it once cancelled (a batch stops when all of its
    /// jobs are).
    ///
    /// # Errors
    /// The renderer's error for this job; `Transient` if the render thread died.
    pub async fn render(
        &self,
        model: &ModelName,
        params: &JobParams,
        input: Option<ImageInput>,
        control: &RenderControl,
    ) -> Result<RenderedImage> {
        let (r, m, p, c) = (
            self.renderer.clone(),
            model.clone(),
            params.clone(),
            control.clone(),
        );
        if let Some(input) = input {
            return blocking(move || r.render_from(&m, &p, &input, &c)).await;
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
    let mut cap = max;
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
        let Some(first) = waiting.pop_front() else {
            continue;
        };
        let mut batch = vec![first];
        let mut rest = VecDeque::with_capacity(waiting.len());
        for r in waiting.drain(..) {
            if batch.len() < cap && r.fits(&batch[0]) {
                batch.push(r);
            } else {
                rest.push_back(r);
            }
        }
        waiting = rest;

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
        if transient && n > 1 && cap > 1 {
            cap = (n / 2).max(1);
            tracing::warn!(
                batch = n,
                new_max = cap,
                "transient failure in a batch; batching fewer jobs from now on"
            );
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
