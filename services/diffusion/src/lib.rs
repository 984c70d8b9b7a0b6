//! pixelfarm's diffusion engine on candle: the model registry, the Stable Diffusion families and
//! the samplers (issue 3).
//!
//! # Layout
//! - [`family`]: [`Family`] and its defaults and architectures, in one table.
//! - [`registry`]: [`RegistryConfig`] (from the worker's YAML), sources, sha256 verification.
//! - [`sampler`]: noise schedule, sampler plans and DDIM / Euler / Euler a / DPM++ 2M Karras.
//! - [`rng`]: [`JobRng`], each job's own deterministic noise.

pub mod family;
pub mod registry;
pub mod rng;
pub mod sampler;

pub use family::{Family, FamilyDefaults, Prediction};
pub use registry::{DeviceChoice, ModelEntry, RegistryConfig, RemoteFile, Source};
pub use rng::JobRng;
