//! [`BatchApi`]: every API call, scoped to the caller's tenant.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use pixelfarm_core::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ApiMetrics;
use crate::limits::{FailedAuth, SubmitRate, Watches};

/// Largest page of jobs one call returns.
pub const MAX_PAGE: u32 = 10_000;

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

/// How often a watched batch is re-read (once, however many watches follow it).
const WATCH_POLL: Duration = Duration::from_millis(250);

/// Submits parsed and expanded at once: each may hold up to `MAX_EXPANDED_BYTES` of jobs until
/// the store has written them, so two bound the scheduler's submit memory to about 1 GiB and
/// leave the blocking pool's other threads to image decoding. Uploads share these slots: each
/// holds its bytes ([`MAX_INPUT_BYTES`]) and one decode
/// ([`pixelfarm_image::input::MAX_DECODE_ALLOC`]).
pub const MAX_CONCURRENT_SUBMITS: usize = 2;

/// How long a submit or an upload waits for one of those slots before it is refused as
/// `Transient` (HTTP 503, gRPC UNAVAILABLE; clients retry): a short burst queues, a flood is
/// turned away.
pub const SUBMIT_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The refusal of an upload over [`MAX_INPUT_BYTES`] (`size` when known: a transport that stops
/// reading at the limit does not know it).
pub(crate) fn upload_too_large(size: Option<u64>) -> String {
    let is = size.map_or_else(
        || format!("larger than {MAX_INPUT_BYTES}"),
        |n| n.to_string(),
    );
    format!("the upload is {is} bytes; accepted: at most {MAX_INPUT_BYTES} bytes")
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

/// The sha256 of an input's `bytes` and what its header says, once they decode under the input
/// limits (`pixelfarm_image::input::decode_input`), both worked out on a blocking thread (up to
/// [`MAX_INPUT_BYTES`] of hashing and decoding). The outer error is a crashed decoder; the inner
/// one, what is wrong with the bytes.
async fn inspect_input(
    bytes: Bytes,
) -> Result<Result<(String, pixelfarm_image::input::InputInfo)>> {
    tokio::task::spawn_blocking(move || {
        pixelfarm_image::input::decode_input(&bytes).map(|(info, _)| (sha256_hex(&bytes), info))
    })
    .await
    .map_err(|e| Error::with_source(ErrorKind::Permanent, "image decoder crashed", e))
}

/// Refuse a batch with a job over its model's limits, naming the first such job, the parameter
/// and the limit, and how many jobs are over: no worker of the model would render them.
fn within_limits(spec: &BatchSpec, limits: &ModelLimits) -> Result<()> {
    let mut over = spec
        .jobs
        .iter()
        .filter_map(|j| limits.check(&spec.model, &j.params).err().map(|e| (j, e)));
    let Some((job, e)) = over.next() else {
        return Ok(());
    };
    let more = over.count();
    let more = if more == 0 {
        String::new()
    } else {
        format!(" ({more} more jobs are over the limits too)")
    };
    Err(Error::invalid(format!(
        "manifest job `{}`: {e}{more}",
        job.key
    )))
}

/// What a batch's watch poll last read: a view, or a failure's kind and message (the error
/// itself is not `Clone`; its chain is logged by the poll).
#[derive(Debug, Clone)]
enum Seen {
    View(Box<BatchView>),
    Failed(ErrorKind, String),
}

impl Seen {
    /// Whether the watches are told nothing more: the batch is done, or the error is fatal.
    fn is_final(&self) -> bool {
        match self {
            Seen::View(v) => v.done,
            Seen::Failed(kind, _) => *kind != ErrorKind::Transient,
        }
    }

    /// Whether `next` is news to the watches: other counts, a change of whether a live worker
    /// serves the model, or a failure (each one is sent).
    fn differs(&self, next: &Seen) -> bool {
        let key = |v: &BatchView| (v.status.counts.clone(), v.live_workers == Some(0));
        match (self, next) {
            (Seen::View(a), Seen::View(b)) => key(a.as_ref()) != key(b.as_ref()),
            _ => true,
        }
    }
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
        }
    }

    /// Metrics handle (for request counting in the transports).
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

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

    /// Parse, expand and store a manifest in one transaction.
    ///
    /// # Errors
    /// `RateLimited` over the tenant's `submits_per_minute` (counted before any parsing);
    /// `Invalid` naming the manifest field (a model no worker serves is refused here, before a
    /// job or a broker queue exists for it; text the policy refuses, [`text::check_batch`]);
    /// `QuotaExceeded` over the tenant's `max_priority`, `max_queued_jobs` or `max_jobs_per_day`
    /// (checked by the store as it writes the batch); `Transient` when
    /// [`MAX_CONCURRENT_SUBMITS`] submits stayed in progress for [`SUBMIT_QUEUE_WAIT`]; store
    /// errors.
    pub async fn submit(&self, tenant: TenantId, manifest: String) -> Result<SubmitOutcome> {
        self.submit_renaming_inputs(tenant, manifest, &HashMap::new())
            .await
    }

    /// [`BatchApi::submit`], with the input keys of the manifest found in `renamed` replaced by
    /// their value first: the embedded mode's manifests name local files, which it uploads
    /// ([`BatchApi::upload`]) before submitting. Every input is then checked as in `submit`.
    ///
    /// # Errors
    /// As [`BatchApi::submit`].
    pub async fn submit_renaming_inputs(
        &self,
        tenant: TenantId,
        manifest: String,
        renamed: &HashMap<String, String>,
    ) -> Result<SubmitOutcome> {
        let t0 = Instant::now();
        let owner = self.store.tenant(tenant).await?;
        let refused = |e: &Error| self.metrics.refused(&owner.name, e);
        self.submit_rate
            .admit(tenant, owner.quota.submits_per_minute)
            .inspect_err(refused)?;
        // A slot before any work: parsing and expanding are what the slots bound. The parse
        // holds it too, so a client that hangs up does not free it while its parse still runs.
        let slot = self.slot().await?;
        // Expanding a big manifest is CPU work: keep it off the async runtime.
        let (parsed, _slot) = tokio::task::spawn_blocking(move || {
            let parsed = parse_manifest(&manifest)
                .and_then(|spec| text::check_batch(&manifest, &spec).map(|()| spec))
                .map(|spec| (spec, manifest));
            (parsed, slot)
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Permanent, "manifest parser crashed", e))?;
        let (spec, manifest) = parsed?;
        let mut spec = spec;
        if let Some(limits) = self.check_model(&spec.model, &manifest).await? {
            within_limits(&spec, &limits)?;
        }
        drop(manifest);
        for init in spec.jobs.iter_mut().filter_map(|j| j.params.init.as_mut()) {
            for img in init.images_mut() {
                if let Some(key) = renamed.get(&img.key) {
                    img.key.clone_from(key);
                }
            }
        }
        self.pin_inputs(tenant, &mut spec).await?;
        let out = self
            .store
            .submit(tenant, &spec, self.max_attempts)
            .await
            .inspect_err(refused)?;
        if out.created {
            self.metrics.batches_submitted.inc();
            self.metrics
                .jobs_submitted
                .with_label_values(&[spec.model.as_str()])
                .inc_by(out.jobs);
        }
        self.metrics
            .submit_seconds
            .observe(t0.elapsed().as_secs_f64());
        Ok(out)
    }

    /// One of the [`MAX_CONCURRENT_SUBMITS`] slots, waiting at most [`SUBMIT_QUEUE_WAIT`].
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(SUBMIT_QUEUE_WAIT, self.submits.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Transient,
                    format!(
                        "the scheduler is busy: {MAX_CONCURRENT_SUBMITS} submits or uploads stayed in progress for {} s; accepted: retry later",
                        SUBMIT_QUEUE_WAIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "submit slots closed", e))
    }

    /// Check an init image or mask and store it under the tenant's prefix
    /// ([`input_prefix`]) as `name` (its sha256 when `None`), replacing an earlier upload of that
    /// name. The bytes are checked before anything is stored: at most [`MAX_INPUT_BYTES`], a PNG,
    /// JPEG or WebP whose header says at most [`ImageSize::MAX_SIDE`] pixels a side, and pixels
    /// that decode under the decoder's limits. A refused upload stores nothing.
    ///
    /// # Errors
    /// `Invalid` naming the name or what the bytes are and what is accepted; `Transient` as
    /// [`BatchApi::submit`] when the slots stay busy; store errors.
    pub async fn upload(
        &self,
        tenant: TenantId,
        name: Option<&str>,
        bytes: Bytes,
    ) -> Result<UploadedInput> {
        let name = name.map(InputName::parse).transpose()?;
        let size = bytes.len() as u64;
        if size > MAX_INPUT_BYTES {
            return Err(Error::invalid(upload_too_large(Some(size))));
        }
        let _slot = self.slot().await?;
        let (sha256, info) = inspect_input(bytes.clone())
            .await?
            .map_err(|e| Error::invalid(format!("the upload {e}")))?;
        let key = name
            .unwrap_or_else(|| InputName::from_sha256(&sha256))
            .key(tenant, info.format);
        self.blob
            .put(&key, bytes, info.format.content_type())
            .await?;
        Ok(UploadedInput {
            key,
            sha256,
            format: info.format,
            width: info.width,
            height: info.height,
            bytes: size,
        })
    }

    /// Refuse a model that no worker ever announced and that `scheduler.models` does not list,
    /// naming the ones accepted: its jobs could never run. The model's limits, when a worker set
    /// some.
    async fn check_model(&self, model: &ModelName, manifest: &str) -> Result<Option<ModelLimits>> {
        let presence = self.store.model_presence().await?;
        if let Some(p) = presence.iter().find(|p| &p.model == model) {
            return Ok(p.limits);
        }
        if self.allowed_models.contains(model) {
            return Ok(None);
        }
        let accepted: std::collections::BTreeSet<&str> = presence
            .iter()
            .map(|p| p.model.as_str())
            .chain(self.allowed_models.iter().map(ModelName::as_str))
            .collect();
        let accepted = if accepted.is_empty() {
            "none yet: start a worker serving it (worker.models) or list it in scheduler.models"
                .to_string()
        } else {
            format!(
                "{} (served by workers, or listed in scheduler.models)",
                accepted.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        Err(field_error_in(
            manifest,
            "model",
            &format!("`{model}` is served by no worker; accepted: {accepted}"),
        ))
    }

    /// Live workers of `model` (0 for a model no worker announced).
    async fn live_workers(&self, model: &ModelName) -> Result<u64> {
        Ok(self
            .store
            .model_presence()
            .await?
            .into_iter()
            .find(|p| &p.model == model)
            .map_or(0, |p| p.live_workers))
    }

    /// Check every init image and mask of `spec` (fetched once per key: it is one of `tenant`'s
    /// uploads, decodes, masks match their image's size) and pin its sha256 on every job that
    /// uses it, so output keys and provenance name the exact pixels. A sha256 given in the
    /// manifest must match.
    async fn pin_inputs(&self, tenant: TenantId, spec: &mut BatchSpec) -> Result<()> {
        // key -> (sha256, width, height)
        let mut seen: HashMap<String, (String, u32, u32)> = Default::default();
        for job in &mut spec.jobs {
            let Some(init) = &mut job.params.init else {
                continue;
            };
            let mut image_size = None;
            for (field, img) in [
                ("init.image", Some(&mut init.image)),
                ("init.mask", init.mask.as_mut()),
            ] {
                let Some(img) = img else { continue };
                if !seen.contains_key(&img.key) {
                    let checked = self.check_input(tenant, field, &img.key).await?;
                    seen.insert(img.key.clone(), checked);
                }
                let (sha, w, h) = &seen[&img.key];
                if let Some(given) = &img.sha256
                    && given != sha
                {
                    return Err(Error::invalid(format!(
                        "manifest field `{field}.sha256`: `{}` has sha256 {sha}; the manifest pins {given}",
                        img.key
                    )));
                }
                match image_size {
                    None => image_size = Some((*w, *h)),
                    Some((iw, ih)) if (iw, ih) != (*w, *h) => {
                        return Err(Error::invalid(format!(
                            "manifest field `{field}`: mask `{}` is {w}x{h}; accepted: the init image's size, {iw}x{ih}",
                            img.key
                        )));
                    }
                    Some(_) => {}
                }
                img.sha256 = Some(sha.clone());
            }
        }
        Ok(())
    }

    /// sha256 and size of the input image `key`, which must be one of `tenant`'s uploads and
    /// decode within the limits ([`pixelfarm_image::input`]).
    ///
    /// A key outside `tenant`'s prefix gets the very error of a missing one, before the store is
    /// asked: the answer says nothing about another tenant's objects.
    async fn check_input(
        &self,
        tenant: TenantId,
        field: &str,
        key: &str,
    ) -> Result<(String, u32, u32)> {
        let shown = text::printable(key);
        let missing = || {
            Error::invalid(format!(
                "manifest field `{field}`: `{shown}` is not one of your inputs; accepted: a key that an upload answered (`pixelfarm upload FILE`, PUT /v1/inputs/{{name}}), which starts with `{}`",
                input_prefix(tenant)
            ))
        };
        if !is_tenant_input(tenant, key) {
            return Err(missing());
        }
        let bytes = self
            .blob
            .get_limited(key, MAX_INPUT_BYTES)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => missing(),
                // The key is well-formed (checked above): the object is over the limit.
                ErrorKind::Invalid => Error::invalid(format!("manifest field `{field}`: {e}")),
                _ => e,
            })?;
        let (sha, info) = inspect_input(bytes)
            .await?
            .map_err(|e| Error::invalid(format!("manifest field `{field}`: `{shown}` {e}")))?;
        Ok((sha, info.width, info.height))
    }

    /// A batch with its progress.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn batch(&self, tenant: TenantId, batch: BatchId) -> Result<BatchView> {
        let mut view: BatchView = self.store.batch(tenant, batch).await?.into();
        if !view.done {
            view.live_workers = Some(self.live_workers(&view.status.model).await?);
        }
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
        // One row more than asked says whether another page follows, so a page that ends exactly
        // at the last job has no cursor and every other full page has one.
        let mut jobs = self.store.jobs(tenant, batch, after, limit + 1).await?;
        let next = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next })
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

    /// The batch now, then on every change of its counts or of whether a live worker serves its
    /// model, ending after the first view that is done. The watch holds one of the tenant's
    /// `max_watches` places on this replica until the stream is dropped.
    ///
    /// # Errors
    /// `QuotaExceeded` when the tenant has `max_watches` open; `NotFound` for an unknown batch
    /// or another tenant's.
    pub async fn watch(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
    ) -> Result<impl Stream<Item = Result<BatchView>> + Send + 'static> {
        let owner = self.store.tenant(tenant).await?;
        let gauge = self
            .metrics
            .tenant_watches
            .with_label_values(&[owner.name.as_str()]);
        let slot = self
            .watches
            .open(tenant, owner.quota.max_watches, gauge)
            .inspect_err(|e| self.metrics.refused(&owner.name, e))?;
        let first = self.batch(tenant, batch).await?;
        let mut seen = self.clone().poll(tenant, batch, first);
        Ok(async_stream::stream! {
            let _slot = slot;
            loop {
                let now = seen.borrow_and_update().clone();
                match now {
                    Seen::View(view) => {
                        let done = view.done;
                        yield Ok(*view);
                        if done {
                            break;
                        }
                    }
                    Seen::Failed(kind, message) => {
                        yield Err(Error::new(kind, message));
                        if kind != ErrorKind::Transient {
                            break;
                        }
                    }
                }
                // The poll ended (done, a fatal error): its last value was the one above.
                if seen.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// The poll of `batch`: the running one when another watch follows the batch, else a new
    /// one starting from `first`. One poll reads the batch every [`WATCH_POLL`] however many
    /// watches follow it, and ends when the batch is done, on a fatal error, or when its last
    /// watch is dropped.
    fn poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        first: BatchView,
    ) -> tokio::sync::watch::Receiver<Seen> {
        let mut polls = self.polls.lock().expect("polls lock");
        if let Some(rx) = polls.get(&(tenant, batch))
            && rx.has_changed().is_ok()
        {
            return rx.clone();
        }
        let (tx, rx) = tokio::sync::watch::channel(Seen::View(Box::new(first)));
        polls.insert((tenant, batch), rx.clone());
        drop(polls);
        tokio::spawn(self.run_poll(tenant, batch, tx));
        rx
    }

    async fn run_poll(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
        tx: tokio::sync::watch::Sender<Seen>,
    ) {
        loop {
            if tx.borrow().is_final() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_POLL) => {}
                _ = tx.closed() => break,
            }
            let next = match self.batch(tenant, batch).await {
                Ok(view) => Seen::View(Box::new(view)),
                Err(e) => {
                    // The watches get the kind and message; the chain is logged here, once.
                    tracing::warn!(%batch, error = %e.chain(), "watch poll failed");
                    Seen::Failed(e.kind(), e.to_string())
                }
            };
            tx.send_if_modified(|last| {
                let changed = last.differs(&next);
                if changed {
                    *last = next;
                }
                changed
            });
        }
        drop(tx);
        let mut polls = self.polls.lock().expect("polls lock");
        // Only this poll's entry: a new poll of the batch may have replaced it.
        if polls
            .get(&(tenant, batch))
            .is_some_and(|rx| rx.has_changed().is_err())
        {
            polls.remove(&(tenant, batch));
        }
    }

    /// The PNG of a succeeded job.
    ///
    /// # Errors
    /// `NotFound` for an unknown job, another tenant's, or one without an image yet.
    pub async fn image(&self, tenant: TenantId, job: JobId) -> Result<Bytes> {
        let rec = self.store.job(tenant, job).await?;
        let key = rec
            .object_key
            .filter(|_| rec.state == JobState::Succeeded)
            .ok_or_else(|| {
                Error::not_found(format!("job {job} has no image (state {})", rec.state))
            })?;
        self.blob.get(&key).await
    }
}
