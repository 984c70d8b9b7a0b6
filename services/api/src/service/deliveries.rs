//! A batch's webhook delivery log.

use pixelfarm_core::*;

use super::BatchApi;
use super::views::{DeliveryPage, cut_page, page_limit};

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
        let next = cut_page(&mut deliveries, limit, |d| d.id);
        Ok(DeliveryPage { deliveries, next })
    }
}
