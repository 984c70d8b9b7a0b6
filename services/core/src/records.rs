//! The records the [`crate::JobStore`] exchanges: messages, batches and jobs as their owners see
//! them, what workers record, and what the scheduler's loops read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;

use crate::ErrorKind;
use crate::control::StepProgress;
use crate::ids::{BatchId, JobId, TenantId};
use crate::params::{JobParams, ModelName, Priority};
use crate::state::JobState;

/// What travels on the broker: just enough to route and claim; the row holds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMessage {
    /// The job to claim.
    pub job_id: JobId,
    /// Its batch, for logs.
    pub batch_id: BatchId,
    /// Routing key: the queue of this model.
    pub model: ModelName,
    /// Copied from the batch, so a broker with priorities could use it.
    pub priority: Priority,
    /// Times the job's lease expired when it was published: a job that was in flight when a
    /// worker died is a suspect, and a worker renders it alone, so a crash it causes again is
    /// counted against it and not against the jobs beside it.
    pub crashes: u32,
}

/// Result of a submit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitOutcome {
    /// The batch (new, or the one with the same idempotency key).
    pub batch_id: BatchId,
    /// False when the idempotency key matched an existing batch.
    pub created: bool,
    /// Number of jobs in the batch.
    pub jobs: u64,
}

/// Jobs per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateCounts {
    #[allow(missing_docs)]
    pub pending: u64,
    #[allow(missing_docs)]
    pub queued: u64,
    #[allow(missing_docs)]
    pub running: u64,
    #[allow(missing_docs)]
    pub succeeded: u64,
    #[allow(missing_docs)]
    pub retryable: u64,
    #[allow(missing_docs)]
    pub dead: u64,
    #[allow(missing_docs)]
    pub cancelled: u64,
}

impl StateCounts {
    /// Add `n` jobs in `state`.
    pub fn add(&mut self, state: JobState, n: u64) {
        *match state {
            JobState::Pending => &mut self.pending,
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Retryable => &mut self.retryable,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        } += n;
    }

    /// All jobs.
    pub fn total(&self) -> u64 {
        self.pending
            + self.queued
            + self.running
            + self.succeeded
            + self.retryable
            + self.dead
            + self.cancelled
    }

    /// Jobs in a final state.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.dead + self.cancelled
    }
}

/// A batch as its owner sees it; its progress equals what its job rows say, kept by the store as
/// counters updated with every change of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchStatus {
    #[allow(missing_docs)]
    pub id: BatchId,
    #[allow(missing_docs)]
    pub name: String,
    #[allow(missing_docs)]
    pub model: ModelName,
    #[allow(missing_docs)]
    pub priority: Priority,
    #[allow(missing_docs)]
    pub tags: BTreeMap<String, String>,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
    /// Jobs per state.
    pub counts: StateCounts,
    /// When a job of the batch was first claimed, for the rate: the first claim ever (a retry's
    /// claim moves its job's `started_at` later, not this).
    pub first_started_at: Option<DateTime<Utc>>,
    /// When the last job finished (the latest `finished_at` ever).
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Render-device seconds spent on this batch (for chargeback).
    pub device_seconds: f64,
    /// When retention took this finished batch's jobs: its job rows are deleted (listing them is
    /// refused as `gone`) and the batch row alone remains; absent while they are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_purged_at: Option<DateTime<Utc>>,
}

impl BatchStatus {
    /// Every job is in a final state.
    pub fn is_done(&self) -> bool {
        self.counts.finished() == self.counts.total()
    }

    /// Finished jobs per second since the first start, and the seconds left at that rate.
    pub fn rate_and_eta(&self, now: DateTime<Utc>) -> (f64, Option<f64>) {
        let Some(start) = self.first_started_at else {
            return (0.0, None);
        };
        let end = if self.is_done() {
            self.last_finished_at.unwrap_or(now)
        } else {
            now
        };
        let secs = (end - start).num_milliseconds() as f64 / 1000.0;
        let done = self.counts.finished() as f64;
        if secs <= 0.0 || done == 0.0 {
            return (0.0, None);
        }
        let rate = done / secs;
        let left = (self.counts.total() - self.counts.finished()) as f64;
        (rate, Some(left / rate))
    }
}

/// A job row as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobRecord {
    #[allow(missing_docs)]
    pub id: JobId,
    #[allow(missing_docs)]
    pub batch_id: BatchId,
    /// The key from the manifest expansion.
    pub key: String,
    #[allow(missing_docs)]
    pub model: ModelName,
    #[allow(missing_docs)]
    pub params: JobParams,
    #[allow(missing_docs)]
    pub state: JobState,
    /// Attempts started so far.
    pub attempt: u32,
    #[allow(missing_docs)]
    pub max_attempts: u32,
    /// Blob key of the PNG once succeeded.
    pub object_key: Option<String>,
    /// sha256 of the PNG bytes once succeeded.
    pub sha256: Option<String>,
    /// A presigned GET URL of the image, when the deployment signs URLs
    /// (`blob.signed_urls`): set by the API when it answers, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<SignedUrl>,
    /// Why it last failed.
    pub last_error: Option<String>,
    /// Kind of the last failure (`transient`, `permanent`, `lease_expired` …).
    pub error_kind: Option<String>,
    /// Per-phase seconds of the successful attempt.
    pub timings: BTreeMap<String, f64>,
    /// Denoising steps of the current (or last) attempt, as of its worker's last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<StepProgress>,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
    #[allow(missing_docs)]
    pub started_at: Option<DateTime<Utc>>,
    #[allow(missing_docs)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The latest review of its image, once a reviewer approved or rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::review::Review>,
}

impl JobRecord {
    /// The manifest variables of a template job, read from its key ([`crate::key_vars`]);
    /// `None` for an explicit job.
    pub fn vars(&self) -> Option<Vec<(&str, &str)>> {
        crate::manifest::key_vars(&self.key, self.params.width, self.params.height)
    }
}

/// A presigned GET URL of a stored object ([`crate::UrlSigner`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedUrl {
    /// The URL: a plain GET downloads the object until `expires_at`.
    pub url: String,
    /// When the store stops accepting it.
    pub expires_at: DateTime<Utc>,
}

/// A job a worker now holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The row after the claim (state running, attempt incremented).
    pub job: JobRecord,
    /// Owner, for chargeback metrics.
    pub tenant: TenantId,
    /// When the dispatcher published it (queue wait = now - this).
    pub queued_at: Option<DateTime<Utc>>,
}

/// What a worker records on success.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Blob key of the PNG.
    pub object_key: String,
    /// sha256 of the PNG bytes.
    pub sha256: String,
    /// Seconds per phase.
    pub timings: BTreeMap<String, f64>,
    /// Seconds the render device was busy for this job.
    pub device_seconds: f64,
}

/// What a worker records on failure; decided by [`crate::failure::decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Back to `pending` after `delay`, via `retryable`.
    Retry {
        /// Backoff before the job is dispatchable again.
        delay: Duration,
        /// Kind name stored with the job.
        kind: ErrorKind,
        /// Message stored with the job.
        message: String,
    },
    /// `dead` for good.
    Dead {
        /// Kind name stored with the job.
        kind: ErrorKind,
        /// Message stored with the job.
        message: String,
    },
}

/// What the rescuer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueOutcome {
    /// Jobs whose lease expired, returned to `pending`.
    pub to_pending: u64,
    /// Jobs whose lease expired for the `max_crashes`-th time, now `dead` (`crashed_worker`).
    pub to_dead: u64,
}

/// Jobs per model and non-final state, for the backlog gauges and the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogRow {
    #[allow(missing_docs)]
    pub model: ModelName,
    #[allow(missing_docs)]
    pub state: JobState,
    #[allow(missing_docs)]
    pub jobs: u64,
}

/// A model some worker announced, and how many workers serve it now (worker presence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPresence {
    /// The model.
    pub model: ModelName,
    /// Workers whose announcement of it has not expired.
    pub live_workers: u64,
    /// When a worker last announced it.
    pub last_seen_at: DateTime<Utc>,
    /// What its jobs may ask for, as the latest started worker serving it said; `None` when no
    /// worker set limits (its renderer has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::ModelLimits>,
}
