//! The building blocks of the Stable Diffusion UNet and VAE — resnets, down/up samplers, the
//! spatial transformer and the VAE's attention — on pixelfarm's CPU kernels
//! ([`pixelfarm_kernels`]).
//!
//! Same weight names and arithmetic as diffusers (and as candle-transformers 0.11's
//! `stable_diffusion` blocks, which these stand in for); what differs:
//! - convolutions, group norms and attention are [`pixelfarm_kernels`]' CPU kernels
//!   (docs/benchmarks.md), cuDNN / candle kernels elsewhere; every "group norm then SiLU" is one
//!   fused pass ([`GroupNorm::forward_silu`]), every convolution adds its bias in its own pass;
//! - GEGLU uses the exact (erf) GELU as diffusers does, where candle's blocks use the tanh
//!   approximation;
//! - every resnet uses the configured group count (candle's down and up blocks always use 32);
//! - a down or up block is one type, with or without cross-attention, instead of four.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use pixelfarm_kernels::{Conv2d, GroupNorm, Linear, transpose_last, upsample_nearest2d};

/// A resnet block: `(x + conv2(silu(norm2(conv1(silu(norm1(x))) + temb)))) / scale`, with a 1×1
/// shortcut convolution when the channel count changes.
pub(crate) struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    time_emb_proj: Option<Linear>,
    shortcut: Option<Conv2d>,
    output_scale: f64,
}

/// What every resnet of a UNet or VAE shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetConfig {
    pub groups: usize,
    pub eps: f64,
    /// Width of the time embedding (`None` in the VAE).
    pub temb: Option<usize>,
    pub output_scale: f64,
}

impl Resnet {
    pub(crate) fn new(vb: VarBuilder, cin: usize, cout: usize, cfg: ResnetConfig) -> Result<Self> {
        let norm = |c, name| GroupNorm::new(cfg.groups, c, cfg.eps, vb.pp(name));
        Ok(Resnet {
            norm1: norm(cin, "norm1")?,
            conv1: Conv2d::new(cin, cout, 3, 1, vb.pp("conv1"))?,
            norm2: norm(cout, "norm2")?,
            conv2: Conv2d::new(cout, cout, 3, 1, vb.pp("conv2"))?,
            time_emb_proj: match cfg.temb {
                Some(t) => Some(Linear::load(t, cout, true, vb.pp("time_emb_proj"))?),
                None => None,
            },
            shortcut: if cin == cout {
                None
            } else {
                Some(Conv2d::new(cin, cout, 1, 1, vb.pp("conv_shortcut"))?)
            },
            output_scale: cfg.output_scale,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        // The time embedding's shift and the residual are added in the convolutions' own pass.
        let shift = match (temb, &self.time_emb_proj) {
            (Some(t), Some(proj)) => Some(proj.forward(&candle_nn::ops::silu(t)?)?),
            _ => None,
        };
        let h = self
            .conv1
            .forward_add(&self.norm1.forward_silu(x)?, shift.as_ref(), None)?;
        let residual = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let y = self
            .conv2
            .forward_add(&self.norm2.forward_silu(&h)?, None, Some(&residual))?;
        if self.output_scale == 1.0 {
            Ok(y)
        } else {
            y / self.output_scale
        }
    }
}

/// A stride-2 3×3 convolution. With `padding` 0 (the VAE encoder) the input is first padded by
/// one row and column at the bottom and right, as diffusers does.
struct Downsample {
    conv: Conv2d,
    pad_after: bool,
}

impl Downsample {
    fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Downsample {
            conv: Conv2d::with_padding(channels, channels, 3, 2, padding, vb.pp("conv"))?,
            pad_after: padding == 0,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_after {
            let x = x
                .pad_with_zeros(D::Minus1, 0, 1)?
                .pad_with_zeros(D::Minus2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// Nearest-neighbour upsampling (to twice the size, or to `size`) and a 3×3 convolution.
struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Upsample {
            conv: Conv2d::new(channels, channels, 3, 1, vb.pp("conv"))?,
        })
    }

    fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (h, w) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&upsample_nearest2d(x, h, w)?)
    }
}

/// Multi-head attention of `x` over itself or over a context (the text).
struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl CrossAttention {
    fn new(vb: VarBuilder, dim: usize, context: Option<usize>, heads: usize) -> Result<Self> {
        let kv = context.unwrap_or(dim);
        Ok(CrossAttention {
            to_q: Linear::load(dim, dim, false, vb.pp("to_q"))?,
            to_k: Linear::load(kv, dim, false, vb.pp("to_k"))?,
            to_v: Linear::load(kv, dim, false, vb.pp("to_v"))?,
            to_out: Linear::load(dim, dim, true, vb.pp("to_out.0"))?,
            heads,
            scale: 1.0 / ((dim / heads) as f64).sqrt(),
        })
    }

    /// The attention's output plus `residual`, added in the output projection's pass.
    fn forward(&self, x: &Tensor, context: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let y = attention(&q, &k, &v, self.heads, self.scale)?;
        self.to_out.forward_add(&y, Some(residual))
    }
}

/// `softmax(q kᵀ · scale) v` over `heads` heads, for `(n, tokens, heads · d)` inputs and output,
/// computed in f32.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    pixelfarm_kernels::attention(&f32(q)?, &f32(k)?, &f32(v)?, heads, scale)?.to_dtype(q.dtype())
}

/// GEGLU feed-forward: `out(a · gelu(b))` where `[a, b] = proj(x)`.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        Ok(FeedForward {
            proj: Linear::load(dim, 2 * inner, true, vb.pp("net.0.proj"))?,
            out: Linear::load(inner, dim, true, vb.pp("net.2"))?,
        })
    }

    /// The feed-forward's output plus `residual`, added in the output layer's pass.
    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.out
            .forward_add(&self.proj.forward_geglu(x)?, Some(residual))
    }
}

/// Self-attention, cross-attention to the text and the feed-forward, each pre-normed and residual.
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl TransformerBlock {
    fn new(vb: VarBuilder, dim: usize, heads: usize, context: usize) -> Result<Self> {
        let norm = |name| candle_nn::layer_norm(dim, 1e-5, vb.pp(name));
        Ok(TransformerBlock {
            norm1: norm("norm1")?,
            attn1: CrossAttention::new(vb.pp("attn1"), dim, None, heads)?,
            norm2: norm("norm2")?,
            attn2: CrossAttention::new(vb.pp("attn2"), dim, Some(context), heads)?,
            norm3: norm("norm3")?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = self.attn1.forward(&self.norm1.forward(x)?, None, x)?;
        let x = self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context), &x)?;
        self.ff.forward(&self.norm3.forward(&x)?, &x)
    }
}

/// The input and output projection of a spatial transformer: a 1×1 convolution on the image
/// (SD 1.x) or a linear layer on the tokens (SD 2.x, SDXL).
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(vb: VarBuilder, cin: usize, cout: usize, linear: bool) -> Result<Self> {
        Ok(if linear {
            Projection::Linear(Linear::load(cin, cout, true, vb)?)
        } else {
            Projection::Conv(Conv2d::new(cin, cout, 1, 1, vb)?)
        })
    }
}

/// `(n, c, h, w)` → `(n, h·w, c)`.
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    transpose_last(&x.reshape((n, c, h * w))?)
}

/// `(n, h·w, c)` → `(n, c, h, w)`.
fn to_image(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, _, c) = x.dims3()?;
    transpose_last(x)?.reshape((n, c, h, w))
}

/// diffusers' `Transformer2DModel`: group norm, projection in, transformer blocks attending to
/// the text, projection out, plus the input.
pub(crate) struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<TransformerBlock>,
    proj_out: Projection,
}

/// What the spatial transformers of one UNet share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerConfig {
    pub groups: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
}

impl SpatialTransformer {
    pub(crate) fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        depth: usize,
        cfg: TransformerConfig,
    ) -> Result<Self> {
        let linear = cfg.linear_projection;
        let blocks = (0..depth)
            .map(|i| {
                let vb = vb.pp("transformer_blocks").pp(i.to_string());
                TransformerBlock::new(vb, channels, heads, cfg.context_dim)
            })
            .collect::<Result<_>>()?;
        Ok(SpatialTransformer {
            norm: GroupNorm::new(cfg.groups, channels, 1e-6, vb.pp("norm"))?,
            proj_in: Projection::new(vb.pp("proj_in"), channels, channels, linear)?,
            blocks,
            proj_out: Projection::new(vb.pp("proj_out"), channels, channels, linear)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let mut t = match &self.proj_in {
            Projection::Conv(p) => to_tokens(&p.forward(&normed)?)?,
            Projection::Linear(p) => p.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            t = block.forward(&t, context)?;
        }
        match &self.proj_out {
            Projection::Conv(p) => p.forward_add(&to_image(&t, h, w)?, None, Some(x)),
            Projection::Linear(p) => to_image(&p.forward(&t)?, h, w)? + x,
        }
    }
}

/// The VAE's single-head self-attention over the pixels of its smallest feature map.
pub(crate) struct AttentionBlock {
    norm: GroupNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    proj: Linear,
    output_scale: f64,
}

impl AttentionBlock {
    pub(crate) fn new(vb: VarBuilder, channels: usize, cfg: ResnetConfig) -> Result<Self> {
        // diffusers' current names first, then the older `query`/`key`/`value`/`proj_attn`;
        // 1×1-convolution weights `(c, c, 1, 1)` of converted checkpoints are taken as linear.
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        let linear = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            let weight = match vb.get((channels, channels), "weight") {
                Ok(w) => w,
                Err(_) => vb
                    .get((channels, channels, 1, 1), "weight")?
                    .reshape((channels, channels))?,
            };
            Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
        };
        Ok(AttentionBlock {
            norm: GroupNorm::new(cfg.groups, channels, cfg.eps, vb.pp("group_norm"))?,
            query: linear(names[0])?,
            key: linear(names[1])?,
            value: linear(names[2])?,
            proj: linear(names[3])?,
            output_scale: cfg.output_scale,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let t = to_tokens(&self.norm.forward(x)?)?;
        let (q, k, v) = (
            self.query.forward(&t)?,
            self.key.forward(&t)?,
            self.value.forward(&t)?,
        );
        let y = attention(&q, &k, &v, 1, 1.0 / (c as f64).sqrt())?;
        let y = (to_image(&self.proj.forward(&y)?, h, w)? + x)?;
        if self.output_scale == 1.0 {
            Ok(y)
        } else {
            y / self.output_scale
        }
    }
}

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
