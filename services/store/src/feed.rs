//! The in-process fan-out of [`JobStore::batch_changes`](pixelfarm_core::JobStore::batch_changes)
//! both stores share: a broadcast channel whose subscribers are told
//! [`BatchChange::Missed`] when they fall behind.

use futures::StreamExt;
use pixelfarm_core::{BatchChange, BatchChanges, BatchId};
use std::collections::BTreeSet;
use tokio::sync::broadcast::{self, error::RecvError};

/// Announcements a subscriber may fall behind by before it is told [`BatchChange::Missed`]: a
/// second of a busy farm's completions, each a separate announcement at worst.
const FEED_CAPACITY: usize = 4096;

/// The sending side; clones announce to the same subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: broadcast::Sender<BatchChange>,
}

impl Feed {
    pub(crate) fn new() -> Self {
        Feed {
            tx: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// A new subscriber: it sees every announcement made from now on.
    pub(crate) fn subscribe(&self) -> BatchChanges {
        futures::stream::unfold(self.tx.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(change) => Some((change, rx)),
                Err(RecvError::Lagged(_)) => Some((BatchChange::Missed, rx)),
                Err(RecvError::Closed) => None,
            }
        })
        .boxed()
    }

    pub(crate) fn announce(&self, change: BatchChange) {
        // An error only says that nobody subscribes now: nobody to tell.
        let _ = self.tx.send(change);
    }

    /// Announce each of `batches` once (the batches of the jobs a committed write changed).
    pub(crate) fn announce_batches(&self, batches: impl IntoIterator<Item = BatchId>) {
        let batches: BTreeSet<BatchId> = batches.into_iter().collect();
        for b in batches {
            self.announce(BatchChange::Batch(b));
        }
    }
}
