//! The model registry: which models a worker serves, where their weights are, and the sha256 of
//! every file, checked before a byte of it is used.

use pixelfarm_core::{Error, ErrorKind, ModelLimits, ModelName, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::family::Family;

/// Default for [`RegistryConfig::max_loaded`].
pub const DEFAULT_MAX_LOADED: usize = 1;
/// Default for [`RegistryConfig::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 4;
/// Default for [`RegistryConfig::max_lora_sets`].
pub const DEFAULT_MAX_LORA_SETS: usize = 2;
/// Default for [`RegistryConfig::max_controlnets`].
pub const DEFAULT_MAX_CONTROLNETS: usize = 2;

/// The registry as written in the worker's config (`diffusion:` section).
///
/// ```yaml
/// cache_dir: /var/cache/pixelfarm/models
/// max_loaded: 2
/// models:
///   sd15:
///     family: sd15
///     source: s3://models/sd15
///     files:
///       unet/diffusion_pytorch_model.safetensors: 3f1c…
///       vae/diffusion_pytorch_model.safetensors: 9a2b…
///       text_encoder/model.safetensors: 77c0…
///       tokenizer/tokenizer.json: 5e8d…
/// loras:
///   brand-style:
///     family: sd15
///     source: s3://models/loras/brand-style.safetensors
///     sha256: 0b7e…
/// controlnets:
///   canny:
///     family: sd15
///     source: s3://models/controlnets/sd15-canny.safetensors
///     sha256: 4c1d…
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Where `s3://` models are downloaded to (one folder per model name). Unused for `file://`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// How many models stay loaded at once; the least recently used one is dropped first.
    #[serde(default = "default_max_loaded")]
    pub max_loaded: usize,
    /// Largest number of jobs denoised in one UNet batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Run each micro-batch as one fused UNet batch: faster for small latents, not for large ones
    /// (docs/benchmarks.md, "Fused batches against one UNet call per job"), but a job's pixels
    /// then depend (in the last bits) on its batch-mates, so the same job may give different bytes
    /// on a retry. Off by default: jobs of a group step together but each has its own UNet call,
    /// bit-identical alone.
    #[serde(default)]
    pub fused_batches: bool,
    /// Device to render on.
    #[serde(default)]
    pub device: DeviceChoice,
    /// The models this worker serves, by routing name.
    pub models: BTreeMap<ModelName, ModelEntry>,
    /// The LoRA adapters jobs may apply to the models of their family, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loras: BTreeMap<ModelName, AdapterEntry>,
    /// The ControlNets jobs may steer the models of their family with, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub controlnets: BTreeMap<ModelName, AdapterEntry>,
    /// How many LoRA sets stay merged into copies of their model's weights at once; the least
    /// recently used is dropped first. Each holds its own copy of the layers its LoRAs change.
    #[serde(default = "default_max_lora_sets")]
    pub max_lora_sets: usize,
    /// How many ControlNets stay loaded at once; the least recently used is dropped first.
    #[serde(default = "default_max_controlnets")]
    pub max_controlnets: usize,
}

fn default_cache_dir() -> PathBuf {
    std::env::temp_dir().join("pixelfarm-models")
}
fn default_max_loaded() -> usize {
    DEFAULT_MAX_LOADED
}
fn default_max_batch() -> usize {
    DEFAULT_MAX_BATCH
}
fn default_max_lora_sets() -> usize {
    DEFAULT_MAX_LORA_SETS
}
fn default_max_controlnets() -> usize {
    DEFAULT_MAX_CONTROLNETS
}

/// Which device renders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The CPU, f32.
    #[default]
    Cpu,
    /// The first CUDA GPU (needs the `cuda` feature).
    Cuda,
}

/// One model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Architecture family: decides the configs and defaults.
    pub family: Family,
    /// Where the files are.
    pub source: Source,
    /// For a single-file checkpoint in the original Stability layout: its path among `files`.
    /// Absent for the diffusers folder layout.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Every file the model reads, relative to the source, with its sha256 (lowercase hex).
    pub files: BTreeMap<String, String>,
    /// Bounds of its jobs; each absent one has its default ([`RegistryConfig::limits`]).
    #[serde(default, skip_serializing_if = "LimitsConfig::is_empty")]
    pub limits: LimitsConfig,
}

/// One adapter of a family's models, a single safetensors file: a LoRA in the kohya /
/// AUTOMATIC1111 layout (`lora_unet_…`, `lora_te_…`, with `alpha`) or the diffusers / PEFT one
/// (`unet.….lora_A.weight`), or a ControlNet in diffusers' layout
/// (`diffusion_pytorch_model.safetensors` of a `ControlNetModel`).
///
/// ```yaml
/// family: sd15
/// source: file:///models/loras/brand-style.safetensors
/// sha256: 0b7e…
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterEntry {
    /// The family of the models it was trained for; it applies to no other.
    pub family: Family,
    /// The file itself: `file:///dir/name.safetensors` or `s3://bucket/key`.
    pub source: Source,
    /// Its sha256 (lowercase hex), checked before it is read.
    pub sha256: String,
}

/// What an [`AdapterEntry`] adapts: the registry's `loras` or its `controlnets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A LoRA, merged into a copy of the weights it changes.
    Lora,
    /// A ControlNet, run beside the UNet.
    ControlNet,
}

impl AdapterKind {
    /// How errors name it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Lora => "LoRA",
            AdapterKind::ControlNet => "ControlNet",
        }
    }

    /// Its section of the registry.
    pub fn section(self) -> &'static str {
        match self {
            AdapterKind::Lora => "loras",
            AdapterKind::ControlNet => "controlnets",
        }
    }
}

/// A model's `limits` as written in the registry: each field absent takes its default.
///
/// ```yaml
/// limits: {max_width: 1024, max_height: 1024, max_steps: 60, max_batch: 2, max_output_side: 2048}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Widest render; default twice the family's native width (at most 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// Tallest render; default twice the family's native height (at most 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Most denoising steps; default [`DEFAULT_MAX_STEPS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Most jobs of this model in one UNet batch; default the registry's `max_batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// Longest side of the delivered image (`output.resize`); default
    /// [`DEFAULT_MAX_OUTPUT_SIDE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_side: Option<u32>,
}

impl LimitsConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Default of a model's `limits.max_steps` (AUTOMATIC1111's largest).
pub const DEFAULT_MAX_STEPS: u32 = 150;
/// Default of a model's `limits.max_output_side`.
pub const DEFAULT_MAX_OUTPUT_SIDE: u32 = 4096;

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Source {
    /// A local folder (`file:///models/sd15`).
    File(PathBuf),
    /// An object-store prefix (`s3://bucket/prefix`), downloaded by the worker into the cache.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without a trailing slash (may be empty).
        prefix: String,
    },
}

impl Source {
    /// # Errors
    /// `Invalid` for anything but `file:///absolute/dir` or `s3://bucket[/prefix]`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::invalid(format!(
                    "source `{s}` is not an absolute path; accepted: file:///dir or s3://bucket/prefix"
                )));
            }
            return Ok(Source::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!("source `{s}` has no bucket")));
            }
            return Ok(Source::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_end_matches('/').to_string(),
            });
        }
        Err(Error::invalid(format!(
            "source `{s}` is not accepted; accepted: file:///dir or s3://bucket/prefix"
        )))
    }
}

impl TryFrom<String> for Source {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Source::parse(&s)
    }
}

impl From<Source> for String {
    fn from(s: Source) -> String {
        s.to_string()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file://{}", p.display()),
            Source::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Source::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A file the worker must download before the model can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Bucket to read.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Where to write it (the loader reads it from there).
    pub local_path: PathBuf,
    /// Expected sha256 (lowercase hex); the loader checks it.
    pub sha256: String,
}

/// Files of the diffusers folder layout, relative to the model folder.
pub mod layout {
    /// UNet weights.
    pub const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
    /// VAE weights.
    pub const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
    /// Text encoder weights.
    pub const TEXT_ENCODER: &str = "text_encoder/model.safetensors";
    /// CLIP BPE tokenizer.
    pub const TOKENIZER: &str = "tokenizer/tokenizer.json";
    /// SDXL's second text encoder (OpenCLIP ViT-bigG, with its projection).
    pub const TEXT_ENCODER_2: &str = "text_encoder_2/model.safetensors";
    /// SDXL's second tokenizer (pads with `!`).
    pub const TOKENIZER_2: &str = "tokenizer_2/tokenizer.json";

    /// The files a diffusers-layout model of `family` reads.
    pub fn files(family: crate::Family) -> Vec<&'static str> {
        match family {
            // Pixel space: no VAE.
            crate::Family::Shapes => vec![UNET, TEXT_ENCODER, TOKENIZER],
            f if f.xl().is_some() => vec![
                UNET,
                VAE,
                TEXT_ENCODER,
                TOKENIZER,
                TEXT_ENCODER_2,
                TOKENIZER_2,
            ],
            _ => vec![UNET, VAE, TEXT_ENCODER, TOKENIZER],
        }
    }
}

impl RegistryConfig {
    /// Check what can be checked without touching files.
    ///
    /// # Errors
    /// `Invalid` naming the model and what is wrong: a missing required file, a malformed sha256,
    /// a path leaving the model folder, `max_loaded` or `max_batch` of 0.
    pub fn validate(&self) -> Result<()> {
        if self.max_loaded == 0 {
            return Err(Error::invalid("max_loaded is 0; accepted: 1 or more"));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid("max_batch is 0; accepted: 1 or more"));
        }
        if self.max_lora_sets == 0 {
            return Err(Error::invalid("max_lora_sets is 0; accepted: 1 or more"));
        }
        if self.max_controlnets == 0 {
            return Err(Error::invalid("max_controlnets is 0; accepted: 1 or more"));
        }
        for (name, entry) in &self.models {
            entry
                .validate()
                .map_err(|e| Error::invalid(format!("model `{name}`: {e}")))?;
        }
        self.validate_adapters()
    }

    /// The limits of `model`: its `limits`, each absent one at its default.
    ///
    /// # Errors
    /// `Permanent` for an unknown model.
    pub fn limits(&self, model: &ModelName) -> Result<ModelLimits> {
        let entry = self.entry(model)?;
        let (l, native) = (entry.limits, entry.family.defaults());
        let side = |n: u32| (2 * n).min(pixelfarm_core::ImageSize::MAX_SIDE);
        Ok(ModelLimits {
            max_width: l.max_width.unwrap_or(side(native.width)),
            max_height: l.max_height.unwrap_or(side(native.height)),
            max_steps: l.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
            max_output_side: l.max_output_side.unwrap_or(DEFAULT_MAX_OUTPUT_SIDE),
            max_batch: l.max_batch.unwrap_or(self.max_batch),
            loras: Some(self.adapters_of(AdapterKind::Lora, entry.family)),
            controlnets: Some(self.adapters_of(AdapterKind::ControlNet, entry.family)),
        })
    }

    /// The entry of `model`.
    ///
    /// # Errors
    /// `Permanent` when this registry does not list it.
    pub fn entry(&self, model: &ModelName) -> Result<&ModelEntry> {
        self.models.get(model).ok_or_else(|| {
            let known: Vec<_> = self.models.keys().map(|m| m.as_str()).collect();
            Error::permanent(format!(
                "unknown model `{model}`; this worker serves: {}",
                known.join(", ")
            ))
        })
    }

    /// The local folder `model`'s files are read from.
    ///
    /// # Errors
    /// `Permanent` for an unknown model.
    pub fn local_dir(&self, model: &ModelName) -> Result<PathBuf> {
        Ok(match &self.entry(model)?.source {
            Source::File(p) => p.clone(),
            Source::S3 { .. } => self.cache_dir.join(model.as_str()),
        })
    }

    /// For an `s3://` model, the files to download into the cache; empty for `file://`.
    ///
    /// # Errors
    /// `Permanent` for an unknown model.
    pub fn remote_files(&self, model: &ModelName) -> Result<Vec<RemoteFile>> {
        let entry = self.entry(model)?;
        let Source::S3 { bucket, prefix } = &entry.source else {
            return Ok(Vec::new());
        };
        let dir = self.local_dir(model)?;
        Ok(entry
            .files
            .iter()
            .map(|(path, sha)| RemoteFile {
                bucket: bucket.clone(),
                key: if prefix.is_empty() {
                    path.clone()
                } else {
                    format!("{prefix}/{path}")
                },
                local_path: dir.join(path),
                sha256: sha.clone(),
            })
            .collect())
    }
}

impl ModelEntry {
    fn validate(&self) -> Result<()> {
        for (path, sha) in &self.files {
            if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(Error::invalid(format!(
                    "file `{path}` must be a relative path inside the model folder"
                )));
            }
            check_sha256(sha).map_err(|e| Error::invalid(format!("sha256 of `{path}` {e}")))?;
        }
        let l = self.limits;
        for (field, v) in [
            ("max_width", l.max_width),
            ("max_height", l.max_height),
            ("max_steps", l.max_steps),
            ("max_output_side", l.max_output_side),
        ] {
            if v == Some(0) {
                return Err(Error::invalid(format!(
                    "limits.{field} is 0; accepted: 1 or more"
                )));
            }
        }
        if l.max_batch == Some(0) {
            return Err(Error::invalid("limits.max_batch is 0; accepted: 1 or more"));
        }
        if self.checkpoint.is_some() && self.family.xl().is_some() {
            return Err(Error::invalid(format!(
                "family `{}` loads from the diffusers folder layout only (single-file SDXL \
                 checkpoints are not converted); remove `checkpoint`",
                self.family
            )));
        }
        let required: Vec<&str> = match &self.checkpoint {
            Some(ckpt) => vec![ckpt.as_str(), layout::TOKENIZER],
            None => layout::files(self.family),
        };
        for file in required {
            if !self.files.contains_key(file) {
                return Err(Error::invalid(format!(
                    "`files` has no `{file}`; every file the model reads must be listed with its sha256"
                )));
            }
        }
        Ok(())
    }

    /// Stable identity of the weights: sha256 over the family and every `path sha256` line.
    pub fn weights_id(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!("family {}\n", self.family));
        for (path, sha) in &self.files {
            h.update(format!("{path} {sha}\n"));
        }
        hex::encode(h.finalize())
    }
}

/// `Invalid` unless `sha` is 64 lowercase hex digits.
fn check_sha256(sha: &str) -> Result<()> {
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::invalid(format!(
            "is `{sha}`; accepted: 64 lowercase hex digits"
        )));
    }
    Ok(())
}

/// Read `rel` under `dir` and check its sha256 against the registry before returning its bytes.
///
/// # Errors
/// `Permanent` when the registry has no sha256 for it, when it is missing from a `file://` model
/// folder, or when its sha256 differs (naming the file, the expected and the actual hash);
/// `Transient` when a downloaded file is missing from the cache (download it again) or cannot be read.
pub fn read_verified(entry: &ModelEntry, dir: &Path, rel: &str) -> Result<Vec<u8>> {
    let expected = entry.files.get(rel).ok_or_else(|| {
        Error::permanent(format!("file `{rel}` has no sha256 in the model registry"))
    })?;
    read_checked(
        &dir.join(rel),
        expected,
        matches!(entry.source, Source::File(_)),
    )
}

/// The bytes of `path` when its sha256 is `expected`. A missing file is `Permanent` when it is
/// its own source (`local`), `Transient` when it is a download that can be made again.
fn read_checked(path: &Path, expected: &str, local: bool) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        let kind = match (local, e.kind()) {
            (true, std::io::ErrorKind::NotFound) => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
        Error::with_source(
            kind,
            format!("cannot read model file `{}`", path.display()),
            e,
        )
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(Error::permanent(format!(
            "sha256 mismatch for model file `{}`: expected {expected}, actual {actual}",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The sha256 of a file, lowercase hex (for writing registry entries).
///
/// # Errors
/// `Transient` when it cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::transient(format!("cannot read `{}`", path.display()), e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

mod adapters;
#[cfg(test)]
mod tests;
