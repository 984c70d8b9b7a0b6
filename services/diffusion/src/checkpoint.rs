//! Single-file checkpoints in the original Stability layout.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use pixelfarm_core::{Error, Result};
use std::path::Path;

use crate::registry::ModelEntry;

/// Split a single-file checkpoint into UNet, VAE and text-encoder weights under diffusers names.
///
/// # Errors
/// `Permanent`: the name mapping is not written yet.
pub fn split(
    _entry: &ModelEntry,
    _dir: &Path,
    ckpt: &str,
    _dtype: DType,
    _device: &Device,
) -> Result<(
    VarBuilder<'static>,
    VarBuilder<'static>,
    VarBuilder<'static>,
)> {
    Err(Error::permanent(format!(
        "`{ckpt}` is a single-file checkpoint; this engine reads only the diffusers folder layout so far"
    )))
}
