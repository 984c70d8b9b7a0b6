//! Watching a batch: one poll per watched batch, shared by its watches, woken by the store's
//! change feed through [`Wakers`](super::wakers::Wakers).

use futures::Stream;
use pixelfarm_core::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::BatchApi;
use super::views::{BatchView, Seen};

/// Reads of a watched batch are at least this far apart however often it changes (a busy batch
/// changes thousands of times a second), and however many watches follow it.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(250);

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
        // Following before the first read: a change committed after that read wakes the poll.
        let wake = self.wakers.follow(&self.store, batch).await?;
        let first = self.batch(tenant, batch).await?;
        let mut seen = self.clone().poll(tenant, batch, first, wake);
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
    /// one starting from `first`. One poll reads the batch when `wake` says it changed, at most
    /// every [`WATCH_MIN_INTERVAL`], and after the API's watch fallback without a change, however
    /// many watches follow it; it ends when the batch is done, on a fatal error, or when its last
    /// watch is dropped.
    fn poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        first: BatchView,
        wake: Arc<Notify>,
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
        tokio::spawn(self.run_poll(tenant, batch, tx, wake));
        rx
    }

    async fn run_poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        tx: tokio::sync::watch::Sender<Seen>,
        wake: Arc<Notify>,
    ) {
        // The first view was read just before the poll started.
        let mut last_read = Instant::now();
        loop {
            if tx.borrow().is_final() {
                break;
            }
            let next_read = async {
                tokio::time::sleep_until(last_read + WATCH_MIN_INTERVAL).await;
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(last_read + self.watch_fallback) => {}
                }
            };
            tokio::select! {
                _ = next_read => {}
                _ = tx.closed() => break,
            }
            last_read = Instant::now();
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
