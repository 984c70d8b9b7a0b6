//! The wake-ups of the watched batches' polls, fed by the store's change feed
//! ([`JobStore::batch_changes`]).

use futures::StreamExt;
use pixelfarm_core::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// The wake-up of each watched batch's poll, notified when the store announces a change of the
/// batch (every poll on [`BatchChange::Missed`]).
#[derive(Default)]
pub(super) struct Wakers {
    /// Each watched batch's wake-up; its poll holds it, so an entry dies with its poll.
    by_batch: Arc<Mutex<HashMap<BatchId, Weak<Notify>>>>,
    /// Set once the task forwarding the store's announcements runs (started by the first watch).
    forwarding: tokio::sync::OnceCell<()>,
}

impl Wakers {
    /// The wake-up of `batch`, notified of every change committed from now on.
    pub(super) async fn follow(
        &self,
        store: &Arc<dyn JobStore>,
        batch: BatchId,
    ) -> Result<Arc<Notify>> {
        self.forwarding
            .get_or_try_init(|| async {
                let changes = store.batch_changes().await?;
                tokio::spawn(forward(changes, Arc::downgrade(&self.by_batch)));
                Ok::<_, Error>(())
            })
            .await?;
        let mut by_batch = self.by_batch.lock().expect("wakers lock");
        by_batch.retain(|_, wake| wake.strong_count() > 0);
        if let Some(wake) = by_batch.get(&batch).and_then(Weak::upgrade) {
            return Ok(wake);
        }
        let wake = Arc::new(Notify::new());
        by_batch.insert(batch, Arc::downgrade(&wake));
        Ok(wake)
    }
}

/// Wake the polls of the announced batches until the store closes its feed or the API is gone
/// (the polls then read on their fallback alone).
async fn forward(mut changes: BatchChanges, by_batch: Weak<Mutex<HashMap<BatchId, Weak<Notify>>>>) {
    while let Some(change) = changes.next().await {
        let Some(by_batch) = by_batch.upgrade() else {
            return;
        };
        let by_batch = by_batch.lock().expect("wakers lock");
        // A wake-up nobody waits on keeps one permit: a change during a read is not lost.
        match change {
            BatchChange::Batch(batch) => {
                if let Some(wake) = by_batch.get(&batch).and_then(Weak::upgrade) {
                    wake.notify_one();
                }
            }
            BatchChange::Missed => {
                for wake in by_batch.values().filter_map(Weak::upgrade) {
                    wake.notify_one();
                }
            }
        }
    }
}
