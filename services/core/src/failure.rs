//! Retry or dead-letter, decided once from the error kind and the attempt count.

use rand::Rng;
use std::time::Duration;

use crate::records::Failure;
use crate::{Error, ErrorKind};

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the second attempt (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// Delay after the `attempt`-th failure: uniform in `[cap/2, cap]` with `cap = base * 2^(attempt-1)`,
    /// so retries spread out but never come back sooner than half the nominal delay.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let cap = self.base.saturating_mul(1u32 << exp.min(20)).min(self.max);
        let half = cap / 2;
        half + cap.mul_f64(rand::rng().random_range(0.0..=0.5))
    }
}

/// What to record for a job whose `attempt`-th try (1-based) failed with `err`.
pub fn decide(err: &Error, attempt: u32, max_attempts: u32, backoff: &Backoff) -> Failure {
    let message = err.chain();
    match err.kind() {
        ErrorKind::Transient if attempt < max_attempts => Failure::Retry {
            delay: backoff.delay(attempt),
            kind: err.kind(),
            message,
        },
        ErrorKind::Transient => Failure::Dead {
            kind: err.kind(),
            message: format!("attempts exhausted ({attempt} of {max_attempts}): {message}"),
        },
        kind => Failure::Dead { kind, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_retries_until_attempts_run_out() {
        let b = Backoff::default();
        let e = Error::transient("s3 down", std::io::Error::other("refused"));
        assert!(matches!(decide(&e, 1, 3, &b), Failure::Retry { .. }));
        match decide(&e, 3, 3, &b) {
            Failure::Dead { message, .. } => {
                assert!(message.contains("attempts exhausted"), "{message}")
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn permanent_and_invalid_die_at_once() {
        let b = Backoff::default();
        for e in [
            Error::permanent("unknown model"),
            Error::invalid("bad size"),
        ] {
            assert!(matches!(decide(&e, 1, 5, &b), Failure::Dead { .. }));
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        for attempt in 1..40 {
            let d = b.delay(attempt);
            let cap = Duration::from_secs(2 * (1u64 << (attempt - 1).min(20))).min(b.max);
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {attempt}: {d:?} vs cap {cap:?}"
            );
        }
    }
}
