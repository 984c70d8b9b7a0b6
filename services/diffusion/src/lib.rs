//! pixelfarm's diffusion engine on candle: the model registry, the Stable Diffusion families and
//! the samplers.
//!
//! # Layout
//! - [`family`]: [`Family`] and its defaults and architectures, in one table.
//! - [`registry`]: [`RegistryConfig`] (from the worker's YAML), sources, sha256 verification.
//! - [`sampler`]: noise schedule, sampler plans and DDIM / Euler / Euler a / DPM++ 2M Karras.
//! - `engine`: [`DiffusionEngine`], the worker's `Renderer` (LRU of loaded models, micro-batches).
//! - `model`: a loaded model and the txt2img pipeline (CFG, per-job noise, VAE decode).
//! - [`unet`]: the SD UNet, with SDXL's micro-conditioning; [`vae`]: the SD VAE; both built from
//!   `blocks` (resnets, samplers, spatial transformer, VAE attention) on [`ops`].
//! - [`ops`]: CPU conv2d and group norm (fused with SiLU for inference) with a fast backward.
//! - [`clip`]: the CLIP text transformer as SDXL reads it (penultimate state, pooled projection).
//! - [`checkpoint`]: single-file checkpoints in the original Stability layout (SD 1.x / 2.x and
//!   the tiny family).
//! - [`shapes_net`]: the `shapes` family's small pixel-space UNet and text encoder (trainable).
//! - [`threads`]: settles candle's CPU thread count once per process (`RAYON_NUM_THREADS`).
//! - [`tiny`]: tiny random-weight models + a CLIP BPE tokenizer for tests and benchmarks.
//! - [`rng`]: [`JobRng`], each job's own deterministic noise.

mod blocks;
pub mod checkpoint;
pub mod clip;
mod engine;
pub mod family;
mod model;
pub mod ops;
pub mod registry;
pub mod rng;
pub mod sampler;
pub mod shapes_net;
pub mod threads;
pub mod tiny;
pub mod unet;
pub mod vae;

pub use engine::{DiffusionEngine, RENDERER};
pub use family::{Family, FamilyDefaults, Prediction};
pub use model::LoadedModel;
pub use pixelfarm_core::{ImageInput, InitImage};
pub use registry::{DeviceChoice, LimitsConfig, ModelEntry, RegistryConfig, RemoteFile, Source};
pub use rng::JobRng;
