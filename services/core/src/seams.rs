//! The traits every external system sits behind, with their written contracts. Each has a
//! conformance suite run against every implementation (see the `testsuite` module of each crate).

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::Result;
use crate::changes::BatchChanges;
use crate::control::{RenderControl, StepProgress};
use crate::error::Error;
use crate::ids::{BatchId, EventId, JobId, TenantId, WebhookId};
use crate::manifest::BatchSpec;
use crate::params::{JobParams, ModelName};
use crate::records::*;
use crate::retention::{PurgeOutcome, Retention};
use crate::review::{NewSession, Session, Verdict};
use crate::tenant::{ApiKeyInfo, NewApiKey, Quota, TenantInfo, Usage};
use crate::webhooks::{
    AttemptOutcome, DueEvent, Webhook, WebhookDelivery, WebhookSecret, WebhookSpec,
};

/// Proof of holding the single-leader lock; dropping it releases leadership.
#[async_trait]
pub trait Leadership: Send {
    /// Whether the lock is still held (its connection is alive).
    async fn still_leader(&mut self) -> bool;
}

/// Durable job storage. Contract (checked by `pixelfarm_store::testsuite`):
/// - every query that takes a tenant is scoped to it: another tenant's batch is `NotFound`;
/// - `submit` writes the batch and all its jobs in one transaction, or nothing;
///   the same `(tenant, idempotency_key)` returns the existing batch with `created = false`;
/// - `submit` refuses a new batch over the tenant's `max_priority`, `max_queued_jobs` or
///   `max_jobs_per_day` ([`Quota`]) with `QuotaExceeded` naming the limit and the usage, counted
///   in the transaction that writes the batch with the tenant's row locked, so two submits of a
///   tenant cannot both pass on the same room;
/// - an API key is valid from `add_api_key` until it is revoked or its `expires_at` passes;
///   registering a key again changes nothing (a revoked key stays revoked), except that a config
///   key revoked by `revoke_config_keys_except` is restored when registered again as a config key
///   of the same tenant;
/// - `claim` is one conditional update from `pending`/`queued`; it returns `None` for a job that is
///   running, final, cancelled or unknown, and increments `attempt`;
/// - `heartbeat`, `complete` and `fail` change the row only while the caller holds the lease
///   (same owner, same attempt, state running) and return whether they did;
/// - `claim_many` and `complete_many` do what `claim` and `complete` do for each job of a group in
///   one statement: each job is decided alone, so a job that is not claimable or whose lease is
///   lost changes nothing and the others still change;
/// - a worker is live for a model until the `ttl` of its last `announce_worker` passes or it
///   withdraws; a model once announced stays in `model_presence`;
/// - `batch`, `backlog`, `finished` and `usage` count what the job rows say (each costs one row per
///   batch, not per job); `batch_changes` announces every change of a batch's counts after its
///   commit;
/// - `purge_expired` deletes job rows only of batches whose every job is final and finished more
///   than their tenant's [`Retention`] ago, never the batch row; a batch it started on answers
///   `batch` with `jobs_purged_at` set and `jobs` with `Gone`;
/// - `review` decides every listed job or none: each must be a succeeded job of the tenant;
///   the latest decision is the job's [`Review`](crate::Review), gone with the job's row;
/// - a console session is valid from `open_session` until `close_session`, its expiry, or the
///   revocation or expiry of the API key it was opened with, whichever comes first;
/// - time comparisons use the store's clock.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Create a tenant; `weight` is its fair share relative to the others.
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<TenantId>;
    /// The tenant called `name`, if any.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantId>>;
    /// A tenant's name, weight and quota; `NotFound` for an unknown id.
    async fn tenant(&self, tenant: TenantId) -> Result<TenantInfo>;
    /// Replace a tenant's quota; `NotFound` for an unknown id.
    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()>;
    /// Set a tenant's retention of finished batches' job rows (`None`: the scheduler's default);
    /// `NotFound` for an unknown id.
    async fn set_retention(&self, tenant: TenantId, retention: Option<Retention>) -> Result<()>;
    /// Set whether a tenant's images get content credentials when a manifest does not say;
    /// `NotFound` for an unknown id.
    async fn set_content_credentials(&self, tenant: TenantId, on: bool) -> Result<()>;
    /// What the tenant uses of the limits the store counts.
    async fn usage(&self, tenant: TenantId) -> Result<Usage>;
    /// [`JobStore::usage`] of every tenant, by name (for the per-tenant gauges).
    async fn usage_by_tenant(&self) -> Result<Vec<(String, Usage)>>;

    /// Register an API key by its sha256 (hex) and prefix. The key itself is never stored.
    async fn add_api_key(&self, tenant: TenantId, key: &NewApiKey) -> Result<()>;
    /// The tenant owning the API key with this sha256, while the key is neither revoked nor
    /// expired. Records the use in `last_used_at` when the recorded one is a minute old or more
    /// (one write per key and minute at most).
    async fn tenant_by_key(&self, key_sha256: &str) -> Result<Option<TenantId>>;
    /// The tenant's keys, oldest first.
    async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyInfo>>;
    /// Revoke the tenant's keys with this prefix not yet revoked; returns how many.
    async fn revoke_api_keys(&self, tenant: TenantId, prefix: &str) -> Result<u64>;
    /// Revoke every key registered `from_config` whose sha256 is not in `keep` (the keys the
    /// config lists now); returns how many. Unlike [`JobStore::revoke_api_keys`], this revocation
    /// ends when the config lists the key again.
    async fn revoke_config_keys_except(&self, keep: &[String]) -> Result<u64>;

    /// Write a batch and its jobs (state `pending`) in one transaction.
    async fn submit(
        &self,
        tenant: TenantId,
        batch: &BatchSpec,
        max_attempts: u32,
    ) -> Result<SubmitOutcome>;
    /// A batch with its counts.
    async fn batch(&self, tenant: TenantId, batch: BatchId) -> Result<BatchStatus>;
    /// Jobs of a batch ordered by id, after `after`, at most `limit`; `Gone` once retention took them.
    async fn jobs(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobRecord>>;
    /// One job.
    async fn job(&self, tenant: TenantId, job: JobId) -> Result<JobRecord>;
    /// The tenant's batches, newest first: those older than `before` (the last of a previous
    /// page), at most `limit`.
    async fn batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<BatchStatus>>;
    /// The manifest of a batch exactly as it was submitted.
    async fn batch_manifest(&self, tenant: TenantId, batch: BatchId) -> Result<String>;
    /// Record `verdict` by reviewer `by` on each of `jobs` (`None` clears their review); returns
    /// how many changed. `Invalid` when one is not a succeeded job of the tenant, and then
    /// none changes.
    async fn review(
        &self,
        tenant: TenantId,
        jobs: &[JobId],
        verdict: Option<Verdict>,
        by: &str,
    ) -> Result<u64>;
    /// Cancel every job of the batch not yet final, running ones included (their lease ends, so the
    /// worker's next heartbeat fails and it stops the render); returns how many.
    async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64>;

    /// Up to `limit` pending jobs of `model` to publish next: priority first, then weighted fair
    /// share across tenants, then age.
    async fn dispatchable(&self, model: &ModelName, limit: u32) -> Result<Vec<JobMessage>>;
    /// `pending → queued` for the published ids (others untouched); returns how many moved.
    async fn mark_queued(&self, ids: &[JobId]) -> Result<u64>;
    /// Jobs per model and non-final state.
    async fn backlog(&self) -> Result<Vec<BacklogRow>>;
    /// Jobs per model and final state (monotonic: [`JobStore::purge_expired`] deletes job rows
    /// but leaves their batch's counts).
    async fn finished(&self) -> Result<Vec<BacklogRow>>;
    /// Follow every batch's progress: each change of a batch's counts committed after this returns
    /// is announced after its commit, as [`BatchChange::Batch`](crate::BatchChange::Batch); when
    /// announcements may have been lost (the subscriber fell behind, the store lost its feed and
    /// got it back) the stream says [`BatchChange::Missed`](crate::BatchChange::Missed), so the
    /// subscriber re-reads everything it follows.
    async fn batch_changes(&self) -> Result<BatchChanges>;

    /// Record that `worker` serves exactly `models` for `ttl` from now (replacing what it announced
    /// before), and remember each of them as served. Workers call it every few seconds; rows of
    /// workers expired for a day are pruned.
    async fn announce_worker(
        &self,
        worker: &str,
        models: &[ModelName],
        ttl: Duration,
    ) -> Result<()>;
    /// Record the limits of models a worker serves (at its start: the latest started worker's
    /// limits are the model's), remembering each model as served.
    async fn set_model_limits(&self, limits: &[(ModelName, crate::ModelLimits)]) -> Result<()>;
    /// `worker` serves nothing any more (a clean shutdown); its models stay known.
    async fn withdraw_worker(&self, worker: &str) -> Result<()>;
    /// Every model a worker ever announced, by name, with its live workers now.
    async fn model_presence(&self) -> Result<Vec<ModelPresence>>;

    /// Take the lease of a job.
    async fn claim(&self, job: JobId, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>>;
    /// Extend the lease and record the render's progress (kept as it was when `None`).
    async fn heartbeat(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<StepProgress>,
    ) -> Result<bool>;
    /// `running → succeeded`.
    async fn complete(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        done: &Completion,
    ) -> Result<bool>;
    /// [`JobStore::claim`] of each job; the jobs claimed, in no particular order.
    async fn claim_many(
        &self,
        jobs: &[JobId],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>>;
    /// [`JobStore::complete`] of each `(job, attempt, completion)`; whether each row changed, in order.
    async fn complete_many(
        &self,
        worker: &str,
        jobs: &[(JobId, u32, Completion)],
    ) -> Result<Vec<bool>>;
    /// `running → retryable | dead`.
    async fn fail(&self, job: JobId, worker: &str, attempt: u32, failure: &Failure)
    -> Result<bool>;

    /// Expired leases: back to `pending` without spending the attempt (the job's `crashes` counts
    /// the expiry instead), or `dead` with error kind `crashed_worker` once its leases expired
    /// `max_crashes` times — a job that crashes every worker taking it must not circulate, and the
    /// other jobs in flight on a crashed worker must not lose attempts to it.
    async fn rescue_expired(&self, limit: u32, max_crashes: u32) -> Result<RescueOutcome>;
    /// `retryable → pending` once the backoff elapsed.
    async fn promote_retryable(&self, limit: u32) -> Result<u64>;
    /// `queued → pending` for jobs queued longer than `older_than` (their message was lost).
    async fn requeue_stale_queued(&self, older_than: Duration, limit: u32) -> Result<u64>;

    /// Delete at most `limit` job rows of finished batches past their retention (`default` for
    /// tenants without one), as [`crate::retention`] says.
    async fn purge_expired(&self, default: Retention, limit: u32) -> Result<PurgeOutcome>;

    /// Register a webhook of `tenant` for every batch of it (a batch's own comes with its
    /// [`BatchSpec::webhook`], stored by [`JobStore::submit`]); makes the tenant's signing secret
    /// if it has none.
    async fn add_webhook(&self, tenant: TenantId, spec: &WebhookSpec) -> Result<Webhook>;
    /// The tenant's webhooks (not its batches' own).
    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>>;
    /// Remove a webhook of `tenant`, giving up its undelivered events; whether it existed.
    async fn remove_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<bool>;
    /// The tenant's signing secret, made on first use; `rotate` replaces it, the old one still
    /// signing beside it for a day.
    async fn webhook_secret(&self, tenant: TenantId, rotate: bool) -> Result<WebhookSecret>;
    /// Up to `limit` events due for an attempt, oldest due first, each held for `lease` (then due
    /// again) and its attempt counted. Events are written by the store in the transaction of the
    /// change that causes them: `batch.completed` / `batch.failed` when a batch's last unfinished
    /// job becomes final (failed when one is dead), `job.failed` when a job becomes dead,
    /// `job.succeeded` when its image is stored, one per webhook of the batch or its tenant that
    /// asked for the kind.
    async fn claim_webhook_events(&self, limit: u32, lease: Duration) -> Result<Vec<DueEvent>>;
    /// Log attempt number `attempt` of `event` and keep `body` for the next attempts; the outcome
    /// settles the event (delivered, retried at its time, or given up) only while `attempt` is
    /// its latest claim.
    async fn record_webhook_attempt(
        &self,
        event: EventId,
        attempt: u32,
        body: &str,
        outcome: &AttemptOutcome,
        took: Duration,
    ) -> Result<()>;
    /// The delivery log of a batch of `tenant`: its events oldest first after `after`, at most
    /// `limit`, each with every attempt (none for another tenant's batch).
    async fn webhook_deliveries(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>>;
    /// Events neither delivered nor given up.
    async fn pending_webhook_events(&self) -> Result<u64>;

    /// Open a console session for the API key `new.key_sha256`; `None` when the key is unknown,
    /// revoked or expired. Prunes sessions expired for a day.
    async fn open_session(&self, new: &NewSession) -> Result<Option<Session>>;
    /// The open session whose token has this sha256, if it is still valid.
    async fn session(&self, token_sha256: &str) -> Result<Option<Session>>;
    /// End a session (sign out); ending an unknown one is `Ok`.
    async fn close_session(&self, token_sha256: &str) -> Result<()>;

    /// Become the single leader if nobody else is.
    async fn try_lead(&self) -> Result<Option<Box<dyn Leadership>>>;

    /// `Ok` when the database answers a query now; the error says why not. For readiness and
    /// the dependency gauge.
    async fn ping(&self) -> Result<()>;
}

/// A message delivered by a [`Consumer`], settled exactly once.
pub struct Delivery {
    /// The decoded message, or why it could not be decoded (dead-letter it).
    pub message: Result<JobMessage>,
    /// How to settle it.
    pub acker: Box<dyn Acker>,
}

/// Settles one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Done with it (processed, or a duplicate).
    async fn ack(&self) -> Result<()>;
    /// Cannot be parsed or processed: route to the dead-letter queue, never redeliver.
    async fn dead_letter(&self) -> Result<()>;
    /// Give it back for another consumer.
    async fn requeue(&self) -> Result<()>;
}

/// A stream of deliveries from the queues of some models.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the consumer is closed.
    async fn next(&mut self) -> Option<Result<Delivery>>;
}

/// Message broker. Contract (checked by `pixelfarm_broker::testsuite`):
/// - `publish` returns only once the broker has taken responsibility for every message (confirms);
/// - messages are routed to the queue of their model only;
/// - an unsettled delivery is redelivered when its consumer goes away;
/// - `dead_letter` moves the message to the dead-letter queue; `depth` counts ready messages.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publish messages, durable, waiting for confirms.
    async fn publish(&self, messages: &[JobMessage]) -> Result<()>;
    /// Consume the queues of `models`, at most `prefetch` unsettled at a time.
    async fn consume(&self, models: &[ModelName], prefetch: u16) -> Result<Box<dyn Consumer>>;
    /// Messages ready in the queue of `model`.
    async fn depth(&self, model: &ModelName) -> Result<u64>;
    /// Messages in the dead-letter queue.
    async fn dead_letter_depth(&self) -> Result<u64>;
    /// Publish raw bytes to the queue of `model` (tests and tools: a malformed message).
    async fn publish_raw(&self, model: &ModelName, body: Bytes) -> Result<()>;
    /// `Ok` when the broker is reachable now (a broker that lost its connection tries to reconnect
    /// here, within its backoff); the error says why not. For readiness and the dependency gauge.
    async fn ping(&self) -> Result<()>;
}

/// Object storage. Contract (checked by `pixelfarm_blob::testsuite`):
/// - `put` is atomic: a reader sees the old bytes or the new bytes, never a part;
/// - `get` of a missing key is `NotFound`; `delete` of a missing key is `Ok`;
/// - `get_limited` returns what `get` would for an object of at most `max_bytes`, and `Invalid`
///   for a larger one without reading more than `max_bytes + 1` bytes of it;
/// - `list` returns every key under the prefix, sorted.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Store `bytes` under `key`.
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<()>;
    /// The bytes under `key`.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// The bytes under `key` when the object holds at most `max_bytes`. For objects whose bytes
    /// come from outside (inputs): the size is checked before the body is read, and the read
    /// stops past the limit (an object that grows meanwhile), so memory stays bounded whatever
    /// the object is.
    ///
    /// # Errors
    /// `NotFound` for a missing key; `Invalid` for an object larger than `max_bytes`, saying so
    /// (and `Invalid` for a malformed key, as `get`); store errors.
    async fn get_limited(&self, key: &str, max_bytes: u64) -> Result<Bytes>;
    /// Remove `key`.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Where the objects go (`s3://bucket/prefix`, `file:///dir`), for provenance.
    fn location(&self) -> String;
    /// `Ok` when the store answers now (the bucket or folder exists and is reachable); the error
    /// says why not. For readiness and the dependency gauge.
    async fn ping(&self) -> Result<()>;
}

/// Presigned GET URLs of stored objects: a link anyone holding it can download the object
/// with until it expires, without credentials of the store. Contract (checked against a real
/// store by `services/blob/tests/signed_urls.rs`): a plain HTTP GET of the URL answers the
/// object's bytes until `expires_at` and is refused after it; `Invalid` for a malformed key, as
/// [`BlobStore::get`]. Signing makes no request: a URL for a missing key is made, and its GET
/// answers 404.
#[async_trait]
pub trait UrlSigner: Send + Sync + 'static {
    /// A URL for the object under `key`, valid for `expires_in` from now.
    async fn signed_get(&self, key: &str, expires_in: Duration) -> Result<SignedUrl>;
}

/// A signer and how long the URLs it makes for readers are valid (`blob.signed_urls`).
#[derive(Clone)]
pub struct UrlSigning {
    /// Makes the URLs.
    pub signer: std::sync::Arc<dyn UrlSigner>,
    /// How long each is valid.
    pub expires_in: Duration,
}

/// What a renderer says about the model it renders a job with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// Renderer implementation and version (`test-pattern/1`, `candle-sd/1`).
    pub renderer: String,
    /// Stable identity of the weights (sha256 of the files) or of the procedure; goes into the key.
    pub id: String,
    /// Device the pixels come from (`cpu`, `cuda:0`).
    pub device: String,
    /// True for renderers that make test/benchmark pixels, not model output.
    pub test_pattern: bool,
}

/// A LoRA a job is rendered with, as its provenance records it: the file's sha256 names the
/// weights, as the model identity's does the model's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedLora {
    /// Its name in the registry.
    pub name: ModelName,
    /// The weight it was applied at.
    pub weight: crate::LoraWeight,
    /// sha256 of its file (lowercase hex).
    pub sha256: String,
}

/// A ControlNet a job is rendered with, as its provenance records it (its weight, window and
/// image are the job's parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedControlNet {
    /// Its name in the registry.
    pub name: ModelName,
    /// sha256 of its file (lowercase hex).
    pub sha256: String,
}

/// The adapters a job is rendered with, as the renderer resolved them before the render.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Its LoRAs, in the job's order.
    pub loras: Vec<AppliedLora>,
    /// Its ControlNets, in the order of its `control`.
    pub controlnets: Vec<AppliedControlNet>,
}

/// A render's pixels plus per-phase timings.
#[derive(Debug, Clone)]
pub struct RenderedImage {
    /// The pixels, at the job's size.
    pub image: crate::RgbImage,
    /// Seconds per internal phase (`text_encode`, `denoise`, `vae_decode` …).
    pub phases: BTreeMap<String, f64>,
}

/// Turns job parameters into pixels. Blocking: callers run it on a blocking thread.
///
/// The worker hands every render a [`RenderControl`]: renderers that take steps report them there
/// and stop between steps once it is cancelled (failing those jobs with [`Error::cancelled`]).
pub trait Renderer: Send + Sync + 'static {
    /// Identity of `model`, or `NotFound`/`Permanent` when this renderer cannot serve it.
    ///
    /// # Errors
    /// `Permanent` for a model it does not know.
    fn identity(&self, model: &ModelName) -> Result<ModelIdentity>;

    /// Render one job.
    ///
    /// # Errors
    /// `Permanent` for parameters it can never render, `Transient` for device trouble.
    fn render(&self, model: &ModelName, params: &JobParams) -> Result<RenderedImage>;

    /// The LoRAs of a job on `model` as they will be applied, in the job's order (empty for
    /// none), checked before the render starts.
    ///
    /// # Errors
    /// `Permanent` for any LoRA by default: only diffusion renderers apply them; theirs for a
    /// LoRA they do not know or one of another family.
    fn loras(&self, model: &ModelName, loras: &crate::Loras) -> Result<Vec<AppliedLora>> {
        match loras.iter().next() {
            None => Ok(Vec::new()),
            Some(l) => Err(Error::permanent(format!(
                "model `{model}`: this renderer cannot apply LoRA `{}`; LoRAs need a diffusion model",
                l.name
            ))),
        }
    }

    /// The ControlNets of a job on `model` as they will be applied, in the job's order (empty
    /// for none), checked before the render starts.
    ///
    /// # Errors
    /// `Permanent` for any ControlNet by default: only diffusion renderers apply them; theirs
    /// for one they do not know or one of another family.
    fn controlnets(
        &self,
        model: &ModelName,
        control: &crate::Controls,
    ) -> Result<Vec<AppliedControlNet>> {
        match control.iter().next() {
            None => Ok(Vec::new()),
            Some(c) => Err(Error::permanent(format!(
                "model `{model}`: this renderer cannot apply ControlNet `{}`; ControlNets need a diffusion model",
                c.model
            ))),
        }
    }

    /// Render one job with input images: an init image (img2img; inpainting when its mask is
    /// set), control images for its ControlNets, or both.
    ///
    /// # Errors
    /// `Permanent` by default: only diffusion renderers read input images.
    fn render_from(
        &self,
        model: &ModelName,
        _params: &JobParams,
        _inputs: &crate::JobInputs,
        _control: &RenderControl,
    ) -> Result<RenderedImage> {
        Err(crate::Error::permanent(format!(
            "model `{model}`: this renderer cannot render from input images; img2img, inpainting and ControlNets need a diffusion model"
        )))
    }

    /// The bounds of the jobs `model` renders, checked by the worker before the render starts;
    /// `None` (the default) for a renderer whose every job is cheap.
    fn limits(&self, _model: &ModelName) -> Option<crate::ModelLimits> {
        None
    }

    /// The most jobs worth rendering in one [`Renderer::render_batch`] call; 1 (the default) means
    /// batching gains nothing and the worker calls it with one job at a time, concurrently.
    fn max_batch(&self) -> usize {
        1
    }

    /// Render compatible jobs together, `controls[i]` belonging to `jobs[i]`; each result is what
    /// `render` alone would give. The default renders job by job, skipping cancelled ones.
    fn render_batch(
        &self,
        model: &ModelName,
        jobs: &[JobParams],
        controls: &[RenderControl],
    ) -> Vec<Result<RenderedImage>> {
        jobs.iter()
            .zip(controls)
            .map(|(p, c)| {
                if c.is_cancelled() {
                    return Err(Error::cancelled());
                }
                self.render(model, p)
            })
            .collect()
    }
}
