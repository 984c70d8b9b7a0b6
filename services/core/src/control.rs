//! Between a job's execution and its render thread: denoising progress flows one way (to the
//! heartbeat, which stores it), cancellation the other (the render stops between steps).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use utoipa::ToSchema;

/// Denoising steps done of a running attempt, as last reported by its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepProgress {
    /// Steps finished.
    pub done: u32,
    /// Steps the render takes.
    pub total: u32,
}

/// One job's render control, shared (cheaply cloned) by its execution and the render thread.
#[derive(Debug, Clone, Default)]
pub struct RenderControl(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// `done << 32 | total`, so a reader never sees one half of an update; 0 before any report.
    progress: AtomicU64,
    cancelled: AtomicBool,
}

impl RenderControl {
    /// A control with no progress, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// The render finished `done` of `total` steps.
    pub fn report(&self, done: u32, total: u32) {
        let packed = (u64::from(done) << 32) | u64::from(total);
        self.0.progress.store(packed, Ordering::Relaxed);
    }

    /// The last report, if any.
    pub fn progress(&self) -> Option<StepProgress> {
        let packed = self.0.progress.load(Ordering::Relaxed);
        (packed != 0).then_some(StepProgress {
            done: (packed >> 32) as u32,
            total: packed as u32,
        })
    }

    /// Ask the render to stop at its next step.
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::cancel`] was called on any clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_progress_and_cancellation() {
        let a = RenderControl::new();
        let b = a.clone();
        assert_eq!(b.progress(), None);
        a.report(3, 20);
        assert_eq!(b.progress(), Some(StepProgress { done: 3, total: 20 }));
        a.report(0, 1);
        assert_eq!(b.progress(), Some(StepProgress { done: 0, total: 1 }));
        assert!(!b.is_cancelled());
        b.cancel();
        assert!(a.is_cancelled());
    }
}
