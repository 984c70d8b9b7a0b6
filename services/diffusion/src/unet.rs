//! The Stable Diffusion UNet on pixelfarm's blocks (`blocks`), with SDXL's
//! micro-conditioning that candle's own `UNet2DConditionModel` lacks.
//!
//! SDXL adds to the timestep embedding an `add_embedding` of the pooled text embedding (second text
//! encoder) and of six "time ids" — original height and width, crop top and left, target height and
//! width — each projected sinusoidally (diffusers' `addition_embed_type = "text_time"`). candle's
//! UNet has no such input, so with it real SDXL weights would load (their `add_embedding.*` tensors
//! silently unread) and render wrong images. The top level follows candle's (same weight names, same
//! configs: `UNet2DConditionModelConfig`); its flash-attention and ControlNet-residual options,
//! which pixelfarm does not use, are left out.

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

/// The UNet of every SD family.
pub struct Unet {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL's micro-conditioning: the time ids' projection and the embedding of `[pooled, ids]`.
    add: Option<(Timesteps, TimestepEmbedding)>,
    down: Vec<DownBlock>,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    blocks: usize,
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
        let resnet = ResnetConfig {
            groups: c.norm_num_groups,
            eps: c.norm_eps,
            temb: Some(emb_dim),
            output_scale: 1.0,
        };
        let transformer = TransformerConfig {
            groups: c.norm_num_groups,
            context_dim: c.cross_attention_dim,
            linear_projection: c.use_linear_projection,
        };
        let level = |b: &BlockConfig, cin: usize, layers: usize, resample: bool| LevelConfig {
            cin,
            cout: b.out_channels,
            layers,
            attention: b.use_cross_attn.map(|depth| (b.attention_head_dim, depth)),
            resample,
        };

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
                Some(transformer),
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
            transformer,
        )?;
        let mid = MidBlock::new(
            vb.pp("mid_block"),
            last.out_channels,
            mid_resnet,
            MidAttention::Spatial(mid_attention),
        )?;

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
            up.push(UpBlock::new(vb, lvl, prev, resnet, Some(transformer))?);
        }
        let norm_out = GroupNorm::new(c.norm_num_groups, b0, c.norm_eps, vb.pp("conv_norm_out"))?;
        let conv_out = Conv2d::new(b0, out_channels, 3, 1, vb.pp("conv_out"))?;
        Ok(Unet {
            conv_in,
            time_proj,
            time_embedding,
            add,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            blocks: n,
        })
    }

    /// Whether this UNet takes SDXL's micro-conditioning.
    pub fn takes_text_time(&self) -> bool {
        self.add.is_some()
    }

    /// The model output for latents `x` `(n, c, h, w)` at `timestep`, text `ctx` `(n, tokens, dim)`
    /// and, for SDXL, `text_time`.
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
    ) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let factor = 1usize << (self.blocks - 1);
        let odd_size = h % factor != 0 || w % factor != 0;
        let t = (Tensor::ones(n, x.dtype(), x.device())? * timestep)?;
        let mut emb = self.time_embedding.forward(&self.time_proj.forward(&t)?)?;
        match (&self.add, text_time) {
            (Some((proj, embed)), Some(tt)) => {
                let ids = proj
                    .forward(&tt.time_ids.flatten_all()?.to_dtype(x.dtype())?)?
                    .reshape((n, ()))?;
                let input = Tensor::cat(&[&tt.pooled.to_dtype(x.dtype())?, &ids], 1)?;
                emb = (emb + embed.forward(&input)?)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                candle_core::bail!("this UNet needs the pooled text embedding and the time ids")
            }
            (None, Some(_)) => candle_core::bail!("this UNet takes no micro-conditioning"),
        }

        let x = self.conv_in.forward(x)?;
        let mut skips = vec![x.clone()];
        let mut x = x;
        for block in &self.down {
            let (out, states) = block.forward(&x, Some(&emb), Some(ctx))?;
            skips.extend(states);
            x = out;
        }
        let mut x = self.mid.forward(&x, Some(&emb), Some(ctx))?;
        let mut upsample_size = None;
        for (i, block) in self.up.iter().enumerate() {
            let res = skips.split_off(skips.len() - block.skips());
            if i < self.blocks - 1
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
