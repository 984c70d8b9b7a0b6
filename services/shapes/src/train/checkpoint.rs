//! What a run writes to resume from, and starting a run from a shipped model's weights.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pixelfarm_diffusion::shapes_net::ShapesConfig;
use std::collections::HashMap;
use std::path::Path;

use super::model::{Model, REFINER_PREFIX};

/// Files of a checkpoint folder.
pub(super) const STATE: &str = "state.json";

fn save_tensors(map: &HashMap<String, Tensor>, prefix: &str, path: &Path) -> Result<()> {
    let sub: HashMap<String, Tensor> = map
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    candle_core::safetensors::save(&sub, path).with_context(|| format!("writing {path:?}"))
}

/// Write `unet.safetensors` and `text_encoder.safetensors` of `tensors` (prefixed names) into `dir`.
///
/// # Errors
/// When the files cannot be written.
pub fn save_split(tensors: &HashMap<String, Tensor>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    save_tensors(tensors, "unet.", &dir.join("unet.safetensors"))?;
    save_tensors(tensors, "text.", &dir.join("text_encoder.safetensors"))
}

pub(super) fn load_split(dir: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (prefix, file) in [
        ("unet.", "unet.safetensors"),
        ("text.", "text_encoder.safetensors"),
    ] {
        for (k, v) in candle_core::safetensors::load(dir.join(file), dev)? {
            out.insert(format!("{prefix}{k}"), v);
        }
    }
    Ok(out)
}

/// What `state.json` records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: usize,
    /// Wall seconds spent training so far, over all sessions.
    pub seconds: f64,
    /// EMA of the loss.
    pub loss_ema: f64,
}

/// The tensors of the model folder's file `rel` (`unet/…`, `text_encoder/…`) on `dev`.
///
/// # Errors
/// When the file cannot be read as safetensors.
pub(super) fn model_file(dir: &Path, rel: &str, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(rel);
    candle_core::safetensors::load(&path, dev).with_context(|| format!("reading {path:?}"))
}

/// Start a run in `out_dir` from the weights of the model folder `model_dir` (as written by
/// [`crate::export::write_model`]): they become both the trained and the EMA weights, and the run
/// continues at `state.step` (so it sees new data). For continuing a shipped model whose training
/// checkpoint is gone. With `refine > 0` a model without a refinement head gets one of that width,
/// freshly initialised but for its last convolution, which starts at zero so the model's outputs
/// are the folder's until the head has trained.
///
/// # Errors
/// When `out_dir` already holds a checkpoint, the folder's head differs from `refine`, or a file
/// cannot be read or written.
pub fn import(model_dir: &Path, out_dir: &Path, state: &RunState, refine: usize) -> Result<()> {
    let ckpt = out_dir.join("checkpoint");
    anyhow::ensure!(
        !ckpt.join(STATE).exists(),
        "`{}` already holds a checkpoint; import into an empty folder",
        out_dir.display()
    );
    let mut tensors = HashMap::new();
    for (prefix, rel) in [
        ("unet.", pixelfarm_diffusion::registry::layout::UNET),
        ("text.", pixelfarm_diffusion::registry::layout::TEXT_ENCODER),
    ] {
        for (k, v) in model_file(model_dir, rel, &Device::Cpu)? {
            tensors.insert(format!("{prefix}{k}"), v);
        }
    }
    let unet: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("unet.")?.to_string(), v.clone())))
        .collect();
    let mut arch =
        ShapesConfig::of_weights(&VarBuilder::from_tensors(unet, DType::F32, &Device::Cpu))
            .with_context(|| format!("`{}`: the UNet's architecture", model_dir.display()))?;
    if refine > 0 {
        anyhow::ensure!(
            arch.refine == 0 || arch.refine == refine,
            "--refine {refine}: `{}` already has a refinement head of width {}",
            model_dir.display(),
            arch.refine
        );
        arch = arch
            .with_refine(refine)
            .map_err(|e| anyhow::anyhow!("--refine: {e}"))?;
    }
    let model = Model::new(arch, &Device::Cpu)?;
    for (n, v) in model.named_vars() {
        if n.starts_with(REFINER_PREFIX) && !tensors.contains_key(&n) {
            let fresh = if n.starts_with(&format!("{REFINER_PREFIX}conv_out.")) {
                v.as_tensor().zeros_like()?
            } else {
                v.as_tensor().clone()
            };
            tensors.insert(n, fresh);
            continue;
        }
        let w = tensors
            .get(&n)
            .with_context(|| format!("`{}` lacks {n}", model_dir.display()))?;
        anyhow::ensure!(
            w.dims() == v.dims(),
            "`{}`: {n} has shape {:?}, its architecture ({arch:?}) {:?}",
            model_dir.display(),
            w.dims(),
            v.dims()
        );
    }
    save_split(&tensors, &ckpt.join("weights"))?;
    save_split(&tensors, &ckpt.join("ema"))?;
    std::fs::write(ckpt.join(STATE), serde_json::to_vec_pretty(state)?)?;
    Ok(())
}

/// The EMA weights of the checkpoint in `out_dir`, by prefixed name.
///
/// # Errors
/// When there is no checkpoint.
pub fn load_ema(out_dir: &Path) -> Result<HashMap<String, Tensor>> {
    load_split(&out_dir.join("checkpoint").join("ema"), &Device::Cpu)
}
