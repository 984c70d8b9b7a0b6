//! What the calls answer: a batch with its progress, a page of jobs, a stored upload; and what
//! a watch poll last read.

use chrono::Utc;
use pixelfarm_core::*;
use serde::{Deserialize, Serialize};

/// Largest page of jobs one call returns.
pub const MAX_PAGE: u32 = 10_000;

/// Most batches one listing of a tenant's batches returns.
pub const MAX_BATCH_PAGE: u32 = 200;

/// Jobs per page when the caller names no limit.
pub const DEFAULT_PAGE: u32 = 1000;

/// One page of a batch's jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, in id order.
    pub jobs: Vec<JobRecord>,
    /// The `after` of the next page; `None` only when no job follows.
    pub next: Option<JobId>,
}

/// One page of a batch's webhook events with their attempts.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    /// The events, oldest first.
    pub deliveries: Vec<WebhookDelivery>,
    /// The `after` of the next page; `None` only when no event follows.
    pub next: Option<EventId>,
}

/// Cut `rows`, read with one row more than `limit`, to the page, and say the cursor of the next
/// page: the last row's, only when a row follows (so a page ending exactly at the last row has no
/// cursor, and every other full page has one).
pub(crate) fn cut_page<T, C>(rows: &mut Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Option<C> {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// The page size for `limit`: [`DEFAULT_PAGE`] when absent.
///
/// # Errors
/// `Invalid` naming the accepted range for 0 or more than [`MAX_PAGE`].
pub fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(format!(
            "`limit` {n} is out of range; accepted: 1 to {MAX_PAGE} (default {DEFAULT_PAGE})"
        ))),
    }
}

/// What an upload stored: the key to name in a manifest (`init.image.key`, `init.mask.key`) and
/// what the scheduler read from the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadedInput {
    /// `inputs/<tenant-id>/<name>.<ext>`.
    pub key: String,
    /// sha256 (lowercase hex) of the bytes, as pinned at submit.
    pub sha256: String,
    /// The encoding, sniffed from the bytes.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the object.
    pub bytes: u64,
}

/// A batch plus what clients derive from it: done, rate, ETA.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchView {
    /// The stored batch and its counts.
    #[serde(flatten)]
    pub status: BatchStatus,
    /// All jobs in a final state.
    pub done: bool,
    /// Jobs in total.
    pub total: u64,
    /// Finished jobs per second since the first start.
    pub rate_per_second: f64,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
    /// Workers serving the batch's model now (absent when not known); 0 while jobs wait means
    /// nothing renders them until a worker serving the model starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_workers: Option<u64>,
}

impl From<BatchStatus> for BatchView {
    fn from(status: BatchStatus) -> Self {
        let (rate, eta) = status.rate_and_eta(Utc::now());
        BatchView {
            done: status.is_done(),
            total: status.counts.total(),
            rate_per_second: rate,
            eta_seconds: eta,
            live_workers: None,
            status,
        }
    }
}

/// What a batch's watch poll last read: a view, or a failure's kind and message (the error
/// itself is not `Clone`; its chain is logged by the poll).
#[derive(Debug, Clone)]
pub(super) enum Seen {
    View(Box<BatchView>),
    Failed(ErrorKind, String),
}

impl Seen {
    /// Whether the watches are told nothing more: the batch is done, or the error is fatal.
    pub(super) fn is_final(&self) -> bool {
        match self {
            Seen::View(v) => v.done,
            Seen::Failed(kind, _) => *kind != ErrorKind::Transient,
        }
    }

    /// Whether `next` is news to the watches: other counts, a change of whether a live worker
    /// serves the model, or a failure (each one is sent).
    pub(super) fn differs(&self, next: &Seen) -> bool {
        let key = |v: &BatchView| (v.status.counts.clone(), v.live_workers == Some(0));
        match (self, next) {
            (Seen::View(a), Seen::View(b)) => key(a.as_ref()) != key(b.as_ref()),
            _ => true,
        }
    }
}
