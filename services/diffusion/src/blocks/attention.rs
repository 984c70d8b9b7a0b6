//! The UNet's spatial transformer (self- and cross-attention, GEGLU feed-forward) and the VAE's
//! attention block.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use pixelfarm_kernels::{Conv2d, GroupNorm, Linear, transpose_last};

use super::resnet::ResnetConfig;

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
