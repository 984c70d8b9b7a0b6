//! Watching a batch: one poll per watched batch, shared by its watches.

use futures::Stream;
use pixelfarm_core::*;
use std::sync::Arc;
use std::time::Duration;

use super::BatchApi;
use super::views::{BatchView, Seen};

/// How often a watched batch is re-read (once, however many watches follow it).
const WATCH_POLL: Duration = Duration::from_millis(250);

impl BatchApi {
    /// The batch now, then on every change of its counts or of whether a live worker serves its
    /// model, ending after the first view that is done. The watch holds one of the tenant's
    /// `max_watches` places on this replica until the stream is dropped.
    ///
    /// # Errors
    /// `QuotaExceeded` when the tenant has `max_watches` open; `NotFound` for an unknown batch
    /// or another tenant's.
    pub async fn watch(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
    ) -> Result<impl Stream<Item = Result<BatchView>> + Send + 'static> {
        let owner = self.store.tenant(tenant).await?;
        let gauge = self
            .metrics
            .tenant_watches
            .with_label_values(&[owner.name.as_str()]);
        let slot = self
            .watches
            .open(tenant, owner.quota.max_watches, gauge)
            .inspect_err(|e| self.metrics.refused(&owner.name, e))?;
        let first = self.batch(tenant, batch).await?;
        let mut seen = self.clone().poll(tenant, batch, first);
        Ok(async_stream::stream! {
            let _slot = slot;
            loop {
                let now = seen.borrow_and_update().clone();
                match now {
                    Seen::View(view) => {
                        let done = view.done;
                        yield Ok(*view);
                        if done {
                            break;
                        }
                    }
                    Seen::Failed(kind, message) => {
                        yield Err(Error::new(kind, message));
                        if kind != ErrorKind::Transient {
                            break;
                        }
                    }
                }
                // The poll ended (done, a fatal error): its last value was the one above.
                if seen.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// The poll of `batch`: the running one when another watch follows the batch, else a new
    /// one starting from `first`. One poll reads the batch every [`WATCH_POLL`] however many
    /// watches follow it, and ends when the batch is done, on a fatal error, or when its last
    /// watch is dropped.
    fn poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        first: BatchView,
    ) -> tokio::sync::watch::Receiver<Seen> {
        let mut polls = self.polls.lock().expect("polls lock");
        if let Some(rx) = polls.get(&(tenant, batch))
            && rx.has_changed().is_ok()
        {
            return rx.clone();
        }
        let (tx, rx) = tokio::sync::watch::channel(Seen::View(Box::new(first)));
        polls.insert((tenant, batch), rx.clone());
        drop(polls);
        tokio::spawn(self.run_poll(tenant, batch, tx));
        rx
    }

    async fn run_poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        tx: tokio::sync::watch::Sender<Seen>,
    ) {
        loop {
            if tx.borrow().is_final() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_POLL) => {}
                _ = tx.closed() => break,
            }
            let next = match self.batch(tenant, batch).await {
                Ok(view) => Seen::View(Box::new(view)),
                Err(e) => {
                    // The watches get the kind and message; the chain is logged here, once.
                    tracing::warn!(%batch, error = %e.chain(), "watch poll failed");
                    Seen::Failed(e.kind(), e.to_string())
                }
            };
            tx.send_if_modified(|last| {
                let changed = last.differs(&next);
                if changed {
                    *last = next;
                }
                changed
            });
        }
        drop(tx);
        let mut polls = self.polls.lock().expect("polls lock");
        // Only this poll's entry: a new poll of the batch may have replaced it.
        if polls
            .get(&(tenant, batch))
            .is_some_and(|rx| rx.has_changed().is_err())
        {
            polls.remove(&(tenant, batch));
        }
    }
}
