//! Retention of finished batches' job rows: how long a tenant's are kept ([`Retention`]) and what
//! one purge did ([`PurgeOutcome`]).
//!
//! What [`crate::JobStore::purge_expired`] does, checked by the store conformance suite:
//! - a batch is taken when every job of it is final (succeeded, dead, cancelled) and the last one
//!   finished more than its tenant's retention ago ([`crate::TenantInfo::retention`], else the
//!   call's default), by the store's clock; a batch with a job not final is never taken, however
//!   old, and a retention of [`Retention::Forever`] takes nothing;
//! - taking a batch sets its `jobs_purged_at` before any of its rows goes, so from then on `batch`
//!   says so and `jobs` answers `Gone`; jobs never leave a final state, so a taken batch stays
//!   finished;
//! - rows go oldest batch first, the rest of a batch before the next is taken, at most `limit` a
//!   call, each statement its own short transaction; the batch row (name, tags, manifest) stays;
//! - the call that deletes a batch's last rows lists it in [`PurgeOutcome::batches`], and no other
//!   call does (a leader that dies midway leaves the rest to the next one, which reports it).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::ids::{BatchId, JobId};

/// How long the job rows of a finished batch (every job final) are kept after its last job
/// finished; then the scheduler's leader deletes them and keeps the batch row (its name, tags and
/// manifest). Set per tenant with `pixelfarm-scheduler tenant set-retention`, by default
/// `scheduler.retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retention {
    /// Job rows are never deleted.
    Forever,
    /// Job rows go this long after the batch's last job finished; a zero duration keeps them
    /// forever, as stored (see [`Retention::from_seconds`]).
    For(Duration),
}

impl Retention {
    /// The retention stored as whole seconds, `0` being [`Retention::Forever`] (the tenants
    /// table's `job_retention_seconds`).
    pub fn from_seconds(secs: u64) -> Self {
        if secs == 0 {
            Retention::Forever
        } else {
            Retention::For(Duration::from_secs(secs))
        }
    }

    /// The inverse of [`Retention::from_seconds`] (sub-second parts are dropped, and a retention
    /// under a second is kept as one second: never as forever).
    pub fn as_seconds(self) -> u64 {
        match self {
            Retention::For(d) if !d.is_zero() => d.as_secs().max(1),
            _ => 0,
        }
    }

    /// The retention in (fractional) seconds for the stores' queries, `0.0` being forever.
    pub fn as_secs_f64(self) -> f64 {
        match self {
            Retention::Forever => 0.0,
            Retention::For(d) => d.as_secs_f64(),
        }
    }
}

impl std::fmt::Display for Retention {
    /// `never`, or the largest whole unit: `30d`, `12h`, `90m`, `45s` (`250ms` below a second).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = match self {
            Retention::For(d) if !d.is_zero() => *d,
            _ => return f.write_str("never"),
        };
        if d.subsec_nanos() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        match [(86_400, 'd'), (3_600, 'h'), (60, 'm')]
            .into_iter()
            .find(|(unit, _)| s % unit == 0)
        {
            Some((unit, c)) => write!(f, "{}{c}", s / unit),
            None => write!(f, "{s}s"),
        }
    }
}

/// A batch whose job rows retention deleted, the last of them by the call that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedBatch {
    #[allow(missing_docs)]
    pub id: BatchId,
    /// Its tenant's name.
    pub tenant: String,
    /// The batch's name.
    pub name: String,
    /// Jobs it had (all now deleted).
    pub jobs: u64,
}

/// What one [`crate::JobStore::purge_expired`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Job rows deleted, at most the call's `limit`.
    pub jobs: u64,
    /// Batches whose last job rows this call deleted: each is reported by one call only.
    pub batches: Vec<PurgedBatch>,
}

/// The answer to listing the jobs of a batch retention took at `at`.
pub fn jobs_gone(batch: BatchId, at: DateTime<Utc>) -> Error {
    Error::new(
        ErrorKind::Gone,
        format!(
            "the jobs of batch {batch} were deleted at {} by retention: a finished batch's jobs are kept for its tenant's retention, then only the batch's status remains",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
    )
}

/// The answer to reading a job no row holds: it never existed, is another tenant's, or went with
/// its finished batch's jobs.
pub fn job_not_found(job: JobId) -> Error {
    Error::not_found(format!(
        "job {job} not found; a finished batch's jobs are deleted once its tenant's retention passes (the batch's status says when)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_round_trip_as_seconds_and_print_in_whole_units() {
        assert_eq!(Retention::from_seconds(0), Retention::Forever);
        assert_eq!(Retention::Forever.as_seconds(), 0);
        assert_eq!(Retention::For(Duration::ZERO).as_seconds(), 0);
        let month = Retention::For(Duration::from_secs(30 * 86_400));
        assert_eq!(Retention::from_seconds(month.as_seconds()), month);
        assert_eq!(
            Retention::For(Duration::from_millis(10)).as_seconds(),
            1,
            "a short retention is never stored as forever"
        );
        let shown: Vec<String> = [
            Retention::Forever,
            month,
            Retention::For(Duration::from_secs(7_200)),
            Retention::For(Duration::from_secs(90 * 60)),
            Retention::For(Duration::from_secs(61)),
            Retention::For(Duration::from_millis(250)),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["never", "30d", "2h", "90m", "61s", "250ms"]);
    }
}
