//! A batch's webhook delivery log.

use pixelfarm_core::*;

use super::BatchApi;
use super::views::{DeliveryPage, page_limit};

impl BatchApi {
    /// A page of the webhook events of a batch of `tenant` after `after` (oldest first), each
    /// with every delivery attempt.
    ///
    /// # Errors
    /// `NotFound` for a batch the tenant does not own; `Invalid` for a limit out of range.
    pub async fn deliveries(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<EventId>,
        limit: Option<u32>,
    ) -> Result<DeliveryPage> {
        let limit = page_limit(limit)?;
        // The batch first: another tenant's batch is not found, not an empty log.
        self.store.batch(tenant, batch).await?;
        let mut deliveries = self
            .store
            .webhook_deliveries(tenant, batch, after, limit + 1)
            .await?;
        let next = if deliveries.len() > limit as usize {
            deliveries.truncate(limit as usize);
            deliveries.last().map(|d| d.id)
        } else {
            None
        };
        Ok(DeliveryPage { deliveries, next })
    }
}
