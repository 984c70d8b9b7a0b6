//! The Stable Diffusion UNet on pixelfarm's blocks (`blocks`), with SDXL's
//! micro-conditioning that candle's own `UNet2DConditionModel` lacks.
//!
//! SDXL adds to the timestep embedding an `add_embedding` of the pooled text embedding (second text
//! encoder) and of six "time ids" — original height and width, crop top and left, target height and
//! width — each projected sinusoidally (diffusers' `addition_embed_type = "text_time"`). candle's
//! UNet has no such input, so with it real SDXL weights would load (their `add_embedding.*` tensors
//! silently unread) and render wrong images. The top level follows candle's (same weight names, same
//! configs: `UNet2DConditionModelConfig`); its flash-attention option, which pixelfarm does not
//! use, is left out. The way down ([`Encoder`]) is its own type: ControlNets copy it.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use candle_transformers::models::stable_diffusion::unet_2d::{
    BlockConfig, UNet2DConditionModelConfig,
};

use crate::blocks::{
    DownBlock, LevelConfig, MidAttention, MidBlock, ResnetConfig, SpatialTransformer,
    TransformerConfig, UpBlock,
};
use pixelfarm_kernels::{Conv2d, GroupNorm};

/// SDXL's extra conditioning input (diffusers' `addition_embed_type = "text_time"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextTimeConfig {
    /// Width of each time id's sinusoidal projection (`addition_time_embed_dim`, 256 in SDXL).
    pub time_embed_dim: usize,
    /// Width of the pooled text embedding (1280 in SDXL).
    pub pooled_dim: usize,
}

/// How many micro-conditioning values SDXL takes per image.
pub const TIME_IDS: usize = 6;

/// What SDXL's `add_embedding` reads, per batch row.
#[derive(Debug, Clone)]
pub struct TextTime {
    /// `(n, pooled_dim)`: the second text encoder's projected end-of-text state.
    pub pooled: Tensor,
    /// `(n, 6)`: original height, width, crop top, crop left, target height, width.
    pub time_ids: Tensor,
}

/// The added residuals of ControlNets ([`crate::controlnet`]): one per state the UNet's way up
/// reads back (same shapes, same order), and one for the middle block's output.
#[derive(Debug, Clone)]
pub struct Residuals {
    /// Added to the down path's states.
    pub down: Vec<Tensor>,
    /// Added to the middle block's output.
    pub mid: Tensor,
}

impl Residuals {
    /// The sum of two ControlNets' residuals (several control at once).
    ///
    /// # Errors
    /// When their shapes differ.
    pub fn add(&self, other: &Residuals) -> Result<Residuals> {
        if self.down.len() != other.down.len() {
            candle_core::bail!(
                "{} and {} down residuals cannot be added",
                self.down.len(),
                other.down.len()
            );
        }
        Ok(Residuals {
            down: self
                .down
                .iter()
                .zip(&other.down)
                .map(|(a, b)| a + b)
                .collect::<Result<_>>()?,
            mid: (&self.mid + &other.mid)?,
        })
    }
}

/// The UNet's way down — input convolution, timestep (and SDXL micro-conditioning) embedding,
/// down blocks and middle block — under the UNet's own weight names. A ControlNet is a trained
/// copy of it ([`crate::controlnet::ControlNet`]).
pub(crate) struct Encoder {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL's micro-conditioning: the time ids' projection and the embedding of `[pooled, ids]`.
    add: Option<(Timesteps, TimestepEmbedding)>,
    down: Vec<DownBlock>,
    mid: MidBlock,
}

impl Encoder {
    pub(crate) fn new(
        vb: &VarBuilder,
        in_channels: usize,
        c: &UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> Result<Self> {
        let n = c.blocks.len();
        let b0 = c.blocks[0].out_channels;
        let last = &c.blocks[n - 1];
        let emb_dim = b0 * 4;
        let conv_in = Conv2d::new(in_channels, b0, 3, 1, vb.pp("conv_in"))?;
        let time_proj = Timesteps::new(b0, c.flip_sin_to_cos, c.freq_shift);
        let time_embedding = TimestepEmbedding::new(vb.pp("time_embedding"), b0, emb_dim)?;
        let add = match text_time {
            Some(tt) => Some((
                Timesteps::new(tt.time_embed_dim, c.flip_sin_to_cos, c.freq_shift),
                TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    tt.pooled_dim + TIME_IDS * tt.time_embed_dim,
                    emb_dim,
                )?,
            )),
            None => None,
        };
        let resnet = resnet_config(c);
        let mut down = Vec::with_capacity(n);
        for (i, b) in c.blocks.iter().enumerate() {
            let cin = if i > 0 {
                c.blocks[i - 1].out_channels
            } else {
                b0
            };
            let vb = vb.pp("down_blocks").pp(i.to_string());
            let lvl = level(b, cin, c.layers_per_block, i < n - 1);
            down.push(DownBlock::new(
                vb,
                lvl,
                resnet,
                Some(transformer_config(c)),
                c.downsample_padding,
            )?);
        }
        let mid_resnet = ResnetConfig {
            output_scale: c.mid_block_scale_factor,
            ..resnet
        };
        let mid_attention = SpatialTransformer::new(
            vb.pp("mid_block.attentions.0"),
            last.out_channels,
            last.attention_head_dim,
            last.use_cross_attn.unwrap_or(1),
            transformer_config(c),
        )?;
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            last.out_channels,
            mid_resnet,
            MidAttention::Spatial(mid_attention),
        )?;
        Ok(Encoder {
            conv_in,
            time_proj,
            time_embedding,
            add,
            down,
            mid,
        })
    }

    /// How many levels the way down has.
    pub(crate) fn levels(&self) -> usize {
        self.down.len()
    }

    /// The timestep embedding of `n` rows at `timestep`, plus SDXL's micro-conditioning.
    ///
    /// # Errors
    /// When `text_time` is given to an encoder without micro-conditioning or missing for one
    /// with it.
    pub(crate) fn embedding(
        &self,
        x: &Tensor,
        timestep: f64,
        text_time: Option<&TextTime>,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let t = (Tensor::ones(n, x.dtype(), x.device())? * timestep)?;
        let emb = self.time_embedding.forward(&self.time_proj.forward(&t)?)?;
        match (&self.add, text_time) {
            (Some((proj, embed)), Some(tt)) => {
                let ids = proj
                    .forward(&tt.time_ids.flatten_all()?.to_dtype(x.dtype())?)?
                    .reshape((n, ()))?;
                let input = Tensor::cat(&[&tt.pooled.to_dtype(x.dtype())?, &ids], 1)?;
                emb + embed.forward(&input)?
            }
            (None, None) => Ok(emb),
            (Some(_), None) => {
                candle_core::bail!("this UNet needs the pooled text embedding and the time ids")
            }
            (None, Some(_)) => candle_core::bail!("this UNet takes no micro-conditioning"),
        }
    }

    /// The states the way up reads back (the input convolution's output first, then each down
    /// block's) and the middle block's output, for input `x`, embedding `emb` and text `ctx`.
    /// `hint` (a ControlNet's embedded condition) is added to the input convolution's output.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        ctx: &Tensor,
        hint: Option<&Tensor>,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        let mut x = self.conv_in.forward(x)?;
        if let Some(h) = hint {
            x = (x + h)?;
        }
        let mut skips = vec![x.clone()];
        for block in &self.down {
            let (out, states) = block.forward(&x, Some(emb), Some(ctx))?;
            skips.extend(states);
            x = out;
        }
        let mid = self.mid.forward(&x, Some(emb), Some(ctx))?;
        Ok((skips, mid))
    }
}

fn resnet_config(c: &UNet2DConditionModelConfig) -> ResnetConfig {
    ResnetConfig {
        groups: c.norm_num_groups,
        eps: c.norm_eps,
        temb: Some(c.blocks[0].out_channels * 4),
        output_scale: 1.0,
    }
}

fn transformer_config(c: &UNet2DConditionModelConfig) -> TransformerConfig {
    TransformerConfig {
        groups: c.norm_num_groups,
        context_dim: c.cross_attention_dim,
        linear_projection: c.use_linear_projection,
    }
}

fn level(b: &BlockConfig, cin: usize, layers: usize, resample: bool) -> LevelConfig {
    LevelConfig {
        cin,
        cout: b.out_channels,
        layers,
        attention: b.use_cross_attn.map(|depth| (b.attention_head_dim, depth)),
        resample,
    }
}

/// The UNet of every SD family.
pub struct Unet {
    encoder: Encoder,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Unet {
    /// Build (or load) from `vb` (diffusers names).
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        c: &UNet2DConditionModelConfig,
        text_time: Option<TextTimeConfig>,
    ) -> Result<Self> {
        let encoder = Encoder::new(&vb, in_channels, c, text_time)?;
        let n = c.blocks.len();
        let b0 = c.blocks[0].out_channels;
        let last = &c.blocks[n - 1];
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let b = &c.blocks[n - 1 - i];
            let prev = if i > 0 {
                c.blocks[n - i].out_channels
            } else {
                last.out_channels
            };
            let cin = c.blocks[if i == n - 1 { 0 } else { n - i - 2 }].out_channels;
            let vb = vb.pp("up_blocks").pp(i.to_string());
            let lvl = level(b, cin, c.layers_per_block + 1, i < n - 1);
            up.push(UpBlock::new(
                vb,
                lvl,
                prev,
                resnet_config(c),
                Some(transformer_config(c)),
            )?);
        }
        let norm_out = GroupNorm::new(c.norm_num_groups, b0, c.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = Conv2d::new(b0, out_channels, 3, 1, vb.pp("conv_out"))?;
        Ok(Unet {
            encoder,
            up,
            norm_out,
            conv_out,
        })
    }

    /// Whether this UNet takes SDXL's micro-conditioning.
    pub fn takes_text_time(&self) -> bool {
        self.encoder.add.is_some()
    }

    /// The model output for latents `x` `(n, c, h, w)` at `timestep`, text `ctx` `(n, tokens, dim)`,
    /// for SDXL `text_time`, and ControlNets' `residuals` added to the way down's states (as
    /// diffusers' `down_block_additional_residuals` and `mid_block_additional_residual`).
    ///
    /// # Errors
    /// For inputs of the wrong shape, and when `text_time` is given to a UNet without
    /// micro-conditioning or missing for one with it.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        ctx: &Tensor,
        text_time: Option<&TextTime>,
        residuals: Option<&Residuals>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let levels = self.encoder.levels();
        let factor = 1usize << (levels - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        let emb = self.encoder.embedding(x, timestep, text_time)?;
        let (mut skips, mut x) = self.encoder.forward(x, &emb, ctx, None)?;
        if let Some(r) = residuals {
            if r.down.len() != skips.len() {
                candle_core::bail!(
                    "{} ControlNet residuals for a UNet with {} down states",
                    r.down.len(),
                    skips.len()
                );
            }
            for (s, add) in skips.iter_mut().zip(&r.down) {
                *s = (&*s + add)?;
            }
            x = (x + &r.mid)?;
        }
        let mut upsample_size = None;
        for (i, block) in self.up.iter().enumerate() {
            let res = skips.split_off(skips.len() - block.skips());
            if i < levels - 1
                && odd_size
                && let Some(s) = skips.last()
            {
                let (_, _, sh, sw) = s.dims4()?;
                upsample_size = Some((sh, sw));
            }
            x = block.forward(&x, &res, Some(&emb), Some(ctx), upsample_size)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}

#[cfg(test)]
mod tests;
