//! Retention (leader only): the job rows of finished batches past their tenant's retention are
//! deleted a chunk at a time, with a pause between chunks, on a task of its own beside the leader
//! loop, so the dispatcher never waits for it and the database serves the hot path between two
//! statements. The batch rows stay ([`pixelfarm_core::retention`] says which rows go and when).

use pixelfarm_core::{Error, JobStore, PurgeOutcome, Result, Retention};
use pixelfarm_runtime::settings::RetentionSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::SchedulerMetrics;

/// The largest [`Config::chunk`]: one statement deleting more would hold its locks, and fill the
/// WAL, for longer than a pause between chunks is worth.
pub const MAX_CHUNK: u32 = 5000;

/// How the purge runs, from `scheduler.retention`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Retention of the tenants without their own.
    pub default: Retention,
    /// Job rows deleted per statement.
    pub chunk: u32,
    /// Between two chunks while rows past their retention remain.
    pub pause: Duration,
    /// Between two looks for newly expired batches once none is left (or after a failure).
    pub interval: Duration,
}

impl Config {
    /// The purge `settings` ask for.
    pub fn from_settings(settings: &RetentionSettings) -> Self {
        Config {
            default: settings.retention(),
            chunk: settings.chunk,
            pause: Duration::from_millis(settings.pause_ms),
            interval: Duration::from_secs(settings.interval_seconds),
        }
    }

    /// # Errors
    /// `Invalid` naming the `scheduler.retention` field out of range and what is accepted.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_CHUNK).contains(&self.chunk) {
            return Err(Error::invalid(format!(
                "scheduler.retention.chunk: is {}; accepted: 1 to {MAX_CHUNK} job rows per statement",
                self.chunk
            )));
        }
        if self.interval.is_zero() {
            return Err(Error::invalid(
                "scheduler.retention.interval_seconds: is 0; accepted: 1 or more",
            ));
        }
        Ok(())
    }
}

/// The purge of the leader.
pub struct Purger {
    store: Arc<dyn JobStore>,
    metrics: Arc<SchedulerMetrics>,
    config: Config,
}

impl Purger {
    /// A purge over `store` as `config` says.
    pub fn new(store: Arc<dyn JobStore>, metrics: Arc<SchedulerMetrics>, config: Config) -> Self {
        Purger {
            store,
            metrics,
            config,
        }
    }

    /// Delete one chunk; count it, and log each batch whose last rows it deleted.
    ///
    /// # Errors
    /// Store errors (the next pass tries again).
    pub async fn run_once(&self) -> Result<PurgeOutcome> {
        let out = self
            .store
            .purge_expired(self.config.default, self.config.chunk)
            .await?;
        self.metrics.retention_jobs_purged.inc_by(out.jobs);
        self.metrics
            .retention_batches_purged
            .inc_by(out.batches.len() as u64);
        for b in &out.batches {
            tracing::info!(
                batch = %b.id,
                tenant = ?b.tenant,
                name = ?b.name,
                jobs = b.jobs,
                "deleted the job rows of a finished batch past its retention; the batch row stays"
            );
        }
        Ok(out)
    }

    /// Purge until `stop`: the next chunk after [`Config::pause`] while a chunk came back full,
    /// else a new look after [`Config::interval`].
    pub async fn run(&self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let wait = match self.run_once().await {
                Ok(out) if out.jobs >= u64::from(self.config.chunk) => self.config.pause,
                Ok(_) => self.config.interval,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "retention pass failed");
                    self.config.interval
                }
            };
            tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(wait) => {} }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_forever_and_bad_fields_are_named() {
        let c = Config::from_settings(&RetentionSettings::default());
        assert_eq!(c.default, Retention::Forever);
        c.validate().unwrap();
        let days = RetentionSettings {
            days: 30,
            ..Default::default()
        };
        assert_eq!(
            Config::from_settings(&days).default,
            Retention::For(Duration::from_secs(30 * 86_400))
        );
        let seconds = RetentionSettings {
            days: 30,
            seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(
            Config::from_settings(&seconds).default,
            Retention::For(Duration::from_secs(2)),
            "seconds wins over days"
        );
        for (bad, field) in [
            (
                RetentionSettings {
                    chunk: 0,
                    ..Default::default()
                },
                "scheduler.retention.chunk",
            ),
            (
                RetentionSettings {
                    chunk: MAX_CHUNK + 1,
                    ..Default::default()
                },
                "scheduler.retention.chunk",
            ),
            (
                RetentionSettings {
                    interval_seconds: 0,
                    ..Default::default()
                },
                "scheduler.retention.interval_seconds",
            ),
        ] {
            let e = Config::from_settings(&bad)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(field) && e.contains("accepted"), "{e}");
        }
    }
}
