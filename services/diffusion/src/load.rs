//! A registry entry's files, sha256-verified, built into the networks of its family: the
//! denoiser, the VAE (latent families) and the text side.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use pixelfarm_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::Tokenizer;

use crate::clip::ClipText;
use crate::condition::{TextEncoder, TextSide, Tokenizers, XlText, token_id};
use crate::denoise::{Denoiser, UnetInput};
use crate::family::Family;
use crate::registry::{ModelEntry, layout, read_verified};
use crate::shapes_net::{ShapesConfig, ShapesText, ShapesUnet};
use crate::unet::Unet;
use crate::vae::Vae;

/// A model's networks, ready to render.
pub(crate) struct Networks {
    pub denoiser: Denoiser,
    pub unet_input: UnetInput,
    /// `None` for pixel-space families (`shapes`): latents are pixels.
    pub vae: Option<Vae>,
    pub text: TextSide,
    /// The denoiser's and text encoders' dtype: f16 on CUDA, f32 on the CPU.
    pub dtype: DType,
    /// The tensors the denoiser and text encoders were built from.
    pub weights: Option<Weights>,
}

/// The UNet's and text encoders' tensors by diffusers name, in the networks' dtype. The networks
/// share their storage; a LoRA set replaces the layers it changes in a copy of the maps
/// ([`crate::lora`]), and networks are built again from that copy.
#[derive(Clone)]
pub(crate) struct Weights {
    pub unet: HashMap<String, Tensor>,
    pub text: HashMap<String, Tensor>,
    /// SDXL's second text encoder.
    pub text_2: Option<HashMap<String, Tensor>>,
}

/// A candle error while loading: the weights do not fit the architecture.
fn bad_weights(file: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| {
        Error::with_source(
            ErrorKind::Permanent,
            format!("model file `{file}` does not fit the family's architecture"),
            e,
        )
    }
}

/// The tokenizer `file` of `entry` (sha256 verified).
fn load_tokenizer(entry: &ModelEntry, dir: &Path, file: &str) -> Result<Tokenizer> {
    let bytes = read_verified(entry, dir, file)?;
    Tokenizer::from_bytes(&bytes)
        .map_err(|e| Error::permanent(format!("`{file}` is not a tokenizer.json: {e}")))
}

/// Every tensor of safetensors `bytes` (the file `rel`), in `dtype` on `device`.
pub(crate) fn tensors_of(
    bytes: &[u8],
    rel: &str,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let read = || -> candle_core::Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load_buffer(bytes, device)?
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_dtype(dtype)?)))
            .collect()
    };
    read().map_err(|e| {
        Error::with_source(
            ErrorKind::Permanent,
            format!("file `{rel}` is not a safetensors file"),
            e,
        )
    })
}

/// The networks of `entry`, from `dir`, on `device`, verifying every file's sha256 first.
///
/// # Errors
/// `Permanent` for a family this engine cannot render, a sha256 mismatch, or weights that do not
/// fit the architecture; `Transient` for files that cannot be read.
pub(crate) fn networks(entry: &ModelEntry, dir: &Path, device: &Device) -> Result<Networks> {
    let family = entry.family;
    if family == Family::Shapes {
        return shapes(entry, dir, device);
    }
    let dtype = if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    };
    let tensors = |rel: &str, dtype: DType| -> Result<HashMap<String, Tensor>> {
        tensors_of(&read_verified(entry, dir, rel)?, rel, dtype, device)
    };
    let (unet, vae, text) = match &entry.checkpoint {
        None => (
            tensors(layout::UNET, dtype)?,
            // The VAE stays f32: SDXL's overflows in f16, and it is cheap.
            tensors(layout::VAE, DType::F32)?,
            tensors(layout::TEXT_ENCODER, dtype)?,
        ),
        Some(ckpt) => crate::checkpoint::split(entry, dir, ckpt, dtype, device)?,
    };
    let text_2 = match family.xl() {
        Some(_) => Some(tensors(layout::TEXT_ENCODER_2, dtype)?),
        None => None,
    };
    let vae_name = entry.checkpoint.as_deref().unwrap_or(layout::VAE);
    let vae = Vae::new(
        VarBuilder::from_tensors(vae, DType::F32, device),
        3,
        3,
        &family.vae_config(),
    )
    .map_err(bad_weights(vae_name))?;
    let tokenizers = Tokenizers {
        clip: load_tokenizer(entry, dir, layout::TOKENIZER)?,
        clip_g: match family.xl() {
            Some(_) => {
                let t = load_tokenizer(entry, dir, layout::TOKENIZER_2)?;
                let pad = token_id(&t, layout::TOKENIZER_2, "!")?;
                Some((t, pad))
            }
            None => None,
        },
    };
    let weights = Weights { unet, text, text_2 };
    let built = build(entry, &weights, tokenizers, dtype, device)?;
    Ok(Networks {
        denoiser: built.denoiser,
        unet_input: built.unet_input,
        vae: Some(vae),
        text: built.text,
        dtype,
        weights: Some(weights),
    })
}

/// The networks built from a model's [`Weights`].
pub(crate) struct Built {
    pub denoiser: Denoiser,
    pub unet_input: UnetInput,
    pub text: TextSide,
}

/// The denoiser and text side of `entry` built from `weights` (which share their tensors).
///
/// # Errors
/// `Permanent` when the weights do not fit the family's architecture.
pub(crate) fn build(
    entry: &ModelEntry,
    weights: &Weights,
    tokenizers: Tokenizers,
    dtype: DType,
    device: &Device,
) -> Result<Built> {
    let family = entry.family;
    if family == Family::Shapes {
        return build_shapes(weights, tokenizers, device);
    }
    let vb = |map: &HashMap<String, Tensor>| VarBuilder::from_tensors(map.clone(), dtype, device);
    let unet_name = entry.checkpoint.as_deref().unwrap_or(layout::UNET);
    let text_name = entry.checkpoint.as_deref().unwrap_or(layout::TEXT_ENCODER);
    let latent = family.defaults().latent_channels;
    let in_channels = weights
        .unet
        .get("conv_in.weight")
        .ok_or_else(|| {
            Error::permanent(format!("model file `{unet_name}` has no `conv_in.weight`"))
        })?
        .dim(1)
        .map_err(bad_weights(unet_name))?;
    let unet_input = UnetInput::of_channels(in_channels, latent).ok_or_else(|| {
        Error::permanent(format!(
            "model file `{unet_name}` has a UNet with {in_channels} input channels; \
             accepted: {latent} (txt2img) or {} (inpainting)",
            UnetInput::inpainting_channels(latent)
        ))
    })?;
    let xl = family.xl();
    let unet = Unet::new(
        vb(&weights.unet),
        in_channels,
        latent,
        &family.unet_config(),
        xl.map(|x| x.text_time),
    )
    .map_err(bad_weights(unet_name))?;
    let encoder = match (xl, family.text_config(), &weights.text_2, tokenizers.clip_g) {
        (Some(cfg), _, Some(text_2), Some((tokenizer_2, pad_2))) => {
            TextEncoder::Xl(Box::new(XlText {
                cfg,
                clip_l: ClipText::new(vb(&weights.text), cfg.clip_l)
                    .map_err(bad_weights(text_name))?,
                clip_g: ClipText::new(vb(text_2), cfg.clip_g)
                    .map_err(bad_weights(layout::TEXT_ENCODER_2))?,
                tokenizer_2,
                pad_2,
            }))
        }
        (None, Some(cfg), _, _) => TextEncoder::Clip(
            ClipText::new(vb(&weights.text), cfg).map_err(bad_weights(text_name))?,
        ),
        _ => {
            return Err(Error::permanent(format!(
                "family {family} has no text encoder"
            )));
        }
    };
    Ok(Built {
        denoiser: Denoiser::Sd(Box::new(unet)),
        unet_input,
        text: TextSide::new(encoder, tokenizers.clip, family, dtype, device)?,
    })
}

/// The shapes family: its own pixel-space UNet and text encoder, no VAE, always f32.
fn shapes(entry: &ModelEntry, dir: &Path, device: &Device) -> Result<Networks> {
    let tensors = |rel: &str| -> Result<HashMap<String, Tensor>> {
        tensors_of(&read_verified(entry, dir, rel)?, rel, DType::F32, device)
    };
    let weights = Weights {
        unet: tensors(layout::UNET)?,
        text: tensors(layout::TEXT_ENCODER)?,
        text_2: None,
    };
    let tokenizers = Tokenizers {
        clip: load_tokenizer(entry, dir, layout::TOKENIZER)?,
        clip_g: None,
    };
    let built = build(entry, &weights, tokenizers, DType::F32, device)?;
    Ok(Networks {
        denoiser: built.denoiser,
        unet_input: built.unet_input,
        vae: None,
        text: built.text,
        dtype: DType::F32,
        weights: Some(weights),
    })
}

/// [`build`] for the shapes family: its pixel-space UNet (architecture read from the weights)
/// and positional text encoder.
fn build_shapes(weights: &Weights, tokenizers: Tokenizers, device: &Device) -> Result<Built> {
    let vb =
        |map: &HashMap<String, Tensor>| VarBuilder::from_tensors(map.clone(), DType::F32, device);
    let unet_vb = vb(&weights.unet);
    let unet = ShapesConfig::of_weights(&unet_vb)
        .and_then(|cfg| ShapesUnet::new(cfg, unet_vb))
        .map_err(bad_weights(layout::UNET))?;
    let encoder = ShapesText::new(vb(&weights.text)).map_err(bad_weights(layout::TEXT_ENCODER))?;
    Ok(Built {
        denoiser: Denoiser::Shapes(Box::new(unet)),
        unet_input: UnetInput::Latents,
        text: TextSide::new(
            TextEncoder::Shapes(encoder),
            tokenizers.clip,
            Family::Shapes,
            DType::F32,
            device,
        )?,
    })
}
