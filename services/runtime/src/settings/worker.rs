//! `worker` section: what a worker serves, how many jobs it holds, and what it stores per image.

use pixelfarm_core::{Error, ImageFormat, ModelName, Result};
use serde::Deserialize;
use std::path::PathBuf;

use super::credentials::ContentCredentialsSettings;

/// `worker` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Lease owner name; defaults to the host name (the pod name on Kubernetes).
    pub id: String,
    /// Models this worker serves (one queue each).
    pub models: Vec<String>,
    /// Most unsettled messages held at once.
    pub prefetch: u16,
    /// Jobs processed at the same time.
    pub concurrency: usize,
    /// Lease length; a killed worker's jobs return to pending this long after its last heartbeat.
    pub lease_seconds: u64,
    /// Lease renewal period; well under `lease_seconds`.
    pub heartbeat_seconds: u64,
    /// On SIGTERM, how long the jobs in hand may take to finish.
    pub drain_grace_seconds: u64,
    /// `/metrics` + health listen address.
    pub http_addr: String,
    /// `diffusion` (the candle engine, models from the `diffusion` section) or `test-pattern`
    /// (pipeline tests and benchmarks; no model).
    pub renderer: String,
    /// Model registry file of the `diffusion` renderer (YAML: services/diffusion, registry.rs).
    /// A file of its own so it can be shipped and mounted separately (a ConfigMap on Kubernetes),
    /// and so its file names, which contain dots, are not split into config paths.
    pub registry: Option<PathBuf>,
    /// Sleep added to each test-pattern render, standing in for device time (tests, benchmarks).
    pub test_pattern_delay_ms: u64,
    /// Micro-batching renderers (`diffusion` with `max_batch` > 1): how long the first render of an
    /// idle worker waits for the others claimed with it before its batch starts. Later batches
    /// form while the device works, without waiting.
    pub batch_linger_ms: u64,
    /// The longest one job's render may take; past it the render stops and the job dies with
    /// error kind `invalid` (a job that slow would take a worker from every other job on each
    /// retry). Bound what a job may ask for with the registry's per-model `limits`.
    pub render_timeout_seconds: u64,
    /// How the worker groups its claims and its completions into one statement each.
    pub write_group: WriteGroupSettings,
    /// The key that signs the images' content credentials.
    pub content_credentials: ContentCredentialsSettings,
    /// Which images get their provenance record as a JSON object beside them.
    pub provenance_records: ProvenanceRecords,
}

/// `worker.provenance_records`: which images get their provenance record (job, batch, tenant,
/// worker, attempt, parameters, model identity, timings, content credentials) stored as
/// `images/<tenant>/<ab>/<hash>.json` beside them, one more PUT per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum ProvenanceRecords {
    /// Every image (the default): the audit trail stays in the bucket after the job rows are
    /// deleted by retention, whatever the image's format.
    #[default]
    Always,
    /// Only images whose file does not carry the generation's provenance itself: a PNG holds it
    /// (parameters, model identity, LoRAs, code version) in its `pixelfarm` text chunk, so PNGs
    /// get no record, and the job's history (worker, attempt, timings) stays in its row only.
    /// JPEG and WebP images still get one.
    UnlessEmbedded,
}

impl TryFrom<String> for ProvenanceRecords {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "always" => Ok(ProvenanceRecords::Always),
            "unless_embedded" => Ok(ProvenanceRecords::UnlessEmbedded),
            _ => Err(format!(
                "`{s}` is not accepted (accepted: always, unless_embedded)"
            )),
        }
    }
}

impl ProvenanceRecords {
    /// Whether an image in `format` gets its record stored beside it.
    pub fn stored(self, format: ImageFormat) -> bool {
        match self {
            ProvenanceRecords::Always => true,
            ProvenanceRecords::UnlessEmbedded => format != ImageFormat::Png,
        }
    }
}

/// `worker.write_group` section: concurrent jobs' claims (and completions) wait together at most
/// `wait_ms` (not at all once every job the worker has in hand is in the group), and at most `max`
/// of them go to the database as one statement. `max: 1` writes each alone, at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriteGroupSettings {
    /// Most jobs in one grouped write.
    pub max: usize,
    /// Longest a claim or completion waits for company, in milliseconds.
    pub wait_ms: u64,
}

impl Default for WriteGroupSettings {
    fn default() -> Self {
        WriteGroupSettings {
            max: 64,
            wait_ms: 2,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            id: String::new(),
            models: vec!["test".into()],
            prefetch: 8,
            concurrency: 4,
            lease_seconds: 30,
            heartbeat_seconds: 10,
            drain_grace_seconds: 30,
            http_addr: "0.0.0.0:9091".into(),
            renderer: "test-pattern".into(),
            registry: None,
            test_pattern_delay_ms: 0,
            batch_linger_ms: 10,
            render_timeout_seconds: 600,
            write_group: WriteGroupSettings::default(),
            content_credentials: ContentCredentialsSettings::default(),
            provenance_records: ProvenanceRecords::default(),
        }
    }
}

impl WorkerSettings {
    /// The validated model names.
    ///
    /// # Errors
    /// `Invalid` naming the bad entry.
    pub fn model_names(&self) -> Result<Vec<ModelName>> {
        if self.models.is_empty() {
            return Err(Error::invalid(
                "worker.models is empty; list the models this worker serves",
            ));
        }
        self.models
            .iter()
            .map(|m| {
                ModelName::parse(m.trim())
                    .map_err(|e| Error::invalid(format!("worker.models entry {e}")))
            })
            .collect()
    }

    /// The lease owner name.
    pub fn worker_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }
}
