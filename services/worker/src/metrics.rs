//! Worker metrics.

use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

/// Worker metrics.
pub struct WorkerMetrics {
    /// Jobs this worker finished handling, by model and outcome (succeeded, retryable, dead, lease_lost,
    /// cancelled).
    pub jobs: IntCounterVec,
    /// Seconds per phase (queue_wait, claim, render, encode, upload, total, and the renderer's own).
    pub phase_seconds: HistogramVec,
    /// Jobs in hand right now.
    pub in_flight: IntGauge,
    /// Jobs this worker may hold at once.
    pub concurrency: IntGauge,
    /// Seconds spent with a job in hand, summed over slots; busy ratio = rate / concurrency.
    pub busy_seconds: Counter,
    /// Render-device seconds by tenant and model (chargeback).
    pub device_seconds: CounterVec,
    /// Messages that could not be decoded, sent to the dead-letter queue.
    pub dead_letters: IntCounter,
    /// Duplicate or stale messages (job already taken, done or cancelled), acked and dropped.
    pub stale_messages: IntCounter,
    /// Jobs whose lease this worker lost while working.
    pub lease_lost: IntCounter,
    /// 1 while the worker runs.
    pub up: IntGauge,
    /// Jobs per renderer call (micro-batches; only for renderers that batch).
    pub batch_size: Histogram,
    /// Jobs per grouped store write, by write (claim, complete).
    pub write_group_size: HistogramVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl WorkerMetrics {
    /// Create and register on `r`.
    ///
    /// # Panics
    /// If the names are already registered on `r`.
    pub fn register(r: &Registry) -> Self {
        let buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            120.0, 300.0,
        ];
        WorkerMetrics {
            jobs: reg(r, IntCounterVec::new(Opts::new("pixelfarm_worker_jobs_total", "Jobs handled by this worker, by model and outcome."), &["model", "outcome"]).expect("valid")),
            phase_seconds: reg(r, HistogramVec::new(
                HistogramOpts::new("pixelfarm_job_phase_seconds", "Seconds per job phase (queue_wait, claim, render, encode, upload, total, and renderer phases).").buckets(buckets),
                &["phase", "model"],
            ).expect("valid")),
            in_flight: reg(r, IntGauge::new("pixelfarm_worker_in_flight", "Jobs this worker holds right now.").expect("valid")),
            concurrency: reg(r, IntGauge::new("pixelfarm_worker_concurrency", "Jobs this worker may hold at once.").expect("valid")),
            busy_seconds: reg(r, Counter::new("pixelfarm_worker_busy_seconds_total", "Seconds spent with a job in hand, summed over concurrent slots.").expect("valid")),
            device_seconds: reg(r, CounterVec::new(Opts::new("pixelfarm_device_seconds_total", "Render-device seconds by tenant, model and device."), &["tenant", "model", "device"]).expect("valid")),
            dead_letters: reg(r, IntCounter::new("pixelfarm_dead_letters_total", "Undecodable messages sent to the dead-letter queue.").expect("valid")),
            stale_messages: reg(r, IntCounter::new("pixelfarm_stale_messages_total", "Duplicate or stale messages acked and dropped.").expect("valid")),
            lease_lost: reg(r, IntCounter::new("pixelfarm_lease_lost_total", "Jobs whose lease was lost while working.").expect("valid")),
            up: reg(r, IntGauge::new("pixelfarm_worker_up", "1 while this worker process runs.").expect("valid")),
            batch_size: reg(r, Histogram::with_opts(
                HistogramOpts::new("pixelfarm_worker_batch_size", "Jobs per renderer call (micro-batching renderers only).")
                    .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0]),
            ).expect("valid")),
            write_group_size: reg(r, HistogramVec::new(
                HistogramOpts::new("pixelfarm_worker_write_group_size", "Jobs per grouped store write (worker.write_group), by write: claim, complete.")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
                &["write"],
            ).expect("valid")),
        }
    }

    /// Record the size of one grouped write.
    pub fn write_group(&self, write: &str, jobs: usize) {
        self.write_group_size
            .with_label_values(&[write])
            .observe(jobs as f64);
    }

    /// Record one phase duration.
    pub fn phase(&self, phase: &str, model: &str, seconds: f64) {
        self.phase_seconds
            .with_label_values(&[phase, model])
            .observe(seconds);
    }
}
