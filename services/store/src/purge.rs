//! The purge of finished batches' job rows, written once over the steps each store implements
//! ([`pixelfarm_core::retention`] says which rows go and when).

use pixelfarm_core::{PurgeOutcome, PurgedBatch, Result, Retention};

/// One store's statements of a purge, each its own short transaction.
pub(crate) trait PurgeSteps {
    /// How the store names a batch.
    type Batch;
    /// A batch taken whose rows may remain (a previous call filled its limit, or its leader
    /// died midway).
    async fn purging(&self) -> Result<Option<Self::Batch>>;
    /// Take the oldest finished batch past its retention (`default` for tenants without one):
    /// mark it before any row of it goes.
    async fn take_next(&self, default: Retention) -> Result<Option<Self::Batch>>;
    /// Delete at most `limit` rows of `batch`; returns how many went.
    async fn delete_rows(&self, batch: &Self::Batch, limit: u64) -> Result<u64>;
    /// `batch` has no rows left: it is no longer being purged. `None` when another call
    /// finished it.
    async fn finish(&self, batch: &Self::Batch) -> Result<Option<PurgedBatch>>;
}

/// [`pixelfarm_core::JobStore::purge_expired`] over a store's steps.
pub(crate) async fn purge_expired<S: PurgeSteps>(
    steps: &S,
    default: Retention,
    limit: u32,
) -> Result<PurgeOutcome> {
    let limit = u64::from(limit);
    let mut out = PurgeOutcome::default();
    while out.jobs < limit {
        let batch = match steps.purging().await? {
            Some(b) => b,
            None => match steps.take_next(default).await? {
                Some(b) => b,
                None => break,
            },
        };
        let room = limit - out.jobs;
        let deleted = steps.delete_rows(&batch, room).await?;
        out.jobs += deleted;
        if deleted < room {
            out.batches.extend(steps.finish(&batch).await?);
        }
    }
    Ok(out)
}
