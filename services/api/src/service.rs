//! [`BatchApi`]: every API call, scoped to the caller's tenant.
//!
//! Here: [`BatchApi`] itself, reading batches, jobs and images, and cancelling. Its other calls
//! are each in a module of their own: `auth` (API keys and failed authentications), `console`
//! (what the web console adds: batch listing, reviews, sessions), `submit`
//! (manifests), `inputs` (uploads and the init images a manifest names), `watch` (one poll per
//! watched batch, shared by its watches) with `wakers` (the store's change feed waking those
//! polls); `views` holds what the calls answer.

mod auth;
mod console;
mod deliveries;
mod inputs;
mod submit;
mod views;
mod wakers;
mod watch;

pub use views::{
    BatchView, DEFAULT_PAGE, DeliveryPage, JobPage, MAX_BATCH_PAGE, MAX_PAGE, UploadedInput,
    page_limit,
};

use bytes::Bytes;
use pixelfarm_core::*;
use pixelfarm_image::output::has_thumbnail;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::ApiMetrics;
use crate::limits::{FailedAuth, SubmitRate, Watches};
use views::Seen;

/// Submits parsed and stored at once: each holds its manifest ([`MAX_MANIFEST_BYTES`]) and the
/// jobs of one insert statement (they are built as they are written, whatever the batch's size),
/// and keeps one database connection for its transaction; the blocking pool's other threads stay
/// free for image decoding. Uploads share these slots: each holds its bytes
/// ([`MAX_INPUT_BYTES`]) and one decode ([`pixelfarm_image::input::MAX_DECODE_ALLOC`]).
pub const MAX_CONCURRENT_SUBMITS: usize = 2;

/// How long a submit or an upload waits for one of those slots before it is refused as
/// `Transient` (HTTP 503, gRPC UNAVAILABLE; clients retry): a short burst queues, a flood is
/// turned away.
pub const SUBMIT_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// A watched batch is re-read this long after its last read when no change of it was announced:
/// for announcements lost on the way, and for `live_workers`, which no job change announces.
pub const DEFAULT_WATCH_FALLBACK: Duration = Duration::from_secs(5);

/// The refusal of an upload over [`MAX_INPUT_BYTES`] (`size` when known: a transport that stops
/// reading at the limit does not know it).
pub(crate) fn upload_too_large(size: Option<u64>) -> String {
    let is = size.map_or_else(
        || format!("larger than {MAX_INPUT_BYTES}"),
        |n| n.to_string(),
    );
    format!("the upload is {is} bytes; accepted: at most {MAX_INPUT_BYTES} bytes")
}

/// The API's one implementation.
pub struct BatchApi {
    store: Arc<dyn JobStore>,
    blob: Arc<dyn BlobStore>,
    max_attempts: u32,
    /// `scheduler.models`: accepted at submit although no worker has served them yet.
    allowed_models: Vec<ModelName>,
    metrics: ApiMetrics,
    /// [`MAX_CONCURRENT_SUBMITS`] permits, each held from parsing to the stored batch.
    submits: Arc<tokio::sync::Semaphore>,
    /// Failed authentications per client address (refused before the key lookup once spent).
    failed_auth: FailedAuth,
    /// Submits per tenant and minute (`submits_per_minute`).
    submit_rate: SubmitRate,
    /// Watches open per tenant (`max_watches`).
    watches: Watches,
    /// The poll of each watched batch, shared by its watches.
    polls: std::sync::Mutex<HashMap<(TenantId, BatchId), tokio::sync::watch::Receiver<Seen>>>,
    /// Wakes the poll of a watched batch when the store announces a change of it.
    wakers: wakers::Wakers,
    /// A watched batch is re-read this long after its last read without a change announced.
    watch_fallback: Duration,
    /// Which receivers a manifest's `webhook.url` may name (`scheduler.webhooks`).
    webhook_policy: WebhookPolicy,
    /// Presigned URLs of the images in job pages (`blob.signed_urls`).
    signed_urls: Option<UrlSigning>,
}

impl BatchApi {
    /// An API over `store` and `blob`; new jobs get `max_attempts` attempts. A submit is accepted
    /// for a model some worker ever announced (see [`JobStore::model_presence`]) or one of
    /// `allowed_models`, and refused for any other.
    pub fn new(
        store: Arc<dyn JobStore>,
        blob: Arc<dyn BlobStore>,
        max_attempts: u32,
        allowed_models: Vec<ModelName>,
        metrics: ApiMetrics,
    ) -> Self {
        BatchApi {
            store,
            blob,
            max_attempts,
            allowed_models,
            metrics,
            submits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SUBMITS)),
            failed_auth: FailedAuth::default(),
            submit_rate: SubmitRate::default(),
            watches: Watches::default(),
            polls: Default::default(),
            wakers: Default::default(),
            watch_fallback: DEFAULT_WATCH_FALLBACK,
            webhook_policy: WebhookPolicy::default(),
            signed_urls: None,
        }
    }

    /// Answer each succeeded job with a presigned URL of its image (`JobRecord::image_url`);
    /// `None` (the default) answers none.
    pub fn with_signed_urls(mut self, urls: Option<UrlSigning>) -> Self {
        self.signed_urls = urls;
        self
    }

    /// Accept a manifest's `webhook.url` only under `policy` (the default allows any host at a
    /// public address).
    pub fn with_webhook_policy(mut self, policy: WebhookPolicy) -> Self {
        self.webhook_policy = policy;
        self
    }

    /// Re-read a watched batch `every` this long when no change of it is announced (default
    /// [`DEFAULT_WATCH_FALLBACK`]).
    pub fn with_watch_fallback(mut self, every: Duration) -> Self {
        self.watch_fallback = every;
        self
    }

    /// Metrics handle (for request counting in the transports).
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

    /// A batch with its progress.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn batch(&self, tenant: TenantId, batch: BatchId) -> Result<BatchView> {
        let mut view: BatchView = self.store.batch(tenant, batch).await?.into();
        self.count_live_workers(std::slice::from_mut(&mut view))
            .await?;
        Ok(view)
    }

    /// A page of jobs after `after`, in id order, with the cursor of the next page whenever more
    /// jobs follow. `limit` is `1..=`[`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
    ///
    /// # Errors
    /// `Invalid` for a limit out of range; `NotFound` for an unknown batch or another tenant's.
    pub async fn page(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<JobId>,
        limit: Option<u32>,
    ) -> Result<JobPage> {
        let limit = page_limit(limit)?;
        let mut jobs = self.store.jobs(tenant, batch, after, limit + 1).await?;
        let next = views::cut_page(&mut jobs, limit, |j| j.id);
        if let Some(urls) = &self.signed_urls {
            for job in &mut jobs {
                job.image_url = match (&job.object_key, job.state) {
                    (Some(key), JobState::Succeeded) => {
                        // Signing is CPU only (about 30 µs): a page of thousands yields to the
                        // runtime's other tasks as its budget runs out.
                        tokio::task::coop::consume_budget().await;
                        Some(urls.signer.signed_get(key, urls.expires_in).await?)
                    }
                    _ => None,
                };
            }
        }
        Ok(JobPage { jobs, next })
    }

    /// The signer of the images' URLs and their validity, when the deployment signs them.
    pub fn url_signing(&self) -> Option<&UrlSigning> {
        self.signed_urls.as_ref()
    }

    /// The jobs of [`BatchApi::page`] without the cursor.
    ///
    /// # Errors
    /// As [`BatchApi::page`].
    pub async fn jobs(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        Ok(self.page(tenant, batch, after, Some(limit)).await?.jobs)
    }

    /// Cancel every job of the batch not yet finished; running ones stop at their next denoising
    /// step once their worker's heartbeat finds the lease gone. Returns how many were cancelled.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64> {
        self.store.cancel(tenant, batch).await
    }

    /// The PNG of a succeeded job.
    ///
    /// # Errors
    /// `NotFound` for an unknown job, another tenant's, or one without an image yet.
    pub async fn image(&self, tenant: TenantId, job: JobId) -> Result<Bytes> {
        self.image_of(&self.job(tenant, job).await?).await
    }

    /// One job of the tenant.
    ///
    /// # Errors
    /// `NotFound` for an unknown job or another tenant's.
    pub async fn job(&self, tenant: TenantId, job: JobId) -> Result<JobRecord> {
        self.store.job(tenant, job).await
    }

    /// The image of `rec`, a job [`BatchApi::job`] read for the caller.
    ///
    /// # Errors
    /// `NotFound` for a job without an image yet.
    pub async fn image_of(&self, rec: &JobRecord) -> Result<Bytes> {
        self.blob.get(image_key(rec)?).await
    }

    /// The thumbnail the worker stored beside the image of `rec`; the image itself when it is
    /// its own preview (read without asking for a thumbnail first) or was rendered before
    /// workers made thumbnails.
    ///
    /// # Errors
    /// `NotFound` for a job without an image yet.
    pub async fn thumbnail_of(&self, rec: &JobRecord) -> Result<Bytes> {
        let key = image_key(rec)?;
        let (width, height) = rec.params.delivered_size()?;
        let thumb = thumbnail_key(key).filter(|_| has_thumbnail(width, height));
        match thumb {
            Some(thumb) => match self.blob.get(&thumb).await {
                Err(e) if e.kind() == ErrorKind::NotFound => self.blob.get(key).await,
                found => found,
            },
            None => self.blob.get(key).await,
        }
    }

    /// Set each unfinished view's live workers of its model (0 for a model no worker
    /// announced), reading the workers' presence once for all of them.
    async fn count_live_workers(&self, views: &mut [BatchView]) -> Result<()> {
        if views.iter().all(|v| v.done) {
            return Ok(());
        }
        let presence = self.store.model_presence().await?;
        for view in views.iter_mut().filter(|v| !v.done) {
            let live = presence.iter().find(|p| p.model == view.status.model);
            view.live_workers = Some(live.map_or(0, |p| p.live_workers));
        }
        Ok(())
    }
}

/// Where the image of `rec` is stored.
fn image_key(rec: &JobRecord) -> Result<&str> {
    rec.object_key
        .as_deref()
        .filter(|_| rec.state == JobState::Succeeded)
        .ok_or_else(|| {
            Error::not_found(format!("job {} has no image (state {})", rec.id, rec.state))
        })
}
