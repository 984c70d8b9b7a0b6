//! Single-file checkpoints in the original Stability (`ldm`) layout, as model sites distribute
//! them: one safetensors file with the UNet under `model.diffusion_model.`, the VAE under
//! `first_stage_model.` and the CLIP text encoder under `cond_stage_model.transformer.`.
//!
//! The tensor names map to the diffusers names candle's networks read through a table of
//! `(ldm prefix, diffusers prefix)` pairs generated from the family's own UNet and VAE configs —
//! the same construction as diffusers' `convert_diffusers_to_original_stable_diffusion.py`, so
//! it holds for every depth and width, the tiny test family included. The table works both ways
//! ([`to_stability_layout`] writes such files for tests and tools). Tensors of other parts
//! (`model_ema.*`, schedule buffers) are ignored; a tensor of a mapped part with no place in the
//! family's networks is refused, naming it.
//!
//! SD 2.x checkpoints carry their text encoder in OpenCLIP's layout instead
//! (`cond_stage_model.model.`): attention with one fused `in_proj` (split here into q, k, v),
//! OpenAI-style block names, and 24 layers of which SD 2.x uses the penultimate output — the
//! family's text encoder has 23, so layers past the family's count are dropped, as diffusers'
//! `convert_open_clip_checkpoint` does. Its `text_projection` and `logit_scale` are unused.

use candle_core::{DType, Device, Tensor};
use pixelfarm_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::path::Path;

use crate::family::Family;
use crate::registry::{ModelEntry, read_verified};

/// A network's tensors by name.
pub type TensorMap = HashMap<String, Tensor>;

/// Name prefix of the UNet's tensors in a Stability checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Name prefix of the VAE's tensors.
pub const VAE_PREFIX: &str = "first_stage_model.";
/// Name prefix of the (OpenAI CLIP) text encoder's tensors.
pub const TEXT_PREFIX: &str = "cond_stage_model.transformer.";
/// Name prefix of SD 2.x's OpenCLIP text encoder.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// How a Stability checkpoint names its text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// OpenAI CLIP under [`TEXT_PREFIX`] (SD 1.x).
    OpenAi,
    /// OpenCLIP under [`OPEN_CLIP_PREFIX`] (SD 2.x).
    OpenClip,
}

/// Layers of the family's text encoder (an OpenCLIP checkpoint's further layers are dropped).
fn text_layers(family: Family) -> usize {
    family.text_config().map_or(0, |c| c.layers)
}

/// Whole-name pairs of the OpenCLIP text encoder, `(open_clip, diffusers)`.
const OPEN_CLIP_NAMES: [(&str, &str); 4] = [
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
];

/// Inside an OpenCLIP residual block, `(open_clip, diffusers)` (the fused `in_proj` aside).
const OPEN_CLIP_BLOCK: [(&str, &str); 5] = [
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
];

/// OpenCLIP tensors with no place in the diffusion text encoder.
const OPEN_CLIP_UNUSED: [&str; 2] = ["text_projection", "logit_scale"];

/// The diffusers tensors of one OpenCLIP tensor (`rest` after [`OPEN_CLIP_PREFIX`]): none for
/// unused tensors and dropped layers, three for a fused `in_proj`.
fn open_clip_to_hf(rest: &str, t: Tensor, family: Family) -> Result<Vec<(String, Tensor)>> {
    let full = || format!("{OPEN_CLIP_PREFIX}{rest}");
    if OPEN_CLIP_UNUSED.contains(&rest) {
        return Ok(Vec::new());
    }
    if let Some((_, hf)) = OPEN_CLIP_NAMES.iter().find(|(oc, _)| *oc == rest) {
        return Ok(vec![(hf.to_string(), t)]);
    }
    let unmapped = || unmapped("text encoder", &full(), family);
    let block = rest
        .strip_prefix("transformer.resblocks.")
        .ok_or_else(unmapped)?;
    let (layer, inner) = block.split_once('.').ok_or_else(unmapped)?;
    let layer: usize = layer.parse().map_err(|_| unmapped())?;
    if layer >= text_layers(family) {
        return Ok(Vec::new());
    }
    let hf_layer = format!("text_model.encoder.layers.{layer}.");
    if let Some(kind) = inner.strip_prefix("attn.in_proj_") {
        let kind = match kind {
            "weight" | "bias" => kind,
            _ => return Err(unmapped()),
        };
        let d = t.dim(0).map_err(|e| bad_tensor(&full(), e))?;
        if d % 3 != 0 {
            return Err(bad_tensor(
                &full(),
                candle_core::Error::Msg(format!("fused projection of {d} rows")),
            ));
        }
        return ["q", "k", "v"]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let part = t
                    .narrow(0, i * d / 3, d / 3)
                    .map_err(|e| bad_tensor(&full(), e))?;
                Ok((format!("{hf_layer}self_attn.{p}_proj.{kind}"), part))
            })
            .collect();
    }
    let (oc, hf) = OPEN_CLIP_BLOCK
        .iter()
        .find(|(oc, _)| inner.starts_with(oc))
        .ok_or_else(unmapped)?;
    Ok(vec![(format!("{hf_layer}{hf}{}", &inner[oc.len()..]), t)])
}

/// The OpenCLIP tensors (by name after [`OPEN_CLIP_PREFIX`]) of a diffusers text encoder: the
/// inverse of [`open_clip_to_hf`], fusing q, k, v.
fn hf_to_open_clip(text: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut qkv: HashMap<String, [Option<Tensor>; 3]> = HashMap::new();
    for (name, t) in text {
        if let Some((oc, _)) = OPEN_CLIP_NAMES.iter().find(|(_, hf)| *hf == name) {
            out.insert(oc.to_string(), t);
            continue;
        }
        let bad = || Error::permanent(format!("text encoder tensor `{name}` has no OpenCLIP name"));
        let block = name
            .strip_prefix("text_model.encoder.layers.")
            .ok_or_else(bad)?;
        let (layer, inner) = block.split_once('.').ok_or_else(bad)?;
        let oc_layer = format!("transformer.resblocks.{layer}.");
        if let Some(rest) = inner.strip_prefix("self_attn.")
            && let Some((p, kind)) = rest.split_once("_proj.")
            && let Some(i) = ["q", "k", "v"].iter().position(|x| *x == p)
        {
            qkv.entry(format!("{oc_layer}attn.in_proj_{kind}"))
                .or_default()[i] = Some(t);
            continue;
        }
        let (oc, hf) = OPEN_CLIP_BLOCK
            .iter()
            .find(|(_, hf)| inner.starts_with(hf))
            .ok_or_else(bad)?;
        out.insert(format!("{oc_layer}{oc}{}", &inner[hf.len()..]), t);
    }
    for (name, parts) in qkv {
        let parts: Vec<Tensor> = parts
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| Error::permanent(format!("`{name}`: q, k and v must all be present")))?;
        let fused = Tensor::cat(&parts, 0).map_err(|e| bad_tensor(&name, e))?;
        out.insert(name, fused);
    }
    Ok(out)
}

/// The name tables of one family.
struct NameMap {
    /// Whole-name and block-prefix pairs of the UNet, `(ldm, diffusers)`.
    unet: Vec<(String, String)>,
    /// Prefix pairs of the VAE.
    vae: Vec<(String, String)>,
}

/// Inside UNet resnets.
const UNET_RESNET: [(&str, &str); 6] = [
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("emb_layers.1.", "time_emb_proj."),
    ("skip_connection.", "conv_shortcut."),
];

/// Inside VAE resnets and the VAE's attention (whose q/k/v/proj are 1x1 convolutions in ldm and
/// linear layers in diffusers).
const VAE_INNER: [(&str, &str); 7] = [
    ("nin_shortcut.", "conv_shortcut."),
    ("norm_out.", "conv_norm_out."),
    ("attn_1.norm.", "attentions.0.group_norm."),
    ("attn_1.q.", "attentions.0.query."),
    ("attn_1.k.", "attentions.0.key."),
    ("attn_1.v.", "attentions.0.value."),
    ("attn_1.proj_out.", "attentions.0.proj_attn."),
];

impl NameMap {
    fn for_family(family: Family) -> Self {
        let u = family.unet_config();
        let levels = u.blocks.len();
        let per = u.layers_per_block;
        let attn = |level: usize| u.blocks[level].use_cross_attn.is_some();
        let mut unet: Vec<(String, String)> = [
            ("time_embed.0.", "time_embedding.linear_1."),
            ("time_embed.2.", "time_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."),
            ("out.0.", "conv_norm_out."),
            ("out.2.", "conv_out."),
            ("middle_block.0.", "mid_block.resnets.0."),
            ("middle_block.1.", "mid_block.attentions.0."),
            ("middle_block.2.", "mid_block.resnets.1."),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        for i in 0..levels {
            for j in 0..per {
                let sd = (per + 1) * i + j + 1;
                unet.push((
                    format!("input_blocks.{sd}.0."),
                    format!("down_blocks.{i}.resnets.{j}."),
                ));
                if attn(i) {
                    unet.push((
                        format!("input_blocks.{sd}.1."),
                        format!("down_blocks.{i}.attentions.{j}."),
                    ));
                }
            }
            if i + 1 < levels {
                unet.push((
                    format!("input_blocks.{}.0.op.", (per + 1) * (i + 1)),
                    format!("down_blocks.{i}.downsamplers.0.conv."),
                ));
            }
            // Up block i mirrors down level `levels - 1 - i` and has one layer more.
            let up_attn = attn(levels - 1 - i);
            for j in 0..=per {
                let sd = (per + 1) * i + j;
                unet.push((
                    format!("output_blocks.{sd}.0."),
                    format!("up_blocks.{i}.resnets.{j}."),
                ));
                if up_attn {
                    unet.push((
                        format!("output_blocks.{sd}.1."),
                        format!("up_blocks.{i}.attentions.{j}."),
                    ));
                }
            }
            if i + 1 < levels {
                unet.push((
                    format!(
                        "output_blocks.{}.{}.",
                        (per + 1) * i + per,
                        if up_attn { 2 } else { 1 }
                    ),
                    format!("up_blocks.{i}.upsamplers.0."),
                ));
            }
        }

        let v = family.vae_config();
        let levels = v.block_out_channels.len();
        let per = v.layers_per_block;
        let mut vae = Vec::new();
        for i in 0..levels {
            for j in 0..per {
                vae.push((
                    format!("encoder.down.{i}.block.{j}."),
                    format!("encoder.down_blocks.{i}.resnets.{j}."),
                ));
            }
            for j in 0..=per {
                vae.push((
                    format!("decoder.up.{}.block.{j}.", levels - 1 - i),
                    format!("decoder.up_blocks.{i}.resnets.{j}."),
                ));
            }
            if i + 1 < levels {
                vae.push((
                    format!("encoder.down.{i}.downsample."),
                    format!("encoder.down_blocks.{i}.downsamplers.0."),
                ));
                vae.push((
                    format!("decoder.up.{}.upsample.", levels - 1 - i),
                    format!("decoder.up_blocks.{i}.upsamplers.0."),
                ));
            }
        }
        for part in ["encoder", "decoder"] {
            for j in 0..2 {
                vae.push((
                    format!("{part}.mid.block_{}.", j + 1),
                    format!("{part}.mid_block.resnets.{j}."),
                ));
            }
            vae.push((format!("{part}.mid."), format!("{part}.mid_block.")));
        }
        NameMap { unet, vae }
    }

    /// The longest prefix pair matching `name` on the `from` side, and the rest of the name.
    fn lookup<'a>(
        table: &'a [(String, String)],
        name: &'a str,
        ldm_to_hf: bool,
    ) -> Option<(&'a str, &'a str)> {
        table
            .iter()
            .filter_map(|(sd, hf)| {
                let (from, to) = if ldm_to_hf { (sd, hf) } else { (hf, sd) };
                name.strip_prefix(from.as_str())
                    .map(|rest| (to.as_str(), rest, from.len()))
            })
            .max_by_key(|(_, _, len)| *len)
            .map(|(to, rest, _)| (to, rest))
    }

    /// Translate a UNet tensor name (without the checkpoint prefix) between the layouts.
    fn unet_name(&self, name: &str, ldm_to_hf: bool) -> Option<String> {
        let (to, rest) = Self::lookup(&self.unet, name, ldm_to_hf)?;
        let is_resnet = if ldm_to_hf {
            to.contains(".resnets.")
        } else {
            name.contains(".resnets.")
        };
        let rest = if is_resnet {
            inner(&UNET_RESNET, rest, ldm_to_hf)
        } else {
            rest.to_string()
        };
        Some(format!("{to}{rest}"))
    }

    /// Translate a VAE tensor name. Names outside the block tables (`encoder.conv_in.weight`,
    /// `quant_conv.bias`, …) are the same in both layouts.
    fn vae_name(&self, name: &str, ldm_to_hf: bool) -> String {
        let (to, rest) = Self::lookup(&self.vae, name, ldm_to_hf).unwrap_or(("", name));
        format!("{to}{}", inner(&VAE_INNER, rest, ldm_to_hf))
    }
}

/// Replace the first matching inner pair at the start of `rest` (or anywhere after a dot for
/// `norm_out`, which sits directly under `encoder.` / `decoder.`).
fn inner(pairs: &[(&str, &str)], rest: &str, ldm_to_hf: bool) -> String {
    for (sd, hf) in pairs {
        let (from, to) = if ldm_to_hf { (sd, hf) } else { (hf, sd) };
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
        if let Some(i) = rest.find(&format!(".{from}")) {
            return format!("{}.{to}{}", &rest[..i], &rest[i + 1 + from.len()..]);
        }
    }
    rest.to_string()
}

/// Whether a diffusers VAE name is one of the attention projections that are 1x1 convolutions in
/// ldm (`[c, c, 1, 1]`) and linear layers in diffusers (`[c, c]`).
fn is_vae_attn_projection(hf_name: &str) -> bool {
    hf_name.contains("attentions.0.")
        && !hf_name.contains("group_norm")
        && hf_name.ends_with(".weight")
}

/// The original-layout (`ldm`) name of each diffusers UNet tensor name of `family`, without the
/// checkpoint prefix (`down_blocks.1.attentions.0.proj_in.weight` →
/// `input_blocks.4.1.proj_in.weight`); `None` for a name outside the table.
pub(crate) fn ldm_unet_names(family: Family) -> impl Fn(&str) -> Option<String> {
    let map = NameMap::for_family(family);
    move |name| map.unet_name(name, false)
}

fn unmapped(part: &str, name: &str, family: Family) -> Error {
    Error::permanent(format!(
        "checkpoint tensor `{name}` has no place in the {part} of family `{family}`; \
         is the registry's family right?"
    ))
}

/// The UNet, VAE and text-encoder tensors of a Stability checkpoint under diffusers names.
///
/// # Errors
/// `Permanent` for a missing part or an unmappable tensor.
pub fn to_diffusers_layout(
    tensors: HashMap<String, Tensor>,
    family: Family,
) -> Result<[HashMap<String, Tensor>; 3]> {
    let map = NameMap::for_family(family);
    let (mut unet, mut vae, mut text) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (name, t) in tensors {
        if let Some(rest) = name.strip_prefix(UNET_PREFIX) {
            let hf = map
                .unet_name(rest, true)
                .ok_or_else(|| unmapped("UNet", &name, family))?;
            unet.insert(hf, t);
        } else if let Some(rest) = name.strip_prefix(VAE_PREFIX) {
            let hf = map.vae_name(rest, true);
            let t = if is_vae_attn_projection(&hf) && t.rank() == 4 {
                t.flatten_from(1).map_err(|e| bad_tensor(&name, e))?
            } else {
                t
            };
            vae.insert(hf, t);
        } else if let Some(rest) = name.strip_prefix(TEXT_PREFIX) {
            // Older exports lack the `text_model.` level.
            let hf = if rest.starts_with("text_model.") {
                rest.to_string()
            } else {
                format!("text_model.{rest}")
            };
            text.insert(hf, t);
        } else if let Some(rest) = name.strip_prefix(OPEN_CLIP_PREFIX) {
            text.extend(open_clip_to_hf(rest, t, family)?);
        }
    }
    for (part, m, prefix) in [
        ("UNet", &unet, UNET_PREFIX),
        ("VAE", &vae, VAE_PREFIX),
        ("text encoder", &text, "cond_stage_model."),
    ] {
        if m.is_empty() {
            return Err(Error::permanent(format!(
                "the checkpoint has no {part} tensors (expected names under `{prefix}`)"
            )));
        }
    }
    Ok([unet, vae, text])
}

/// The tensors of a diffusers-layout model (`unet`, `vae`, `text` by diffusers name) as one
/// Stability-layout map with the text encoder in `text_layout`: what model sites ship. For tests
/// and conversion tools.
///
/// # Errors
/// `Permanent` for a UNet tensor outside the family's table or a text-encoder tensor OpenCLIP has
/// no name for.
pub fn to_stability_layout(
    family: Family,
    unet: HashMap<String, Tensor>,
    vae: HashMap<String, Tensor>,
    text: HashMap<String, Tensor>,
    text_layout: TextLayout,
) -> Result<HashMap<String, Tensor>> {
    let map = NameMap::for_family(family);
    let mut out = HashMap::new();
    for (name, t) in unet {
        let sd = map
            .unet_name(&name, false)
            .ok_or_else(|| unmapped("UNet", &name, family))?;
        out.insert(format!("{UNET_PREFIX}{sd}"), t);
    }
    for (name, t) in vae {
        let t = if is_vae_attn_projection(&name) && t.rank() == 2 {
            let (o, i) = t.dims2().map_err(|e| bad_tensor(&name, e))?;
            t.reshape((o, i, 1, 1)).map_err(|e| bad_tensor(&name, e))?
        } else {
            t
        };
        out.insert(format!("{VAE_PREFIX}{}", map.vae_name(&name, false)), t);
    }
    match text_layout {
        TextLayout::OpenAi => {
            for (name, t) in text {
                out.insert(format!("{TEXT_PREFIX}{name}"), t);
            }
        }
        TextLayout::OpenClip => {
            for (name, t) in hf_to_open_clip(text)? {
                out.insert(format!("{OPEN_CLIP_PREFIX}{name}"), t);
            }
        }
    }
    Ok(out)
}

fn bad_tensor(name: &str, e: candle_core::Error) -> Error {
    Error::with_source(
        ErrorKind::Permanent,
        format!("checkpoint tensor `{name}` has an unexpected shape"),
        e,
    )
}

/// The parts of the single-file checkpoint `ckpt` of `entry` (sha256 verified), as tensors by
/// diffusers name: the UNet (`dtype`), the VAE (f32) and the text encoder (`dtype`).
///
/// # Errors
/// As [`read_verified`] and [`to_diffusers_layout`]; `Permanent` for a file that is not safetensors.
pub fn split(
    entry: &ModelEntry,
    dir: &Path,
    ckpt: &str,
    dtype: DType,
    device: &Device,
) -> Result<(TensorMap, TensorMap, TensorMap)> {
    let bytes = read_verified(entry, dir, ckpt)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        Error::with_source(
            ErrorKind::Permanent,
            format!("model file `{ckpt}` is not a safetensors checkpoint"),
            e,
        )
    })?;
    let [unet, vae, text] = to_diffusers_layout(tensors, entry.family)?;
    let cast = |map: TensorMap, dtype: DType| -> Result<TensorMap> {
        map.into_iter()
            .map(|(name, t)| {
                let t = t.to_dtype(dtype).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Permanent,
                        format!("checkpoint tensor `{name}` cannot be read as {dtype:?}"),
                        e,
                    )
                })?;
                Ok((name, t))
            })
            .collect()
    };
    // The VAE stays f32, as from a diffusers folder.
    Ok((
        cast(unet, dtype)?,
        cast(vae, DType::F32)?,
        cast(text, dtype)?,
    ))
}

#[cfg(test)]
mod tests;
