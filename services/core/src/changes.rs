//! The change feed of batch progress: what [`JobStore::batch_changes`](crate::JobStore) streams.

use futures::stream::BoxStream;

use crate::ids::BatchId;

/// One announcement of a [`BatchChanges`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchChange {
    /// The counts of this batch changed, and the change is committed: a read now sees it. Several
    /// changes of a batch may come as one announcement.
    Batch(BatchId),
    /// Announcements may have been lost (the subscriber fell behind, or the store lost its feed
    /// and got it back): re-read every batch followed.
    Missed,
}

/// A subscription to the changes of every batch; it ends when the store closes its feed.
pub type BatchChanges = BoxStream<'static, BatchChange>;
