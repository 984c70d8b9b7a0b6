//! Maintenance the leader runs every interval, each task paging until it has nothing left:
//! - **rescuer**: jobs whose lease expired (worker killed, OOM-killed or partitioned) → `pending`
//!   without spending an attempt, or `dead` (`crashed_worker`) once their leases expired
//!   `max_crashes` times;
//! - **retry promoter**: `retryable` jobs whose backoff elapsed → `pending`;
//! - **stale-queue check**: `queued` jobs not claimed for `stale_queued` (their message was lost,
//!   e.g. a broker restart without persistence) → `pending`, to be published again.

use pixelfarm_core::{JobStore, Result};
use std::sync::Arc;
use std::time::Duration;

use crate::SchedulerMetrics;

/// Rows changed per statement.
pub const DEFAULT_PAGE: u32 = 1000;

/// Default for [`Maintenance::stale_queued`].
pub const DEFAULT_STALE_QUEUED: Duration = Duration::from_secs(600);
/// Default for [`Maintenance::max_crashes`]: a job that took down three workers is the cause, not
/// a bystander (a bystander would have to land on three crashing workers in a row).
pub const DEFAULT_MAX_CRASHES: u32 = 3;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Expired leases returned to pending.
    pub rescued: u64,
    /// Jobs whose lease expired `max_crashes` times, now dead.
    pub rescued_dead: u64,
    /// Retryable jobs made pending.
    pub promoted: u64,
    /// Queued jobs made pending.
    pub requeued: u64,
}

/// The maintenance tasks.
pub struct Maintenance {
    store: Arc<dyn JobStore>,
    metrics: Arc<SchedulerMetrics>,
    /// Queued this long without a claim means the message was lost.
    pub stale_queued: Duration,
    /// Lease expiries after which a job is dead as the one crashing its workers.
    pub max_crashes: u32,
}

impl Maintenance {
    /// Maintenance over `store`.
    pub fn new(
        store: Arc<dyn JobStore>,
        metrics: Arc<SchedulerMetrics>,
        stale_queued: Duration,
        max_crashes: u32,
    ) -> Self {
        Maintenance {
            store,
            metrics,
            stale_queued,
            max_crashes: max_crashes.max(1),
        }
    }

    /// Run every task until each has nothing left to do.
    ///
    /// # Errors
    /// Store errors (the next pass tries again).
    pub async fn run_once(&self) -> Result<Outcome> {
        let mut out = Outcome::default();
        loop {
            let r = self
                .store
                .rescue_expired(DEFAULT_PAGE, self.max_crashes)
                .await?;
            out.rescued += r.to_pending;
            out.rescued_dead += r.to_dead;
            if r.to_pending + r.to_dead < u64::from(DEFAULT_PAGE) {
                break;
            }
        }
        out.promoted = page(|| self.store.promote_retryable(DEFAULT_PAGE)).await?;
        out.requeued = page(|| {
            self.store
                .requeue_stale_queued(self.stale_queued, DEFAULT_PAGE)
        })
        .await?;
        self.metrics
            .lease_rescues
            .inc_by(out.rescued + out.rescued_dead);
        self.metrics.retries_promoted.inc_by(out.promoted);
        self.metrics.stale_queued_requeued.inc_by(out.requeued);
        if out != Outcome::default() {
            tracing::info!(
                rescued = out.rescued,
                rescued_dead = out.rescued_dead,
                promoted = out.promoted,
                requeued = out.requeued,
                "maintenance"
            );
        }
        Ok(out)
    }
}

async fn page<F, Fut>(mut step: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < u64::from(DEFAULT_PAGE) {
            return Ok(total);
        }
    }
}
