//! [`Worker`]: consume → claim → render → upload → complete → ack.

use pixelfarm_core::*;
use pixelfarm_image::ContentSigner;
use pixelfarm_runtime::settings::ProvenanceRecords;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::WorkerMetrics;
use crate::batcher::Batcher;
use crate::group::{GroupConfig, GroupWriter, InHand};
use crate::job::Execution;

/// Pause before consuming again after the broker connection failed.
const RECONSUME_PAUSE: Duration = Duration::from_secs(1);
/// Recording a job's outcome is retried for this many lease lengths before the job is left to
/// the rescuer (the heartbeat renews the lease meanwhile whenever the database answers).
const RECORD_PATIENCE: u32 = 2;
/// First and longest pause between attempts to record an outcome.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_CAP: Duration = Duration::from_secs(2);

/// Tunables of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name.
    pub id: String,
    /// Models served (one queue each).
    pub models: Vec<ModelName>,
    /// Most unsettled messages at once.
    pub prefetch: u16,
    /// Jobs processed at once.
    pub concurrency: usize,
    /// Lease length.
    pub lease: Duration,
    /// Lease renewal period.
    pub heartbeat: Duration,
    /// On stop, how long jobs in hand may take to finish.
    pub drain_grace: Duration,
    /// Retry delays for transient failures.
    pub backoff: Backoff,
    /// How long a render waits for company before an idle batching renderer starts a batch.
    pub batch_linger: Duration,
    /// The longest a job's render may take.
    pub render_timeout: Duration,
    /// How claims and completions are grouped into one statement each.
    pub write_group: GroupConfig,
    /// Signs the content credentials of the images whose jobs ask for them.
    pub signer: Arc<ContentSigner>,
    /// Which images get their provenance record beside them (`worker.provenance_records`).
    pub provenance_records: ProvenanceRecords,
}

/// The worker's grouped store writes, shared by its executions.
struct Writes {
    /// Claims: whether each job was claimed (`None`: not claimable).
    claims: GroupWriter<JobId, Option<ClaimedJob>>,
    /// Completions `(job, attempt, completion)`: whether each row changed.
    completions: GroupWriter<(JobId, u32, Completion), bool>,
}

impl Writes {
    /// The writers of `w`, whose groups wait for the jobs `in_hand`.
    fn start(w: &Worker, in_hand: &InHand) -> Self {
        let (store, id, lease, metrics) = (
            w.store.clone(),
            w.cfg.id.clone(),
            w.cfg.lease,
            w.metrics.clone(),
        );
        let claims = GroupWriter::start(
            w.cfg.write_group,
            in_hand.clone(),
            move |jobs: Vec<JobId>| {
                metrics.write_group("claim", jobs.len());
                let (store, id) = (store.clone(), id.clone());
                async move {
                    let mut claimed: BTreeMap<JobId, ClaimedJob> = store
                        .claim_many(&jobs, &id, lease)
                        .await?
                        .into_iter()
                        .map(|c| (c.job.id, c))
                        .collect();
                    Ok(jobs.iter().map(|j| claimed.remove(j)).collect())
                }
            },
        );
        let (store, id, metrics) = (w.store.clone(), w.cfg.id.clone(), w.metrics.clone());
        let completions = GroupWriter::start(
            w.cfg.write_group,
            in_hand.clone(),
            move |done: Vec<(JobId, u32, Completion)>| {
                metrics.write_group("complete", done.len());
                let (store, id) = (store.clone(), id.clone());
                async move { store.complete_many(&id, &done).await }
            },
        );
        Writes {
            claims,
            completions,
        }
    }
}

/// A worker over the seams.
pub struct Worker {
    cfg: WorkerConfig,
    store: Arc<dyn JobStore>,
    broker: Arc<dyn Broker>,
    blob: Arc<dyn BlobStore>,
    renderer: Arc<dyn Renderer>,
    metrics: Arc<WorkerMetrics>,
    consuming: AtomicBool,
    /// Turns to render: every job takes it shared before its claim; a job that was in flight when
    /// a worker died (a suspect) takes it exclusively, so it is claimed and rendered with nothing
    /// else in flight here, and a crash it causes again is counted against it alone.
    turns: RwLock<()>,
}

/// How a job ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Retryable,
    Dead,
    LeaseLost,
    Cancelled,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retryable => "retryable",
            Outcome::Dead => "dead",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl Worker {
    /// A worker; nothing runs until [`Worker::run`].
    pub fn new(
        cfg: WorkerConfig,
        store: Arc<dyn JobStore>,
        broker: Arc<dyn Broker>,
        blob: Arc<dyn BlobStore>,
        renderer: Arc<dyn Renderer>,
        metrics: Arc<WorkerMetrics>,
    ) -> Self {
        metrics.concurrency.set(cfg.concurrency as i64);
        Worker {
            cfg,
            store,
            broker,
            blob,
            renderer,
            metrics,
            consuming: AtomicBool::new(false),
            turns: RwLock::new(()),
        }
    }

    /// Whether the worker is consuming (for `/readyz`).
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Relaxed)
    }

    /// Consume until `stop`, then stop taking messages, let the jobs in hand finish within the
    /// drain grace, and return. Jobs still running after the grace keep their lease until it
    /// expires; the rescuer returns them to pending.
    ///
    /// # Errors
    /// Never for broker trouble (it reconnects); only if the worker cannot start at all.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<()> {
        self.metrics.up.set(1);
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let batcher = Arc::new(Batcher::start(
            self.renderer.clone(),
            self.cfg.batch_linger,
            self.metrics.clone(),
        ));
        let in_hand = InHand::default();
        let writes = Arc::new(Writes::start(&self, &in_hand));
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut consumer: Option<Box<dyn Consumer>> = None;
        'outer: while !stop.is_cancelled() {
            let c = match consumer.as_mut() {
                Some(c) => c,
                None => match self
                    .broker
                    .consume(&self.cfg.models, self.cfg.prefetch)
                    .await
                {
                    Ok(c) => {
                        self.consuming.store(true, Ordering::Relaxed);
                        tracing::info!(models = ?self.cfg.models.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "consuming");
                        consumer.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.chain(), "cannot consume; retrying");
                        tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(RECONSUME_PAUSE) => continue }
                    }
                },
            };
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                d = c.next() => d,
            };
            match delivery {
                Some(Ok(d)) => {
                    let me = self.clone();
                    let (batcher, writes) = (batcher.clone(), writes.clone());
                    let held = in_hand.enter();
                    in_flight.spawn(async move {
                        me.handle(d, &batcher, &writes).await;
                        drop((held, permit));
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e.chain(), "consumer failed; consuming again");
                    self.consuming.store(false, Ordering::Relaxed);
                    consumer = None;
                    tokio::select! { _ = stop.cancelled() => break 'outer, _ = tokio::time::sleep(RECONSUME_PAUSE) => {} }
                }
                None => {
                    tracing::warn!("consumer closed; consuming again");
                    self.consuming.store(false, Ordering::Relaxed);
                    consumer = None;
                }
            }
            while in_flight.try_join_next().is_some() {}
        }
        self.consuming.store(false, Ordering::Relaxed);
        while in_flight.try_join_next().is_some() {}
        let n = in_flight.len();
        if n > 0 {
            tracing::info!(
                jobs = n,
                grace_s = self.cfg.drain_grace.as_secs(),
                "draining"
            );
        }
        let drained = tokio::time::timeout(self.cfg.drain_grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = in_flight.len(),
                "drain grace over; leaving the rest to the rescuer"
            );
            in_flight.abort_all();
        }
        // Dropping the consumer last hands unsettled messages back to the broker.
        drop(consumer);
        self.metrics.up.set(0);
        Ok(())
    }

    /// Handle one delivery, always settling it.
    async fn handle(&self, d: Delivery, batcher: &Batcher, writes: &Writes) {
        let msg = match d.message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "undecodable message; dead-lettering");
                self.metrics.dead_letters.inc();
                settle(d.acker.dead_letter().await);
                return;
            }
        };
        let model = msg.model.as_str().to_string();
        // Waiting here holds the message but no claim: if the worker dies meanwhile, the message
        // is redelivered and no lease expires for this job.
        let (_shared, _alone) = if msg.crashes > 0 {
            let turn = self.turns.write().await;
            tracing::info!(job = %msg.job_id, crashes = msg.crashes, "rendering alone: this job was in flight when a worker died");
            (None, Some(turn))
        } else {
            (Some(self.turns.read().await), None)
        };
        let t = Instant::now();
        let claimed = match writes.claims.submit(msg.job_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                self.metrics.stale_messages.inc();
                settle(d.acker.ack().await);
                return;
            }
            Err(e) => {
                // The database is unreachable: give the message back for later.
                tracing::warn!(job = %msg.job_id, error = %e.chain(), "cannot claim; requeueing message");
                tokio::time::sleep(RECONSUME_PAUSE).await;
                settle(d.acker.requeue().await);
                return;
            }
        };
        self.metrics
            .phase("claim", &model, t.elapsed().as_secs_f64());
        if let Some(q) = claimed.queued_at {
            let wait = (chrono::Utc::now() - q).num_milliseconds().max(0) as f64 / 1000.0;
            self.metrics.phase("queue_wait", &model, wait);
        }
        self.metrics.in_flight.inc();
        let started = Instant::now();
        let outcome = self.execute(&claimed, batcher, writes).await;
        let total = started.elapsed().as_secs_f64();
        self.metrics.in_flight.dec();
        self.metrics.busy_seconds.inc_by(total);
        self.metrics.phase("total", &model, total);
        self.metrics
            .jobs
            .with_label_values(&[&model, outcome.as_str()])
            .inc();
        // Ack only after the outcome is committed: a crash before this redelivers the message,
        // and the claim then drops it (the job is no longer claimable) or redoes it (rescued).
        settle(d.acker.ack().await);
    }

    /// Render under a renewed lease and record the outcome.
    async fn execute(&self, claimed: &ClaimedJob, batcher: &Batcher, writes: &Writes) -> Outcome {
        let job = &claimed.job;
        let lost = CancellationToken::new();
        let control = RenderControl::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.store.clone(),
            job.id,
            self.cfg.id.clone(),
            job.attempt,
            self.cfg.lease,
            self.cfg.heartbeat,
            control.clone(),
            lost.clone(),
        ));
        let mut timings = BTreeMap::new();
        let exec = Execution {
            claimed,
            worker: &self.cfg.id,
            batcher,
            blob: self.blob.clone(),
            control: control.clone(),
            render_timeout: self.cfg.render_timeout,
            signer: &self.cfg.signer,
            provenance_records: self.cfg.provenance_records,
        };
        let result = tokio::select! {
            r = exec.run(&mut timings) => Some(r),
            _ = lost.cancelled() => None,
        };
        // Whatever ended the execution, the render thread need not go on (a no-op when done).
        control.cancel();
        let outcome = self
            .record(claimed, result, &timings, &control, &lost, writes)
            .await;
        heartbeat.abort();
        outcome
    }

    /// Record how the execution ended, the heartbeat still renewing the lease meanwhile.
    async fn record(
        &self,
        claimed: &ClaimedJob,
        result: Option<Result<(Completion, String)>>,
        timings: &BTreeMap<String, f64>,
        control: &RenderControl,
        lost: &CancellationToken,
        writes: &Writes,
    ) -> Outcome {
        let job = &claimed.job;
        let model = job.model.as_str();
        for (phase, secs) in timings {
            self.metrics.phase(phase, model, *secs);
        }
        let recorded = match result {
            None => Ok(false),
            Some(Ok((done, device))) => {
                self.metrics
                    .device_seconds
                    .with_label_values(&[&claimed.tenant.to_string(), model, &device])
                    .inc_by(done.device_seconds);
                match retrying(self.cfg.lease * RECORD_PATIENCE, lost, || {
                    writes
                        .completions
                        .submit((job.id, job.attempt, done.clone()))
                })
                .await
                {
                    Ok(true) => return Outcome::Succeeded,
                    other => other,
                }
            }
            Some(Err(e)) => {
                let failure = decide(&e, job.attempt, job.max_attempts, &self.cfg.backoff);
                tracing::warn!(job = %job.id, attempt = job.attempt, kind = %e.kind(), error = %e.chain(), "job failed");
                let outcome = match failure {
                    Failure::Retry { .. } => Outcome::Retryable,
                    Failure::Dead { .. } => Outcome::Dead,
                };
                match retrying(self.cfg.lease * RECORD_PATIENCE, lost, || {
                    self.store.fail(job.id, &self.cfg.id, job.attempt, &failure)
                })
                .await
                {
                    Ok(true) => return outcome,
                    other => other,
                }
            }
        };
        // A job cancelled while running loses its lease the same way; say which it was.
        if let Ok(JobRecord {
            state: JobState::Cancelled,
            ..
        }) = self.store.job(claimed.tenant, job.id).await
        {
            tracing::info!(job = %job.id, progress = ?control.progress(), "job cancelled while rendering; stopped");
            return Outcome::Cancelled;
        }
        match recorded {
            Ok(_) => tracing::warn!(job = %job.id, "lease lost before the outcome was recorded"),
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e.chain(), "cannot record outcome; the lease will expire and the job be retried")
            }
        }
        self.metrics.lease_lost.inc();
        Outcome::LeaseLost
    }
}

/// `write` (a conditional update of the job row), retried with backoff on store errors until it
/// answers, the lease is lost, or `patience` has passed: a render that finished during a
/// database blip is recorded when the database is back, not thrown away and rendered again.
async fn retrying<F, Fut>(patience: Duration, lost: &CancellationToken, write: F) -> Result<bool>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + patience;
    let mut pause = RECORD_RETRY_FIRST;
    loop {
        let e = match write().await {
            Ok(b) => return Ok(b),
            Err(e) => e,
        };
        if lost.is_cancelled() || Instant::now() + pause > deadline {
            return Err(e);
        }
        tracing::warn!(error = %e.chain(), retry_in_ms = pause.as_millis() as u64, "cannot record the outcome yet; retrying");
        tokio::select! {
            _ = lost.cancelled() => return Err(e),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECORD_RETRY_CAP);
    }
}

fn settle(r: Result<()>) {
    if let Err(e) = r {
        // The message comes back after the channel closes; the claim will sort it out.
        tracing::warn!(error = %e.chain(), "cannot settle message");
    }
}

/// Renew the lease every `every`, recording the render's progress; once the store says we no
/// longer hold it (expired, or the job was cancelled), stop the render and cancel `lost`.
#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    store: Arc<dyn JobStore>,
    job: JobId,
    worker: String,
    attempt: u32,
    lease: Duration,
    every: Duration,
    control: RenderControl,
    lost: CancellationToken,
) {
    loop {
        tokio::time::sleep(every).await;
        match store
            .heartbeat(job, &worker, attempt, lease, control.progress())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                control.cancel();
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(%job, error = %e.chain(), "cannot renew lease; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn flaky(
        failures: u32,
    ) -> (
        Arc<AtomicU32>,
        impl Fn() -> std::future::Ready<Result<bool>>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let write = move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures {
                Err(Error::new(ErrorKind::Transient, "database restarting"))
            } else {
                Ok(true)
            })
        };
        (calls, write)
    }

    #[tokio::test]
    async fn an_outcome_is_recorded_once_the_database_answers_again() {
        let (calls, write) = flaky(3);
        let r = retrying(Duration::from_secs(10), &CancellationToken::new(), write).await;
        assert!(r.unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn recording_gives_up_when_patience_or_the_lease_runs_out() {
        let (calls, write) = flaky(u32::MAX);
        let t = Instant::now();
        let r = retrying(Duration::from_millis(500), &CancellationToken::new(), write).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Transient);
        assert!(
            t.elapsed() <= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) >= 2);

        let lost = CancellationToken::new();
        lost.cancel();
        let (calls, write) = flaky(u32::MAX);
        assert!(
            retrying(Duration::from_secs(10), &lost, write)
                .await
                .is_err()
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a lost lease stops at once"
        );
    }
}
