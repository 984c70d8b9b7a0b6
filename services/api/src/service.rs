//! [`BatchApi`]: every API call, scoped to the caller's tenant.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use pixelfarm_core::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ApiMetrics;

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

/// How often a watch re-reads the batch.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// Submits parsed and expanded at once: each may hold up to `MAX_EXPANDED_BYTES` of jobs until
/// the store has written them, so two bound the scheduler's submit memory to about 1 GiB and
/// leave the blocking pool's other threads to image decoding.
pub const MAX_CONCURRENT_SUBMITS: usize = 2;

/// How long a submit waits for one of those slots before it is refused as `Transient` (HTTP 503,
/// gRPC UNAVAILABLE; clients retry): a short burst queues, a flood is turned away.
pub const SUBMIT_QUEUE_WAIT: Duration = Duration::from_secs(10);

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
        }
    }

    /// Metrics handle (for request counting in the transports).
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

    /// The tenant of an `Authorization: Bearer <key>` value.
    ///
    /// # Errors
    /// `Unauthenticated` for a missing, malformed or unknown key.
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
            .ok_or_else(|| Error::new(ErrorKind::Unauthenticated, "unknown api key"))
    }

    /// Parse, expand and store a manifest in one transaction.
    ///
    /// # Errors
    /// `Invalid` naming the manifest field (a model no worker serves is refused here, before a
    /// job or a broker queue exists for it; text the policy refuses, [`text::check_batch`]);
    /// `Transient` when [`MAX_CONCURRENT_SUBMITS`] submits stayed in progress for
    /// [`SUBMIT_QUEUE_WAIT`]; store errors.
    pub async fn submit(&self, tenant: TenantId, manifest: String) -> Result<SubmitOutcome> {
        let t0 = Instant::now();
        // A slot before any work: parsing and expanding are what the slots bound. The parse
        // holds it too, so a client that hangs up does not free it while its parse still runs.
        let slot = tokio::time::timeout(SUBMIT_QUEUE_WAIT, self.submits.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Transient,
                    format!(
                        "the scheduler is busy: {MAX_CONCURRENT_SUBMITS} submits stayed in progress for {} s; accepted: retry later",
                        SUBMIT_QUEUE_WAIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "submit slots closed", e))?;
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
        self.check_model(&spec.model, &manifest).await?;
        drop(manifest);
        self.pin_inputs(&mut spec).await?;
        let out = self.store.submit(tenant, &spec, self.max_attempts).await?;
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

    /// Refuse a model that no worker ever announced and that `scheduler.models` does not list,
    /// naming the ones accepted: its jobs could never run.
    async fn check_model(&self, model: &ModelName, manifest: &str) -> Result<()> {
        if self.allowed_models.contains(model) {
            return Ok(());
        }
        let presence = self.store.model_presence().await?;
        if presence.iter().any(|p| &p.model == model) {
            return Ok(());
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

    /// Check every init image and mask of `spec` (fetched once per key: it exists, decodes, masks
    /// match their image's size) and pin its sha256 on every job that uses it, so output keys and
    /// provenance name the exact pixels. A sha256 given in the manifest must match.
    async fn pin_inputs(&self, spec: &mut BatchSpec) -> Result<()> {
        // key -> (sha256, width, height)
        let mut seen: std::collections::HashMap<String, (String, u32, u32)> = Default::default();
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
                    let checked = self.check_input(field, &img.key).await?;
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

    /// sha256 and size of the input image `key`, which must exist and decode.
    async fn check_input(&self, field: &str, key: &str) -> Result<(String, u32, u32)> {
        let bytes = self.blob.get(key).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::Invalid => Error::invalid(format!(
                "manifest field `{field}`: `{key}` is not an object of the blob store; upload it first"
            )),
            _ => e,
        })?;
        let sha = sha256_hex(&bytes);
        let decoded =
            tokio::task::spawn_blocking(move || pixelfarm_render::output::decode_rgb(&bytes))
                .await
                .map_err(|e| Error::with_source(ErrorKind::Permanent, "image decoder crashed", e))?
                .map_err(|e| {
                    Error::invalid(format!(
                        "manifest field `{field}`: `{key}` {}; accepted: PNG, JPEG or WebP",
                        e.chain()
                    ))
                })?;
        let max = ImageSize::MAX_SIDE;
        if decoded.width > max || decoded.height > max {
            return Err(Error::invalid(format!(
                "manifest field `{field}`: `{key}` is {}x{}; accepted: at most {max} pixels a side",
                decoded.width, decoded.height
            )));
        }
        Ok((sha, decoded.width, decoded.height))
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

    /// Cancel the jobs that have not started.
    ///
    /// # Errors
    /// `NotFound` for an unknown batch or another tenant's.
    pub async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64> {
        self.store.cancel(tenant, batch).await
    }

    /// The batch now, then on every change of its counts or of whether a live worker serves its
    /// model, ending after the first view that is done.
    pub fn watch(
        self: Arc<Self>,
        tenant: TenantId,
        batch: BatchId,
    ) -> impl Stream<Item = Result<BatchView>> + Send + 'static {
        async_stream::stream! {
            // A new view is sent when the counts change, or whether a worker serves the model.
            let mut last: Option<(StateCounts, bool)> = None;
            loop {
                match self.batch(tenant, batch).await {
                    Ok(view) => {
                        let done = view.done;
                        let seen = (view.status.counts.clone(), view.live_workers == Some(0));
                        if last.as_ref() != Some(&seen) {
                            last = Some(seen);
                            yield Ok(view);
                        }
                        if done {
                            break;
                        }
                    }
                    Err(e) => {
                        let fatal = e.kind() != ErrorKind::Transient;
                        yield Err(e);
                        if fatal {
                            break;
                        }
                    }
                }
                tokio::time::sleep(WATCH_POLL).await;
            }
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
