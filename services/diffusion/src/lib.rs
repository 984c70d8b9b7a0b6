//! pixelfarm's diffusion engine on candle: the model registry, the Stable Diffusion families and
//! the samplers.
//!
//! # Layout
//! - [`family`]: [`Family`] and its defaults and architectures, in one table.
//! - [`registry`]: [`RegistryConfig`] (from the worker's YAML), sources, sha256 verification.
//! - [`sampler`]: noise schedule, sampler plans and DDIM / Euler / Euler a / DPM++ 2M Karras.
//! - `engine`: [`DiffusionEngine`], the worker's `Renderer` (LRU of loaded models, micro-batches
//!   grouped by `pixelfarm_core::BatchKey`).
//! - `model`: [`LoadedModel`], a model's renders: txt2img over a group, img2img and inpainting,
//!   each refined by its hires fix ([`hires`] enlarges in pixel space), and its stages one at a
//!   time for parity checks. It is built by `load` (registry files into
//!   networks), conditions with `condition` (tokenizers, text encoders, SDXL's micro-conditioning)
//!   and denoises with `denoise`, the one loop every render goes through (guidance, prediction
//!   type, per-job noise, inpainting's kept area, ControlNet residuals, cancellation).
//! - `lora`: LoRA files (kohya and diffusers / PEFT layouts) matched to a model's tensors and
//!   merged into copies of the layers they change; the engine keeps the last few sets merged.
//! - `failure`: candle's errors classified by variant (device trouble is transient).
//! - [`unet`]: the SD UNet, with SDXL's micro-conditioning and ControlNet residuals;
//!   [`controlnet`]: ControlNets (a copy of the UNet's way down reading a control image);
//!   [`vae`]: the SD VAE; all built from `blocks` (resnets, samplers, spatial transformer, VAE
//!   attention) on `pixelfarm_kernels`.
//! - [`clip`]: the CLIP text transformer as SDXL reads it (penultimate state, pooled projection).
//! - [`checkpoint`]: single-file checkpoints in the original Stability layout (SD 1.x / 2.x and
//!   the tiny family).
//! - [`shapes_net`]: the `shapes` family's small pixel-space UNet and text encoder (trainable).
//! - `tiny` (feature `testing`): tiny random-weight models + a CLIP BPE tokenizer for tests and
//!   benchmarks; `tiny_lora`: random LoRAs for them in both file layouts.
//! - [`rng`]: [`JobRng`], each job's own deterministic noise.

mod blocks;
pub mod checkpoint;
pub mod clip;
mod condition;
mod control;
pub mod controlnet;
mod denoise;
mod engine;
mod failure;
pub mod family;
pub mod hires;
mod load;
mod lora;
mod model;
pub mod registry;
pub mod rng;
pub mod sampler;
pub mod shapes_net;
#[cfg(feature = "testing")]
pub mod tiny;
#[cfg(feature = "testing")]
pub mod tiny_lora;
pub mod unet;
pub mod vae;

pub use engine::{DiffusionEngine, RENDERER};
pub use family::{Family, FamilyDefaults, Prediction};
pub use model::LoadedModel;
pub use pixelfarm_core::{ImageInput, RgbImage};
pub use registry::{
    AdapterEntry, AdapterKind, DeviceChoice, LimitsConfig, ModelEntry, RegistryConfig, RemoteFile,
    Source,
};
pub use rng::JobRng;
