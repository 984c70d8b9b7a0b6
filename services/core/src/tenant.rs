//! What an operator sets per tenant ([`Quota`]), what a tenant uses of it ([`Usage`]), and the
//! records of its API keys ([`NewApiKey`], [`ApiKeyInfo`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::ids::TenantId;
use crate::manifest::BatchSpec;
use crate::params::Priority;
use crate::retention::Retention;

/// Limits of one tenant, stored with it; `None` is unlimited. Set with
/// `pixelfarm-scheduler tenant set-quota`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Jobs not in a final state (pending, queued, running, retryable) at once; a submit that
    /// would pass it is refused whole.
    pub max_queued_jobs: Option<u64>,
    /// Jobs submitted in any 24 hours (a rolling window, by the store's clock).
    pub max_jobs_per_day: Option<u64>,
    /// Watch streams open at once, per scheduler replica.
    pub max_watches: Option<u32>,
    /// Submits in a minute, per scheduler replica (idempotent resubmits included).
    pub submits_per_minute: Option<u32>,
    /// The highest batch priority the tenant may use: priority is ordered before fair share, so
    /// this is what keeps one tenant from starving the others.
    pub max_priority: Option<Priority>,
}

impl Quota {
    /// Whether [`Quota::admit`] needs the tenant's [`Usage`] (a limit on counted jobs is set).
    pub fn counts_usage(&self) -> bool {
        self.max_queued_jobs.is_some() || self.max_jobs_per_day.is_some()
    }

    /// Whether a new `batch` fits, the tenant using `usage` now (the stores call it in the
    /// submit's transaction).
    ///
    /// # Errors
    /// `QuotaExceeded` ([`Limit::refusal`]) naming the first limit the batch would pass.
    pub fn admit(&self, batch: &BatchSpec, usage: Usage) -> Result<()> {
        let jobs = batch.jobs.len() as u64;
        if let Some(max) = self.max_priority
            && batch.priority > max
        {
            return Err(Limit::Priority.refusal(
                u64::from(max.get()),
                &format!("this batch asks for priority {}", batch.priority.get()),
            ));
        }
        if let Some(max) = self.max_queued_jobs
            && usage.queued_jobs + jobs > max
        {
            return Err(Limit::QueuedJobs.refusal(
                max,
                &format!(
                    "{} jobs are not finished and this batch adds {jobs}",
                    usage.queued_jobs
                ),
            ));
        }
        if let Some(max) = self.max_jobs_per_day
            && usage.jobs_last_day + jobs > max
        {
            return Err(Limit::JobsPerDay.refusal(
                max,
                &format!(
                    "{} jobs were submitted in the last 24 hours and this batch adds {jobs}",
                    usage.jobs_last_day
                ),
            ));
        }
        Ok(())
    }
}

/// A tenant's use of the limits its store keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Jobs not in a final state.
    pub queued_jobs: u64,
    /// Jobs submitted in the last 24 hours.
    pub jobs_last_day: u64,
}

/// Which limit refused a request: the `reason` label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Quota::max_queued_jobs`].
    QueuedJobs,
    /// [`Quota::max_jobs_per_day`].
    JobsPerDay,
    /// [`Quota::max_watches`].
    Watches,
    /// [`Quota::submits_per_minute`].
    SubmitRate,
    /// [`Quota::max_priority`].
    Priority,
}

impl Limit {
    /// The quota field's name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::QueuedJobs => "max_queued_jobs",
            Limit::JobsPerDay => "max_jobs_per_day",
            Limit::Watches => "max_watches",
            Limit::SubmitRate => "submits_per_minute",
            Limit::Priority => "max_priority",
        }
    }

    /// The refusal of a request that would pass this limit, naming the limit, its value and the
    /// tenant's current usage (`usage` says what is counted, e.g. "12 jobs are not finished").
    /// The limit carries itself as the error's source, so callers can count refusals by
    /// [`Limit::of`] without reading the message.
    pub fn refusal(self, limit: u64, usage: &str) -> Error {
        let kind = match self {
            Limit::SubmitRate => ErrorKind::RateLimited,
            _ => ErrorKind::QuotaExceeded,
        };
        Error::with_source(
            kind,
            format!(
                "tenant quota `{}` is {limit}; {usage}; accepted: at most the quota (ask the operator to raise it)",
                self.as_str()
            ),
            self,
        )
    }

    /// The limit that refused `e`, when a [`Limit::refusal`] did.
    pub fn of(e: &Error) -> Option<Limit> {
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<Limit>().copied())
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over tenant quota `{}`", self.as_str())
    }
}

impl std::error::Error for Limit {}

/// A tenant as `tenant show` and the API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    #[allow(missing_docs)]
    pub id: TenantId,
    #[allow(missing_docs)]
    pub name: String,
    /// Fair-share weight.
    pub weight: u32,
    #[allow(missing_docs)]
    pub quota: Quota,
    /// Its own retention of finished batches' job rows; `None` follows the scheduler's default.
    pub retention: Option<Retention>,
    /// Whether its images get content credentials unless a manifest says otherwise
    /// (`output.content_credentials`); on for a new tenant.
    pub content_credentials: bool,
}

/// An API key to register: only its sha256 and a non-secret prefix are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// sha256 (hex) of the key.
    pub key_sha256: String,
    /// Shown in listings and named by `revoke` (see [`key_prefix`]).
    pub prefix: String,
    /// After this the key is refused; `None` never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Listed in `scheduler.tenants[].api_keys`: revoked at start once the config stops listing it.
    pub from_config: bool,
}

impl NewApiKey {
    /// The record of `key`.
    pub fn new(key: &str, expires_at: Option<DateTime<Utc>>, from_config: bool) -> Self {
        NewApiKey {
            key_sha256: crate::hash_api_key(key),
            prefix: key_prefix(key),
            expires_at,
            from_config,
        }
    }
}

/// Characters of a generated key (`pf_` and hex) kept as its prefix: 8 hex digits, 32 of its 256
/// random bits, enough to tell a tenant's keys apart and useless for guessing the rest.
const GENERATED_PREFIX_LEN: usize = 3 + 8;

/// The non-secret name of a key: the first characters of a generated `pf_` key, and `sha256:`
/// with 8 digits of the hash for any other key (keys written into config files may be short, so
/// none of their characters are shown).
pub fn key_prefix(key: &str) -> String {
    let generated = key.len() == 3 + 64
        && key.starts_with("pf_")
        && key[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if generated {
        key[..GENERATED_PREFIX_LEN].to_string()
    } else {
        format!("sha256:{}", &crate::hash_api_key(key)[..8])
    }
}

/// One API key as `tenant key list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// See [`key_prefix`].
    pub prefix: String,
    #[allow(missing_docs)]
    pub created_at: DateTime<Utc>,
    /// Last successful authentication, recorded at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    #[allow(missing_docs)]
    pub expires_at: Option<DateTime<Utc>>,
    #[allow(missing_docs)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Listed in the config file (see [`NewApiKey::from_config`]).
    pub from_config: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_show_nothing_of_short_keys() {
        let k = format!("pf_{}", "ab".repeat(32));
        assert_eq!(key_prefix(&k), "pf_abababab");
        let p = key_prefix("dev-key");
        assert!(p.starts_with("sha256:") && !p.contains("dev"), "{p}");
        assert_eq!(p.len(), 7 + 8);
    }

    #[test]
    fn refusals_name_the_limit_and_usage() {
        let e = Limit::QueuedJobs.refusal(100, "95 jobs are not finished, this batch adds 10");
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        let m = e.to_string();
        assert!(
            m.contains("max_queued_jobs` is 100") && m.contains("95 jobs"),
            "{m}"
        );
        assert_eq!(Limit::of(&e), Some(Limit::QueuedJobs));
        assert_eq!(
            Limit::SubmitRate.refusal(1, "x").kind(),
            ErrorKind::RateLimited
        );
    }
}
