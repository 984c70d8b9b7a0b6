//! The outbox relay: claims due events, writes each one's body on its first attempt, sends it
//! signed, and records the attempt; a failed attempt is retried with exponential backoff (with
//! jitter) until the event is older than the give-up age. Every scheduler runs one: claims skip
//! the events another relay holds, and an event whose relay died is due again when its lease
//! ends, so an event may be sent twice, never lost (receivers drop repeats by `webhook-id`).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use pixelfarm_core::{
    AttemptOutcome, DueEvent, ErrorKind, EventKind, JobStore, Result, UrlSigning, WebhookPolicy,
};
use pixelfarm_runtime::settings::WebhookSettings;
use rand::Rng;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::send::Sender;
use crate::SchedulerMetrics;

/// How the relay runs, from `scheduler.webhooks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Receivers that may be called.
    pub policy: WebhookPolicy,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Attempts in flight at once (and events claimed per pass).
    pub concurrency: u32,
    /// Between two looks at the outbox when nothing was due.
    pub poll: Duration,
    /// Wait after the first failed attempt; it doubles after each.
    pub first_retry: Duration,
    /// The longest wait between two attempts.
    pub max_retry: Duration,
    /// An event this old is not tried again.
    pub give_up_after: Duration,
}

impl Config {
    /// The relay `settings` ask for.
    pub fn from_settings(s: &WebhookSettings) -> Self {
        Config {
            policy: s.policy(),
            timeout: Duration::from_secs(s.timeout_seconds),
            concurrency: s.concurrency,
            poll: Duration::from_millis(s.poll_ms),
            first_retry: Duration::from_secs(s.first_retry_seconds),
            max_retry: Duration::from_secs(s.max_retry_seconds),
            give_up_after: Duration::from_secs(u64::from(s.give_up_after_hours) * 3600),
        }
    }

    /// A claim's lease: longer than an attempt can take.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(30)
    }

    /// When to try again after failed attempt number `attempt` of an event written at
    /// `created`, or `None` once that is past the give-up age.
    pub fn retry_at(
        &self,
        created: DateTime<Utc>,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let doubled = self
            .first_retry
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let wait = doubled.min(self.max_retry);
        // ±20 %: receivers that come back are not hit by every waiting event at once.
        let wait = wait.mul_f64(rand::rng().random_range(0.8..1.2));
        let at = now + chrono::Duration::from_std(wait).ok()?;
        let deadline = created + chrono::Duration::from_std(self.give_up_after).ok()?;
        (at <= deadline).then_some(at)
    }
}

/// The relay of one scheduler.
pub struct Relay {
    store: Arc<dyn JobStore>,
    sender: Sender,
    config: Config,
    /// Signs the image URL of `job.succeeded` bodies.
    urls: Option<UrlSigning>,
    metrics: Arc<SchedulerMetrics>,
}

impl Relay {
    /// A relay over `store`; `urls` signs the image URL `job.succeeded` bodies carry.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        store: Arc<dyn JobStore>,
        config: Config,
        urls: Option<UrlSigning>,
        metrics: Arc<SchedulerMetrics>,
    ) -> Result<Self> {
        Ok(Relay {
            sender: Sender::new(config.policy.clone(), config.timeout)?,
            store,
            config,
            urls,
            metrics,
        })
    }

    /// Deliver until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let full = match self.pass().await {
                Ok(n) => n as u32 >= self.config.concurrency,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "webhook relay pass failed");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Claim the due events and attempt each; returns how many were claimed.
    ///
    /// # Errors
    /// When the store cannot be reached.
    pub async fn pass(&self) -> Result<usize> {
        let due = self
            .store
            .claim_webhook_events(self.config.concurrency, self.config.lease())
            .await?;
        let n = due.len();
        let results: Vec<Result<()>> = futures::stream::iter(due)
            .map(|event| self.attempt(event))
            .buffer_unordered(self.config.concurrency.max(1) as usize)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(n)
    }

    async fn attempt(&self, mut event: DueEvent) -> Result<()> {
        let body = match event.body.take() {
            Some(body) => body,
            None => self.body(&event).await?,
        };
        if event.secrets.is_empty() {
            // A tenant whose secret was never made (events written before its first webhook
            // could not exist, but a restored database might): make it now.
            event.secrets = vec![self.store.webhook_secret(event.tenant, false).await?];
        }
        let started = Instant::now();
        let answer = self.sender.send(&event, &body).await;
        let took = started.elapsed();
        let outcome = match answer.error {
            None => AttemptOutcome::Delivered {
                status: answer.status.unwrap_or(200),
            },
            Some(error) => AttemptOutcome::Failed {
                status: answer.status,
                retry_at: self
                    .config
                    .retry_at(event.created_at, event.attempt, Utc::now()),
                error,
            },
        };
        let label = match &outcome {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Failed { retry_at: None, .. } => "gave_up",
            AttemptOutcome::Failed { .. } => "failed",
        };
        if let AttemptOutcome::Failed { error, .. } = &outcome {
            tracing::info!(event = %event.id, url = %event.url, attempt = event.attempt, %error,
                outcome = label, "webhook attempt failed");
        }
        self.metrics
            .webhook_attempts
            .with_label_values(&[event.kind.as_str(), label])
            .inc();
        self.store
            .record_webhook_attempt(event.id, event.attempt, &body, &outcome, took)
            .await
    }

    /// The body every attempt of `event` sends: `{type, timestamp, data}` (the Standard Webhooks
    /// payload shape), `data` as the API shows the batch, the dead job or the stored image (with
    /// its signed URL, when URLs are signed) when the event is first attempted.
    async fn body(&self, event: &DueEvent) -> Result<String> {
        let data = match (event.kind, event.job) {
            (kind @ (EventKind::JobFailed | EventKind::JobSucceeded), Some(job)) => {
                let job = match self.store.job(event.tenant, job).await {
                    Ok(j) if kind == EventKind::JobFailed => json!({
                        "id": j.id, "key": j.key, "attempt": j.attempt,
                        "error_kind": j.error_kind, "error": j.last_error,
                        "finished_at": j.finished_at,
                    }),
                    Ok(j) => {
                        let image_url = match (&self.urls, &j.object_key) {
                            (Some(urls), Some(key)) => {
                                Some(urls.signer.signed_get(key, urls.expires_in).await?)
                            }
                            _ => None,
                        };
                        json!({
                            "id": j.id, "key": j.key, "object_key": j.object_key,
                            "sha256": j.sha256, "image_url": image_url,
                            "finished_at": j.finished_at,
                        })
                    }
                    // Retention took the row before the first attempt: the ids still say which.
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Gone) => {
                        json!({ "id": job })
                    }
                    Err(e) => return Err(e),
                };
                json!({ "batch_id": event.batch, "job": job })
            }
            _ => json!({ "batch": self.store.batch(event.tenant, event.batch).await? }),
        };
        Ok(json!({
            "type": event.kind.as_str(),
            "timestamp": event.created_at,
            "data": data,
        })
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            policy: WebhookPolicy::default(),
            timeout: Duration::from_secs(10),
            concurrency: 4,
            poll: Duration::from_secs(1),
            first_retry: Duration::from_secs(10),
            max_retry: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn retries_back_off_to_the_cap_and_stop_at_the_give_up_age() {
        let c = config();
        let t0 = Utc::now();
        let wait = |attempt: u32, now: DateTime<Utc>| {
            c.retry_at(t0, attempt, now)
                .map(|at| (at - now).num_milliseconds() as f64 / 1000.0)
        };
        let first = wait(1, t0).unwrap();
        assert!((8.0..=12.0).contains(&first), "{first}");
        let fourth = wait(4, t0).unwrap();
        assert!((64.0..=96.0).contains(&fourth), "{fourth}");
        let late = wait(30, t0).unwrap();
        assert!((2880.0..=4320.0).contains(&late), "{late}");
        let nearly_a_day = t0 + chrono::Duration::hours(23) + chrono::Duration::minutes(59);
        assert_eq!(wait(30, nearly_a_day), None);
    }
}
