//! Reviews of rendered images (approve or reject, with who and when) and the web console's
//! sign-in sessions they are made in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::ids::TenantId;

/// A reviewer's decision on a succeeded job's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Good to hand on: `pixelfarm fetch --approved` exports it.
    Approved,
    /// Not to be used.
    Rejected,
}

impl Verdict {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approved => "approved",
            Verdict::Rejected => "rejected",
        }
    }

    /// Parse a stored or requested name.
    ///
    /// # Errors
    /// `Invalid` naming what is accepted.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "approved" => Ok(Verdict::Approved),
            "rejected" => Ok(Verdict::Rejected),
            other => Err(Error::invalid(format!(
                "`verdict` is `{}`; accepted: approved, rejected",
                crate::text::printable(other)
            ))),
        }
    }
}

/// The latest review of a job: what was decided, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Review {
    #[allow(missing_docs)]
    pub verdict: Verdict,
    /// The reviewer: the non-secret prefix of the API key they signed in with
    /// ([`crate::key_prefix`]).
    pub by: String,
    #[allow(missing_docs)]
    pub at: DateTime<Utc>,
}

/// Most jobs one review request may decide.
pub const MAX_REVIEW_JOBS: usize = 10_000;

/// How long a console session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A console session to open: only hashes are stored, the token itself lives in the browser's
/// HttpOnly cookie and the API key is never kept.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// sha256 (hex) of the session token the cookie carries.
    pub token_sha256: String,
    /// sha256 (hex) of the API key signed in with: the session ends when that key is revoked or
    /// expires.
    pub key_sha256: String,
    /// The token every state-changing request of the session must carry (CSRF).
    pub csrf: String,
    #[allow(missing_docs)]
    pub ttl: Duration,
}

/// An open console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    #[allow(missing_docs)]
    pub tenant: TenantId,
    /// Its API key's prefix, recorded as the reviewer.
    pub who: String,
    /// See [`NewSession::csrf`].
    pub csrf: String,
    #[allow(missing_docs)]
    pub expires_at: DateTime<Utc>,
}

impl NewSession {
    /// A session for the API key `key`: returns the token for the browser's cookie (64 hex digits
    /// from the OS-seeded CSPRNG) and what the store keeps of it.
    pub fn for_key(key: &str, ttl: Duration) -> (String, NewSession) {
        let token = random_hex();
        let new = NewSession {
            token_sha256: crate::sha256_hex(token.as_bytes()),
            key_sha256: crate::hash_api_key(key),
            csrf: random_hex(),
            ttl,
        };
        (token, new)
    }
}

/// 32 random bytes as hex.
fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
