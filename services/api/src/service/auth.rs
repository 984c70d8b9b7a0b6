//! Who is calling: API keys, and the addresses that failed to authenticate too often.

use pixelfarm_core::*;
use std::net::IpAddr;

use super::BatchApi;

impl BatchApi {
    /// The tenant of an `Authorization: Bearer <key>` value (a key neither revoked nor expired).
    ///
    /// # Errors
    /// `Unauthenticated` for a missing, malformed, unknown, revoked or expired key.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<TenantId> {
        let key = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthenticated,
                    "missing api key: send `authorization: Bearer <key>`",
                )
            })?;
        self.store
            .tenant_by_key(&hash_api_key(key))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthenticated,
                    "unknown, revoked or expired api key",
                )
            })
    }

    /// Refuse a client address that failed to authenticate too often (see
    /// [`crate::limits::FAILED_AUTH_BURST`]); the transports call it before anything else.
    ///
    /// # Errors
    /// `RateLimited`.
    pub fn admit_peer(&self, peer: IpAddr) -> Result<()> {
        self.failed_auth.check(peer).inspect_err(|_| {
            self.metrics
                .auth_failures
                .with_label_values(&["rate_limited"])
                .inc();
        })
    }

    /// Count a failed authentication of `peer` (its request was answered `unauthenticated`).
    pub fn auth_failed(&self, peer: Option<IpAddr>) {
        self.metrics
            .auth_failures
            .with_label_values(&["unauthenticated"])
            .inc();
        if let Some(peer) = peer {
            self.failed_auth.failed(peer);
        }
    }

    /// [`BatchApi::authenticate`] for a client at `peer`: refused before the key lookup when the
    /// address spent its failed authentications, and a failure counted against it.
    ///
    /// # Errors
    /// `RateLimited`, or as [`BatchApi::authenticate`].
    pub async fn authenticate_from(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&str>,
    ) -> Result<TenantId> {
        if let Some(p) = peer {
            self.admit_peer(p)?;
        }
        self.authenticate(authorization).await.inspect_err(|e| {
            if e.kind() == ErrorKind::Unauthenticated {
                self.auth_failed(peer);
            }
        })
    }
}
