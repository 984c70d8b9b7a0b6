//! pixelfarm's domain: what a batch is, how it expands into jobs, how a job's seed and output key
//! are derived, the job state machine, and the traits every external system sits behind.
//! No IO happens here.
//!
//! # Layout
//! - [`error`]: one [`Error`] with a [`ErrorKind`] callers match on; [`Chained`], the one line a
//!   binary reports.
//! - [`ids`]: [`TenantId`], [`BatchId`], [`JobId`].
//! - [`params`]: newtypes for every job parameter ([`Prompt`], [`Seed`], [`ImageSize`] …).
//! - [`manifest`]: [`parse_manifest`] → [`BatchSpec`].
//! - [`image_input`]: img2img / inpainting inputs: each tenant's upload prefix ([`input_prefix`]),
//!   their size limit ([`MAX_INPUT_BYTES`]) and pixels ([`ImageInput`]), validated and resized.
//! - [`changes`]: the change feed of batch progress ([`BatchChange`], [`BatchChanges`]).
//! - [`batch`]: which jobs may share one denoiser call ([`BatchKey`], [`batch::groups`]).
//! - [`rgb_image`]: [`RgbImage`], the RGB8 pixels of renders, inputs and contact sheets.
//! - [`keys`]: [`derive_seed`] and per-tenant content-addressed [`OutputKey`]s.
//! - [`limits`]: what a model accepts ([`ModelLimits`]).
//! - [`state`]: the [`JobState`] machine.
//! - [`failure`]: retry vs dead-letter ([`decide`], [`Backoff`]).
//! - [`hostile`]: the attack classes the manifest budgets refuse, as manifests (tests, measurements).
//! - [`control`]: a running render's progress and cancellation ([`RenderControl`]).
//! - [`tenant`]: per-tenant [`Quota`] and [`Usage`], API key records ([`NewApiKey`]).
//! - [`retention`]: how long finished batches' job rows are kept ([`Retention`]) and what a purge
//!   did ([`PurgeOutcome`]).
//! - [`text`]: the policy for prompts, names and tags ([`text::check`]) and how such text is
//!   escaped for one-line formats and terminals.
//! - [`webhooks`]: what a batch or tenant subscribes to ([`WebhookSpec`]), which receivers a
//!   deployment allows ([`WebhookPolicy`]), the outbox's events and their delivery log.
//! - [`seams`]: [`JobStore`], [`Broker`], [`BlobStore`], [`Renderer`]; [`records`]: the records the
//!   store exchanges.

pub mod batch;
pub mod changes;
pub mod control;
pub mod error;
pub mod failure;
pub mod hostile;
pub mod ids;
pub mod image_input;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod params;
pub mod records;
pub mod retention;
pub mod review;
pub mod rgb_image;
pub mod seams;
pub mod state;
pub mod tenant;
pub mod text;
pub mod webhooks;

pub use batch::BatchKey;
pub use changes::{BatchChange, BatchChanges};
pub use control::{RenderControl, StepProgress};
pub use error::{ChainResult, Chained, Error, ErrorKind, Result};
pub use failure::{Backoff, decide};
pub use ids::{BatchId, EventId, JobId, TenantId, WebhookId};
pub use image_input::{
    ImageInput, InputName, JobInputs, MASK_REPAINT_ABOVE, MAX_INPUT_BYTES, input_prefix,
    is_tenant_input,
};
pub use keys::{OutputKey, derive_seed, hash_api_key, sha256_hex, thumbnail_key};
pub use limits::ModelLimits;
pub use manifest::{
    BatchSpec, JobSpec, MAX_JOBS_PER_BATCH, Product, field_error_in, key_vars, parse_manifest,
};
pub use params::*;
pub use records::*;
pub use retention::{PurgeOutcome, PurgedBatch, Retention, job_not_found, jobs_gone};
pub use review::{MAX_REVIEW_JOBS, NewSession, Review, SESSION_TTL, Session, Verdict};
pub use rgb_image::RgbImage;
pub use seams::*;
pub use state::JobState;
pub use tenant::{ApiKeyInfo, Limit, NewApiKey, Quota, TenantInfo, Usage, key_prefix};
pub use webhooks::{
    AttemptOutcome, DeliveryAttempt, DueEvent, EventKind, EventSet, Webhook, WebhookDelivery,
    WebhookPolicy, WebhookSecret, WebhookSpec, WebhookUrl,
};
