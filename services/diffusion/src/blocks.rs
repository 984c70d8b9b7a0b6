//! The building blocks of the Stable Diffusion UNet and VAE — resnets, down/up samplers, the
//! spatial transformer and the VAE's attention — on pixelfarm's CPU kernels
//! ([`pixelfarm_kernels`]).
//!
//! Same weight names and arithmetic as diffusers (and as candle-transformers 0.11's
//! `stable_diffusion` blocks, which these stand in for); what differs:
//! - convolutions, group norms and attention are [`pixelfarm_kernels`]' CPU kernels
//!   (docs/benchmarks.md), cuDNN / candle kernels elsewhere; every "group norm then SiLU" is one
//!   fused pass ([`pixelfarm_kernels::GroupNorm::forward_silu`]), every convolution adds its bias
//!   in its own pass;
//! - GEGLU uses the exact (erf) GELU as diffusers does, where candle's blocks use the tanh
//!   approximation;
//! - every resnet uses the configured group count (candle's down and up blocks always use 32);
//! - a down or up block is one type, with or without cross-attention, instead of four.
//!
//! Here: the levels a UNet or VAE stacks (down, up and middle blocks); `resnet` holds the resnets
//! and the down/up samplers, `attention` the spatial transformer and the VAE's attention.

mod attention;
mod resnet;

pub(crate) use attention::{AttentionBlock, SpatialTransformer, TransformerConfig};
pub(crate) use resnet::ResnetConfig;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use resnet::{Downsample, Resnet, Upsample};

/// One level of a UNet's (or VAE encoder's) way down: resnets, each followed by a spatial
/// transformer in a cross-attention block, then a stride-2 downsampler except at the bottom.
pub(crate) struct DownBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    downsampler: Option<Downsample>,
}

/// The shape of one down or up block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelConfig {
    pub cin: usize,
    pub cout: usize,
    pub layers: usize,
    /// Spatial transformers after each resnet: `Some((heads, depth))`.
    pub attention: Option<(usize, usize)>,
    /// Whether the block changes the resolution (down- or upsampler).
    pub resample: bool,
}

impl DownBlock {
    /// `padding` is the downsampler's (1 in UNets, 0 in the VAE encoder).
    pub(crate) fn new(
        vb: VarBuilder,
        level: LevelConfig,
        resnet: ResnetConfig,
        transformer: Option<TransformerConfig>,
        padding: usize,
    ) -> Result<Self> {
        let resnets = plain_resnets(&vb, level, resnet)?;
        Ok(DownBlock {
            resnets,
            attentions: attentions(&vb, level, transformer)?,
            downsampler: match level.resample {
                true => Some(Downsample::new(
                    vb.pp("downsamplers.0"),
                    level.cout,
                    padding,
                )?),
                false => None,
            },
        })
    }

    /// The block's output and the states the up path reads back (one per resnet and one after
    /// the downsampler).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, temb)?;
            x = attend(self.attentions.get(i), &x, context)?;
            states.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            states.push(x.clone());
        }
        Ok((x, states))
    }
}

/// A level's resnets without skip inputs: the first from `cin` channels, the rest at `cout`.
fn plain_resnets(vb: &VarBuilder, level: LevelConfig, resnet: ResnetConfig) -> Result<Vec<Resnet>> {
    (0..level.layers)
        .map(|i| {
            let cin = if i == 0 { level.cin } else { level.cout };
            Resnet::new(vb.pp("resnets").pp(i.to_string()), cin, level.cout, resnet)
        })
        .collect()
}

/// The spatial transformers of a block that has them (one per resnet), none otherwise.
fn attentions(
    vb: &VarBuilder,
    level: LevelConfig,
    transformer: Option<TransformerConfig>,
) -> Result<Vec<SpatialTransformer>> {
    match (level.attention, transformer) {
        (Some((heads, depth)), Some(cfg)) => (0..level.layers)
            .map(|i| {
                let vb = vb.pp("attentions").pp(i.to_string());
                SpatialTransformer::new(vb, level.cout, heads, depth, cfg)
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// `x` through `attention` if the block has one at this position.
fn attend(
    attention: Option<&SpatialTransformer>,
    x: &Tensor,
    context: Option<&Tensor>,
) -> Result<Tensor> {
    match (attention, context) {
        (Some(a), Some(ctx)) => a.forward(x, ctx),
        (Some(_), None) => candle_core::bail!("a cross-attention block needs the text context"),
        (None, _) => Ok(x.clone()),
    }
}

/// One level of the way up: resnets over the input concatenated with the matching down-path
/// state (UNet; none in the VAE decoder), each followed by a spatial transformer in a
/// cross-attention block, then nearest upsampling and a convolution except at the top.
pub(crate) struct UpBlock {
    resnets: Vec<Resnet>,
    attentions: Vec<SpatialTransformer>,
    upsampler: Option<Upsample>,
}

impl UpBlock {
    /// A UNet's up block: resnet `i` reads the previous output (`prev` channels for the first)
    /// and a skip state (`cin` channels for the last, the block's own width before).
    pub(crate) fn new(
        vb: VarBuilder,
        level: LevelConfig,
        prev: usize,
        resnet: ResnetConfig,
        transformer: Option<TransformerConfig>,
    ) -> Result<Self> {
        let resnets = (0..level.layers)
            .map(|i| {
                let skip = if i == level.layers - 1 {
                    level.cin
                } else {
                    level.cout
                };
                let input = if i == 0 { prev } else { level.cout };
                let vb = vb.pp("resnets").pp(i.to_string());
                Resnet::new(vb, input + skip, level.cout, resnet)
            })
            .collect::<Result<_>>()?;
        Self::assemble(vb, level, resnets, transformer)
    }

    /// A VAE decoder's up block: plain resnets, no skips.
    pub(crate) fn decoder(
        vb: VarBuilder,
        level: LevelConfig,
        resnet: ResnetConfig,
    ) -> Result<Self> {
        let resnets = plain_resnets(&vb, level, resnet)?;
        Self::assemble(vb, level, resnets, None)
    }

    fn assemble(
        vb: VarBuilder,
        level: LevelConfig,
        resnets: Vec<Resnet>,
        transformer: Option<TransformerConfig>,
    ) -> Result<Self> {
        Ok(UpBlock {
            resnets,
            attentions: attentions(&vb, level, transformer)?,
            upsampler: match level.resample {
                true => Some(Upsample::new(vb.pp("upsamplers.0"), level.cout)?),
                false => None,
            },
        })
    }

    /// How many skip states this block reads.
    pub(crate) fn skips(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are this block's down-path states in the order they were made (the last one is
    /// read first); empty in the VAE decoder. `size` overrides the upsampled size (odd inputs).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: Option<&Tensor>,
        context: Option<&Tensor>,
        size: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            if !skips.is_empty() {
                x = Tensor::cat(&[&x, &skips[skips.len() - i - 1]], 1)?;
            }
            x = resnet.forward(&x, temb)?;
            x = attend(self.attentions.get(i), &x, context)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, size),
            None => Ok(x),
        }
    }
}

/// The attention of a middle block: a spatial transformer (UNet) or the VAE's attention block.
pub(crate) enum MidAttention {
    Spatial(SpatialTransformer),
    Vae(AttentionBlock),
}

/// The bottom of a UNet or VAE: a resnet, then attention and a resnet.
pub(crate) struct MidBlock {
    first: Resnet,
    attention: MidAttention,
    second: Resnet,
}

impl MidBlock {
    pub(crate) fn new(
        vb: VarBuilder,
        channels: usize,
        resnet: ResnetConfig,
        attention: MidAttention,
    ) -> Result<Self> {
        let res = |i: usize| {
            Resnet::new(
                vb.pp("resnets").pp(i.to_string()),
                channels,
                channels,
                resnet,
            )
        };
        Ok(MidBlock {
            first: res(0)?,
            attention,
            second: res(1)?,
        })
    }

    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: Option<&Tensor>,
        context: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = self.first.forward(x, temb)?;
        let x = match &self.attention {
            MidAttention::Spatial(a) => attend(Some(a), &x, context)?,
            MidAttention::Vae(a) => a.forward(&x)?,
        };
        self.second.forward(&x, temb)
    }
}
