//! A registry entry's files, sha256-verified, built into the networks of its family: the
//! denoiser, the VAE (latent families) and the text side.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use pixelfarm_core::{Error, ErrorKind, Result};
use std::path::Path;
use tokenizers::Tokenizer;

use crate::clip::ClipText;
use crate::condition::{TextEncoder, TextSide, XlText, token_id};
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
    let defaults = family.defaults();
    let dtype = if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    };
    let tensors = |rel: &str, dtype: DType| -> Result<VarBuilder<'static>> {
        let bytes = read_verified(entry, dir, rel)?;
        VarBuilder::from_buffered_safetensors(bytes, dtype, device).map_err(bad_weights(rel))
    };
    let (unet_vb, vae_vb, text_vb) = match &entry.checkpoint {
        None => (
            tensors(layout::UNET, dtype)?,
            // The VAE stays f32: SDXL's overflows in f16, and it is cheap.
            tensors(layout::VAE, DType::F32)?,
            tensors(layout::TEXT_ENCODER, dtype)?,
        ),
        Some(ckpt) => crate::checkpoint::split(entry, dir, ckpt, dtype, device)?,
    };
    let unet_name = entry.checkpoint.as_deref().unwrap_or(layout::UNET);
    let vae_name = entry.checkpoint.as_deref().unwrap_or(layout::VAE);
    let text_name = entry.checkpoint.as_deref().unwrap_or(layout::TEXT_ENCODER);
    let latent = defaults.latent_channels;
    let in_channels = unet_vb
        .get_unchecked("conv_in.weight")
        .map_err(bad_weights(unet_name))?
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
        unet_vb,
        in_channels,
        latent,
        &family.unet_config(),
        xl.map(|x| x.text_time),
    )
    .map_err(bad_weights(unet_name))?;
    let vae = Vae::new(vae_vb, 3, 3, &family.vae_config()).map_err(bad_weights(vae_name))?;
    let encoder = match (xl, family.text_config()) {
        (Some(cfg), _) => {
            let text_2 = tensors(layout::TEXT_ENCODER_2, dtype)?;
            let tokenizer_2 = load_tokenizer(entry, dir, layout::TOKENIZER_2)?;
            let pad_2 = token_id(&tokenizer_2, layout::TOKENIZER_2, "!")?;
            TextEncoder::Xl(Box::new(XlText {
                cfg,
                clip_l: ClipText::new(text_vb, cfg.clip_l).map_err(bad_weights(text_name))?,
                clip_g: ClipText::new(text_2, cfg.clip_g)
                    .map_err(bad_weights(layout::TEXT_ENCODER_2))?,
                tokenizer_2,
                pad_2,
            }))
        }
        (None, Some(cfg)) => {
            TextEncoder::Clip(ClipText::new(text_vb, cfg).map_err(bad_weights(text_name))?)
        }
        (None, None) => {
            return Err(Error::permanent(format!(
                "family {family} has no text encoder"
            )));
        }
    };
    let tokenizer = load_tokenizer(entry, dir, layout::TOKENIZER)?;
    Ok(Networks {
        denoiser: Denoiser::Sd(Box::new(unet)),
        unet_input,
        vae: Some(vae),
        text: TextSide::new(encoder, tokenizer, family, dtype, device)?,
        dtype,
    })
}

/// The shapes family: its own pixel-space UNet and text encoder, no VAE, always f32.
fn shapes(entry: &ModelEntry, dir: &Path, device: &Device) -> Result<Networks> {
    let tensors = |rel: &str| -> Result<VarBuilder<'static>> {
        let bytes = read_verified(entry, dir, rel)?;
        VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(bad_weights(rel))
    };
    let unet_vb = tensors(layout::UNET)?;
    let unet = ShapesConfig::of_weights(&unet_vb)
        .and_then(|cfg| ShapesUnet::new(cfg, unet_vb))
        .map_err(bad_weights(layout::UNET))?;
    let encoder = ShapesText::new(tensors(layout::TEXT_ENCODER)?)
        .map_err(bad_weights(layout::TEXT_ENCODER))?;
    let tokenizer = load_tokenizer(entry, dir, layout::TOKENIZER)?;
    Ok(Networks {
        denoiser: Denoiser::Shapes(Box::new(unet)),
        unet_input: UnetInput::Latents,
        vae: None,
        text: TextSide::new(
            TextEncoder::Shapes(encoder),
            tokenizer,
            Family::Shapes,
            DType::F32,
            device,
        )?,
        dtype: DType::F32,
    })
}
