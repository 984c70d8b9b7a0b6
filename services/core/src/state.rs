//! The job state machine, written once.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> pending: submit
//!     pending --> queued: dispatcher published
//!     pending --> running: worker claim (duplicate message)
//!     queued --> running: worker claim
//!     queued --> pending: rescuer (message lost)
//!     running --> succeeded: worker, lease held
//!     running --> retryable: worker, transient failure
//!     running --> dead: permanent failure / attempts exhausted
//!     running --> pending: rescuer (lease expired)
//!     retryable --> pending: promoter after backoff
//!     pending --> cancelled: cancel
//!     queued --> cancelled: cancel
//!     retryable --> cancelled: cancel
//!     running --> cancelled: cancel (the worker stops between denoising steps)
//! ```
//! Postgres enforces the same rules with an enum type and CHECK constraints
//! (`migrations/postgres/0001_initial.sql`).

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

use crate::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Written by submit, the rescuer and the retry promoter; left by the dispatcher (publish) or cancel.
    Pending,
    /// Set by the dispatcher once the broker confirmed the message; left by a worker's claim, cancel,
    /// or the rescuer when the message stays unclaimed too long.
    Queued,
    /// Set by a worker's claim (lease owner + `lease_until`); left by that worker, or by the rescuer
    /// once the lease expired.
    Running,
    /// Final. Set by the worker that held the lease after the image and provenance were uploaded.
    Succeeded,
    /// Set by a worker on a transient failure with a `run_after`; the promoter returns it to pending.
    Retryable,
    /// Final. Permanent failure, or attempts exhausted; `last_error` says why.
    Dead,
    /// Final. Set by cancel: before the job started, or while it runs (its worker sees the lease
    /// gone at the next heartbeat and stops the render between denoising steps).
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Retryable,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Retryable => "retryable",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// # Errors
    /// `Invalid` for an unknown name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown job state `{s}`")))
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether `self → to` is a transition of the machine above.
    pub fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Queued | Running | Cancelled)
                | (Queued, Running | Pending | Cancelled)
                | (Running, Succeeded | Retryable | Dead | Pending | Cancelled)
                | (Retryable, Pending | Cancelled)
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_have_no_exit() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_final()) {
            for to in JobState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        assert!(JobState::parse("done").is_err());
    }

    #[test]
    fn cancel_until_final() {
        for s in JobState::ALL {
            assert_eq!(s.can_move_to(JobState::Cancelled), !s.is_final(), "{s}");
        }
    }
}
