//! The leader loop: whoever holds the store's leader lock runs the dispatcher and maintenance,
//! and the retention purge on a task beside them; the others wait and try again, so a crashed
//! leader is replaced within `RETRY`.
//!
//! The leader confirms the lock before every pass (a round trip on the lock's own connection):
//! when that connection dies — a Postgres restart, a failover, a network cut — the lock is gone
//! with it, and the leader stops acting at its next pass instead of on a timer, so two leaders
//! never act on a stale belief for longer than one pass.

use pixelfarm_core::JobStore;
use pixelfarm_runtime::health::Beat;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::SchedulerMetrics;
use crate::dispatcher::Dispatcher;
use crate::maintenance::Maintenance;
use crate::retention::Purger;

/// How often a follower tries to become leader.
const RETRY: Duration = Duration::from_secs(2);
/// Pause after a failed dispatch pass (broker or database away): the broker reconnects within
/// its own backoff, and a pass every dispatch interval would only repeat the same warning.
const FAILED_PASS_PAUSE: Duration = Duration::from_millis(500);

/// Periods of the leader's loops.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Between dispatcher passes that found nothing more to do.
    pub dispatch: Duration,
    /// Between maintenance passes.
    pub maintenance: Duration,
}

/// What the leader runs.
pub struct Duties {
    /// Publishes pending jobs.
    pub dispatcher: Dispatcher,
    /// The rescuer, the retry promoter and the stale-queue check, every maintenance interval.
    pub maintenance: Maintenance,
    /// The retention purge, on a task of its own while this replica leads.
    pub purger: Arc<Purger>,
}

/// Run until `stop`: lead when possible, follow otherwise. `beat` beats after every pass (and
/// every follower attempt), so a pass stuck on a dependency shows in the health checks. The purge
/// runs while this replica leads, and is stopped (its chunk in flight finished) before it follows.
pub async fn run(
    store: Arc<dyn JobStore>,
    duties: Duties,
    metrics: Arc<SchedulerMetrics>,
    every: Intervals,
    beat: Beat,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        beat.beat();
        let lead = match store.try_lead().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e.chain(), "cannot try the leader lock");
                None
            }
        };
        let Some(mut lead) = lead else {
            tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(RETRY) => continue }
        };
        tracing::info!("became leader");
        metrics.is_leader.set(1);
        let purge_stop = stop.child_token();
        let purge = tokio::spawn({
            let (purger, purge_stop) = (duties.purger.clone(), purge_stop.clone());
            async move { purger.run(purge_stop).await }
        });
        let mut next_maintenance = tokio::time::Instant::now();
        loop {
            beat.beat();
            if !lead.still_leader().await {
                tracing::warn!("lost the leader lock");
                break;
            }
            let now = tokio::time::Instant::now();
            if now >= next_maintenance {
                if let Err(e) = duties.maintenance.run_once().await {
                    tracing::warn!(error = %e.chain(), "maintenance pass failed");
                }
                next_maintenance = now + every.maintenance;
            }
            let pause = match duties.dispatcher.run_once().await {
                Ok(o) if o.more => None,
                Ok(_) => Some(every.dispatch),
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "dispatch pass failed");
                    Some(every.dispatch.max(FAILED_PASS_PAUSE))
                }
            };
            if let Some(pause) = pause {
                tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(pause) => {} }
            }
            if stop.is_cancelled() {
                break;
            }
        }
        purge_stop.cancel();
        if let Err(e) = purge.await {
            tracing::error!(error = %e, "the retention task failed");
        }
        metrics.is_leader.set(0);
    }
}
