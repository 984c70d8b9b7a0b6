//! Scheduler metrics. Completions, backlog and tenant usage are read from the job rows, so they stay right
//! when a worker is killed before it could report anything.

use pixelfarm_core::{JobState, JobStore, Result};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Mutex;

/// Scheduler metrics.
pub struct SchedulerMetrics {
    /// Jobs that reached a final state, by model and outcome.
    pub jobs_completed: IntCounterVec,
    /// Jobs published to the broker, by model.
    pub jobs_dispatched: IntCounterVec,
    /// Jobs per model and non-final state.
    pub backlog: IntGaugeVec,
    /// Expired leases returned to pending or dead.
    pub lease_rescues: IntCounter,
    /// Queued jobs whose message was presumed lost.
    pub stale_queued_requeued: IntCounter,
    /// Retryable jobs made pending again after their backoff.
    pub retries_promoted: IntCounter,
    /// Job rows of finished batches deleted by retention.
    pub retention_jobs_purged: IntCounter,
    /// Finished batches whose job rows retention deleted, the last of them.
    pub retention_batches_purged: IntCounter,
    /// 1 on the leader.
    pub is_leader: IntGauge,
    /// Workers serving each model a worker ever announced; 0 with a backlog means its jobs wait.
    pub model_live_workers: IntGaugeVec,
    /// Jobs not finished per tenant (its `max_queued_jobs` usage).
    pub tenant_queued_jobs: IntGaugeVec,
    /// Jobs submitted in the last 24 hours per tenant (its `max_jobs_per_day` usage).
    pub tenant_jobs_last_day: IntGaugeVec,
    /// Webhook delivery attempts, by event type and outcome (delivered, failed: tried again
    /// later, gave_up).
    pub webhook_attempts: IntCounterVec,
    /// Webhook events neither delivered nor given up.
    pub webhook_events_pending: IntGauge,
    /// Final-state counts last seen, per (model, outcome); the first reading is the baseline.
    seen: Mutex<Option<HashMap<(String, String), u64>>>,
    /// Models that ever had a backlog.
    known_models: Mutex<std::collections::BTreeSet<String>>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl SchedulerMetrics {
    /// Create and register on `r`.
    ///
    /// # Panics
    /// If the names are already registered on `r`.
    pub fn register(r: &Registry) -> Self {
        SchedulerMetrics {
            jobs_completed: reg(r, IntCounterVec::new(
                Opts::new("pixelfarm_jobs_completed_total", "Jobs that reached a final state since this scheduler started, by model and outcome (succeeded, dead, cancelled)."),
                &["model", "outcome"],
            ).expect("valid")),
            jobs_dispatched: reg(r, IntCounterVec::new(
                Opts::new("pixelfarm_jobs_dispatched_total", "Jobs published to the broker by the dispatcher."),
                &["model"],
            ).expect("valid")),
            backlog: reg(r, IntGaugeVec::new(
                Opts::new("pixelfarm_backlog_jobs", "Jobs per model and non-final state (pending, queued, running, retryable)."),
                &["model", "state"],
            ).expect("valid")),
            lease_rescues: reg(r, IntCounter::new("pixelfarm_lease_rescues_total", "Jobs whose worker lease expired, returned to pending or dead.").expect("valid")),
            stale_queued_requeued: reg(r, IntCounter::new("pixelfarm_stale_queued_requeued_total", "Queued jobs never claimed in time (message lost), returned to pending.").expect("valid")),
            retries_promoted: reg(r, IntCounter::new("pixelfarm_retries_promoted_total", "Retryable jobs returned to pending after their backoff.").expect("valid")),
            retention_jobs_purged: reg(r, IntCounter::new("pixelfarm_retention_jobs_purged_total", "Job rows of finished batches past their retention deleted by the leader (the batch rows stay).").expect("valid")),
            retention_batches_purged: reg(r, IntCounter::new("pixelfarm_retention_batches_purged_total", "Finished batches whose job rows retention deleted, counted when the last of them went.").expect("valid")),
            webhook_attempts: reg(r, IntCounterVec::new(
                Opts::new("pixelfarm_webhook_attempts_total", "Webhook delivery attempts by this scheduler, by event type and outcome (delivered; failed, tried again later; gave_up)."),
                &["event", "outcome"],
            ).expect("valid")),
            webhook_events_pending: reg(r, IntGauge::new(
                "pixelfarm_webhook_events_pending", "Webhook events neither delivered nor given up (all schedulers).",
            ).expect("valid")),
            is_leader: reg(r, IntGauge::new("pixelfarm_is_leader", "1 while this scheduler holds the leader lock.").expect("valid")),
            model_live_workers: reg(r, IntGaugeVec::new(
                Opts::new("pixelfarm_model_live_workers", "Workers whose announcement of serving the model has not expired, for every model a worker ever served; jobs of a model at 0 wait until one serves it."),
                &["model"],
            ).expect("valid")),
            tenant_queued_jobs: reg(r, IntGaugeVec::new(
                Opts::new("pixelfarm_tenant_queued_jobs", "Jobs not in a final state, per tenant (usage of its max_queued_jobs quota)."),
                &["tenant"],
            ).expect("valid")),
            tenant_jobs_last_day: reg(r, IntGaugeVec::new(
                Opts::new("pixelfarm_tenant_jobs_last_day", "Jobs submitted in the last 24 hours, per tenant (usage of its max_jobs_per_day quota)."),
                &["tenant"],
            ).expect("valid")),
            seen: Mutex::new(None),
            known_models: Mutex::new(Default::default()),
        }
    }

    /// Re-read backlog and completion counts, the live workers per model and each tenant's
    /// usage from the store.
    ///
    /// # Errors
    /// Store errors.
    pub async fn refresh(&self, store: &dyn JobStore) -> Result<()> {
        let backlog = store.backlog().await?;
        let mut models = self.known_models.lock().expect("metrics lock").clone();
        models.extend(backlog.iter().map(|r| r.model.to_string()));
        // Every model ever seen keeps all four series, at 0 when empty, so "no backlog" is a
        // sample rather than a missing series.
        for m in &models {
            for st in [
                JobState::Pending,
                JobState::Queued,
                JobState::Running,
                JobState::Retryable,
            ] {
                let n = backlog
                    .iter()
                    .find(|r| r.model.as_str() == m && r.state == st)
                    .map_or(0, |r| r.jobs);
                self.backlog
                    .with_label_values(&[m.as_str(), st.as_str()])
                    .set(n as i64);
            }
        }
        *self.known_models.lock().expect("metrics lock") = models;
        self.webhook_events_pending
            .set(i64::try_from(store.pending_webhook_events().await?).unwrap_or(i64::MAX));
        for p in store.model_presence().await? {
            self.model_live_workers
                .with_label_values(&[p.model.as_str()])
                .set(i64::try_from(p.live_workers).unwrap_or(i64::MAX));
        }
        for (tenant, usage) in store.usage_by_tenant().await? {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.tenant_queued_jobs
                .with_label_values(&[tenant.as_str()])
                .set(gauge(usage.queued_jobs));
            self.tenant_jobs_last_day
                .with_label_values(&[tenant.as_str()])
                .set(gauge(usage.jobs_last_day));
        }
        let finished = store.finished().await?;
        let mut seen = self.seen.lock().expect("metrics lock");
        let first = seen.is_none();
        let map = seen.get_or_insert_with(HashMap::new);
        for row in finished {
            let k = (row.model.to_string(), row.state.to_string());
            let before = map.insert(k.clone(), row.jobs);
            if !first {
                let delta = row.jobs.saturating_sub(before.unwrap_or(0));
                self.jobs_completed
                    .with_label_values(&[&k.0, &k.1])
                    .inc_by(delta);
            } else {
                // Make the series exist at 0 from the start.
                self.jobs_completed.with_label_values(&[&k.0, &k.1]);
            }
        }
        Ok(())
    }
}
