//! What the web console asks beyond the API's calls: the tenant's batches, a batch's manifest,
//! reviews, and sign-in sessions (an API key exchanged for a session the browser holds by
//! cookie; the key itself is never kept).

use pixelfarm_core::*;
use std::net::IpAddr;

use super::BatchApi;
use super::views::{BatchView, MAX_BATCH_PAGE};

impl BatchApi {
    /// The tenant's batches with their progress, newest first, older than `before`, at most
    /// `limit` (`1..=`[`MAX_BATCH_PAGE`]).
    ///
    /// # Errors
    /// `Invalid` for a limit out of range; store errors.
    pub async fn batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<BatchView>> {
        if !(1..=MAX_BATCH_PAGE).contains(&limit) {
            return Err(Error::invalid(format!(
                "`limit` {limit} is out of range; accepted: 1 to {MAX_BATCH_PAGE}"
            )));
        }
        let batches = self.store.batches(tenant, before, limit).await?;
        let mut views: Vec<BatchView> = batches.into_iter().map(BatchView::from).collect();
        self.count_live_workers(&mut views).await?;
        Ok(views)
    }

    /// The manifest of a batch exactly as submitted.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn manifest(&self, tenant: TenantId, batch: BatchId) -> Result<String> {
        self.store.batch_manifest(tenant, batch).await
    }

    /// Record `verdict` by `by` on each of `jobs` (`None` clears their review), all or none.
    ///
    /// # Errors
    /// `Invalid` for no job or more than [`MAX_REVIEW_JOBS`], or when one is not a succeeded job
    /// of the tenant (then none changes); store errors.
    pub async fn review(
        &self,
        tenant: TenantId,
        jobs: &[JobId],
        verdict: Option<Verdict>,
        by: &str,
    ) -> Result<u64> {
        if jobs.is_empty() || jobs.len() > MAX_REVIEW_JOBS {
            return Err(Error::invalid(format!(
                "`jobs` lists {} jobs; accepted: 1 to {MAX_REVIEW_JOBS}",
                jobs.len()
            )));
        }
        self.store.review(tenant, jobs, verdict, by).await
    }

    /// Exchange an API key for a console session: the token for the browser's cookie, and the
    /// session. Counted and limited per client address as a failed API-key authentication is.
    ///
    /// # Errors
    /// `RateLimited` for an address that failed too often; `Unauthenticated` for an unknown,
    /// revoked or expired key; store errors.
    pub async fn sign_in(&self, peer: Option<IpAddr>, key: &str) -> Result<(String, Session)> {
        if let Some(p) = peer {
            self.admit_peer(p)?;
        }
        let key = key.trim();
        let opened = match key.is_empty() {
            true => None,
            false => {
                let (token, new) = NewSession::for_key(key, SESSION_TTL);
                self.store.open_session(&new).await?.map(|s| (token, s))
            }
        };
        opened.ok_or_else(|| {
            self.auth_failed(peer);
            Error::new(
                ErrorKind::Unauthenticated,
                "unknown, revoked or expired api key",
            )
        })
    }

    /// The session a console cookie's token opens.
    ///
    /// # Errors
    /// `Unauthenticated` for an unknown, expired or signed-out session, or one whose key was
    /// revoked or expired since; store errors.
    pub async fn session(&self, token: &str) -> Result<Session> {
        self.store
            .session(&sha256_hex(token.as_bytes()))
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthenticated,
                    "not signed in, or the session ended: sign in again",
                )
            })
    }

    /// End the session of a console cookie's token (sign out).
    ///
    /// # Errors
    /// Store errors.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        self.store
            .close_session(&sha256_hex(token.as_bytes()))
            .await
    }
}
