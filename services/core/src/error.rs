//! One error type for every seam, with a small `Copy` kind the caller matches on.

use std::fmt;

/// What went wrong, as far as a caller deciding what to do next cares.
///
/// The worker picks retry vs dead-letter from this, never from a message string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The thing asked for does not exist (or belongs to another tenant).
    NotFound,
    /// The request conflicts with the current state (e.g. a unique key).
    Conflict,
    /// The input is malformed; retrying the same input fails the same way.
    Invalid,
    /// No or an unknown API key.
    Unauthenticated,
    /// The request would pass a limit the operator set for the tenant ([`crate::Quota`]).
    QuotaExceeded,
    /// The thing existed but is no longer kept (the jobs of a finished batch past its retention);
    /// asking again will not bring it back.
    Gone,
    /// Too many requests in a short time (a tenant's submits, or failed authentications from one
    /// address); the same request later may succeed.
    RateLimited,
    /// A dependency is unreachable or overloaded; retrying later may succeed.
    Transient,
    /// The work can never succeed (unknown model, bad weights); do not retry.
    Permanent,
}

impl ErrorKind {
    /// Stable lowercase name, used in metrics labels and stored with dead jobs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Gone => "gone",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        }
    }

    /// Whether a job failing with this kind should be tried again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from any pixelfarm library: a kind, a lowercase message and the source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Shorthand for [`ErrorKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Transient`] with a source.
    pub fn transient(message: impl Into<String>, source: impl Into<Source>) -> Self {
        Error::with_source(ErrorKind::Transient, message, source)
    }

    /// Shorthand for [`ErrorKind::Permanent`].
    pub fn permanent(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Permanent, message)
    }

    /// A render stopped because its job was cancelled ([`ErrorKind::Conflict`]: the job's state
    /// changed under it).
    pub fn cancelled() -> Self {
        Error::new(ErrorKind::Conflict, "the job was cancelled while rendering")
    }

    /// The kind a caller matches on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message followed by every source, joined by `: `.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Result alias for pixelfarm libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An [`Error`] flattened into the one line of [`Error::chain`], with no source: what a binary
/// hands to `anyhow` (`?` converts it), so that its user reads that line. An `anyhow` error made
/// from the [`Error`] itself would print each source on a `Caused by:` line of its own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Chained(String);

impl From<Error> for Chained {
    fn from(e: Error) -> Self {
        Chained(e.chain())
    }
}

/// `.chained()` on a [`Result`]: its error as a [`Chained`], for binaries that report errors
/// through `anyhow` (`settings.load().chained()?`).
pub trait ChainResult<T> {
    /// This result with its error flattened into a [`Chained`].
    ///
    /// # Errors
    /// The error of `self`, flattened.
    fn chained(self) -> Result<T, Chained>;
}

impl<T> ChainResult<T> for Result<T> {
    fn chained(self) -> Result<T, Chained> {
        self.map_err(Chained::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_is_the_whole_chain_with_no_source() {
        let io = std::io::Error::other("disk on fire");
        let e: Result<()> = Err(Error::transient("cannot read settings", io));
        let flat = e.chained().unwrap_err();
        assert_eq!(flat.to_string(), "cannot read settings: disk on fire");
        assert!(std::error::Error::source(&flat).is_none());
    }
}
