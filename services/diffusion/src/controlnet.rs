//! ControlNet (Zhang et al. 2023) in diffusers' layout (`ControlNetModel`): a trained copy of the
//! UNet's way down ([`Encoder`]) that also reads a control image — edges, depth, pose, a layout —
//! through a small strided convolution stack (`controlnet_cond_embedding`), and hands the UNet a
//! residual for each state of its way down and for its middle block, each through a 1×1 "zero
//! convolution" (`controlnet_down_blocks.N`, `controlnet_mid_block`).
//!
//! The architecture is the base family's UNet encoder (SD 1.x / 2.x, SDXL with its
//! micro-conditioning); the condition embedding's widths are read from the file, so any
//! embedding that downsamples to the latents' resolution loads (diffusers' default is
//! 16, 32, 96, 256). `global_pool_conditions` ControlNets (shuffle) and guess mode are not
//! supported.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;

use crate::family::Family;
use crate::unet::{Encoder, Residuals, TextTime};
use pixelfarm_kernels::Conv2d;

/// The strided convolutions that bring a control image (RGB in 0..1 at the render's size) to the
/// latents' resolution and the UNet's first width.
struct CondEmbedding {
    conv_in: Conv2d,
    /// Pairs of a 3×3 convolution and a stride-2 one.
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    fn new(vb: &VarBuilder, widths: &[usize], out: usize) -> Result<Self> {
        let vb = vb.pp("controlnet_cond_embedding");
        let conv_in = Conv2d::new(3, widths[0], 3, 1, vb.pp("conv_in"))?;
        let mut blocks = Vec::with_capacity(2 * (widths.len() - 1));
        for (i, pair) in widths.windows(2).enumerate() {
            let (cin, cout) = (pair[0], pair[1]);
            let vb = vb.pp("blocks");
            blocks.push(Conv2d::new(cin, cin, 3, 1, vb.pp((2 * i).to_string()))?);
            blocks.push(Conv2d::new(
                cin,
                cout,
                3,
                2,
                vb.pp((2 * i + 1).to_string()),
            )?);
        }
        let last = widths[widths.len() - 1];
        let conv_out = Conv2d::new(last, out, 3, 1, vb.pp("conv_out"))?;
        Ok(CondEmbedding {
            conv_in,
            blocks,
            conv_out,
        })
    }

    fn forward(&self, cond: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(cond)?.silu()?;
        for b in &self.blocks {
            x = b.forward(&x)?.silu()?;
        }
        self.conv_out.forward(&x)
    }
}

/// One ControlNet, loaded for a family.
pub struct ControlNet {
    encoder: Encoder,
    cond: CondEmbedding,
    down_convs: Vec<Conv2d>,
    mid_conv: Conv2d,
}

/// The name prefix of the condition embedding's strided stack in a ControlNet file.
const EMBEDDING_BLOCKS: &str = "controlnet_cond_embedding.blocks.";

impl ControlNet {
    /// Build (or load) from `vb` (diffusers names) for `family`, with a condition embedding of
    /// `widths` (the first is applied at the image's resolution, each next one halves it).
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape, or `family` has no SD UNet.
    pub fn new(vb: VarBuilder, family: Family, widths: &[usize]) -> Result<Self> {
        if family == Family::Shapes || widths.is_empty() {
            candle_core::bail!("family `{family}` takes no ControlNet");
        }
        let c = family.unet_config();
        let latent = family.defaults().latent_channels;
        let encoder = Encoder::new(&vb, latent, &c, family.xl().map(|x| x.text_time))?;
        let b0 = c.blocks[0].out_channels;
        let cond = CondEmbedding::new(&vb, widths, b0)?;
        // One zero convolution per state the UNet's way up reads back: the input convolution's,
        // then each resnet's of each level, and each downsampler's.
        let mut widths_down = vec![b0];
        for (i, b) in c.blocks.iter().enumerate() {
            widths_down.extend(std::iter::repeat_n(b.out_channels, c.layers_per_block));
            if i + 1 < c.blocks.len() {
                widths_down.push(b.out_channels);
            }
        }
        let down_convs = widths_down
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Conv2d::new(
                    w,
                    w,
                    1,
                    1,
                    vb.pp("controlnet_down_blocks").pp(i.to_string()),
                )
            })
            .collect::<Result<_>>()?;
        let last = c.blocks[c.blocks.len() - 1].out_channels;
        let mid_conv = Conv2d::new(last, last, 1, 1, vb.pp("controlnet_mid_block"))?;
        Ok(ControlNet {
            encoder,
            cond,
            down_convs,
            mid_conv,
        })
    }

    /// Load a diffusers-layout ControlNet file (`diffusion_pytorch_model.safetensors`) for
    /// `family`: its condition embedding's widths read from the file, checked to bring the
    /// control image to the latents' resolution.
    ///
    /// # Errors
    /// For a file that is not safetensors, or weights that do not fit `family`'s UNet.
    pub fn load(bytes: &[u8], family: Family, dtype: DType, device: &Device) -> Result<Self> {
        // Each tensor in the networks' dtype as it is read, its file-dtype copy dropped at once:
        // the peak is the network in `dtype` plus one tensor, not both whole copies.
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?
            .into_iter()
            .map(|(name, t)| t.to_dtype(dtype).map(|t| (name, t)))
            .collect::<Result<HashMap<_, _>>>()?;
        let widths = embedding_widths(&tensors)?;
        let down = family.defaults().vae_downscale as usize;
        let factor = 1usize << (widths.len() - 1);
        if factor != down {
            candle_core::bail!(
                "its condition embedding downsamples the control image {factor} times; family `{family}` needs {down}"
            );
        }
        Self::new(
            VarBuilder::from_tensors(tensors, dtype, device),
            family,
            &widths,
        )
    }

    /// The embedding of control images `image` `(n, 3, h, w)` in 0..1 at the render's size, in
    /// `dtype`: what [`Self::forward`] adds to its input convolution's output. It depends on the
    /// image alone, so a render computes it once per pass, not at every step.
    ///
    /// # Errors
    /// For an image of the wrong shape.
    pub fn condition(&self, image: &Tensor, dtype: DType) -> Result<Tensor> {
        self.cond.forward(&image.to_dtype(dtype)?)
    }

    /// The residuals for the UNet call on `x` (the latents alone, scaled as the UNet reads them)
    /// at `timestep` with text `ctx` and SDXL's `text_time`, for control images embedded as
    /// `hint` ([`Self::condition`], one row per row of `x`), times `scale` (the control's
    /// weight).
    ///
    /// # Errors
    /// For inputs of the wrong shape.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        ctx: &Tensor,
        text_time: Option<&TextTime>,
        hint: &Tensor,
        scale: f64,
    ) -> Result<Residuals> {
        let emb = self.encoder.embedding(x, timestep, text_time)?;
        let (states, mid) = self.encoder.forward(x, &emb, ctx, Some(hint))?;
        let down = states
            .iter()
            .zip(&self.down_convs)
            .map(|(s, conv)| conv.forward(s)? * scale)
            .collect::<Result<_>>()?;
        Ok(Residuals {
            down,
            mid: (self.mid_conv.forward(&mid)? * scale)?,
        })
    }
}

/// The condition embedding's widths in a ControlNet file: `conv_in`'s, then each stride-2
/// convolution's (`blocks.1`, `blocks.3`, …).
fn embedding_widths(tensors: &HashMap<String, Tensor>) -> Result<Vec<usize>> {
    let width = |name: &str| -> Result<usize> {
        match tensors.get(name) {
            Some(t) => t.dim(0),
            None => candle_core::bail!("it has no `{name}`: not a ControlNet in diffusers' layout"),
        }
    };
    let mut widths = vec![width("controlnet_cond_embedding.conv_in.weight")?];
    let pairs = tensors
        .keys()
        .filter(|k| k.starts_with(EMBEDDING_BLOCKS) && k.ends_with(".weight"))
        .count()
        / 2;
    for i in 0..pairs {
        widths.push(width(&format!("{EMBEDDING_BLOCKS}{}.weight", 2 * i + 1))?);
    }
    Ok(widths)
}

#[cfg(test)]
mod tests;
