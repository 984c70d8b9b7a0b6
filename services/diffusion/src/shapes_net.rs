//! The `shapes` family's networks: a small pixel-space conditional UNet and a positional text
//! encoder, written only with ops that have a backward (convolution and group norm from
//! [`pixelfarm_kernels`], explicit `exp / sum` softmax), so the same code trains
//! (`pixelfarm-shapes`) and renders (this engine).
//!
//! The "latents" of this family are the pixels themselves (3 channels in -1..1, downscale 1); the
//! UNet folds 2×2 pixels into channels on the way in and unfolds them on the way out. It predicts
//! `v` for the engine's `scaled_linear` schedule, like any other family.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use pixelfarm_kernels::{Conv2d, GroupNorm, upsample_nearest2d};

/// Tokens the text encoder reads (start, prompt, end, padding).
pub const MAX_TOKENS: usize = 16;
/// Rows of the token embedding: the closed vocabulary plus room to spare.
pub const VOCAB_CAPACITY: usize = 32;
/// Width of a token's embedding.
pub const TEXT_DIM: usize = 32;

/// Widths of the UNet: channels at 1/2, 1/4 and 1/8 of the image side, and the conditioning width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapesConfig {
    /// Channels per level (the first level works on 2×2-folded pixels).
    pub widths: [usize; 3],
    /// Width of the time + text conditioning vector.
    pub emb: usize,
    /// Groups of every group norm.
    pub groups: usize,
    /// Heads of the self-attention at the lowest level.
    pub heads: usize,
    /// Channels of the full-resolution refinement head (`Refiner`); 0 for none.
    pub refine: usize,
}

impl ShapesConfig {
    /// Groups of every group norm in a [`ShapesConfig::new`] architecture.
    pub const GROUPS: usize = 8;
    /// Attention heads in a [`ShapesConfig::new`] architecture.
    pub const HEADS: usize = 4;

    /// The trainer's default architecture (the first shipped weights').
    pub const DEFAULT: ShapesConfig = ShapesConfig {
        widths: [32, 64, 128],
        emb: 128,
        groups: Self::GROUPS,
        heads: Self::HEADS,
        refine: 0,
    };

    /// An architecture of the given widths with [`Self::GROUPS`] groups and [`Self::HEADS`] heads.
    ///
    /// # Errors
    /// When a width is zero or not a multiple of the group count, or the lowest level's width is
    /// not a multiple of the head count: the error names what is accepted.
    pub fn new(widths: [usize; 3], emb: usize) -> std::result::Result<Self, String> {
        if let Some(w) = widths
            .iter()
            .find(|&&w| w == 0 || w % Self::GROUPS != 0 || w % Self::HEADS != 0)
        {
            return Err(format!(
                "width {w}: every width must be a positive multiple of {} (group norm groups) \
                 and {} (attention heads)",
                Self::GROUPS,
                Self::HEADS
            ));
        }
        if emb == 0 {
            return Err("conditioning width 0: it must be positive".to_string());
        }
        Ok(ShapesConfig {
            widths,
            emb,
            groups: Self::GROUPS,
            heads: Self::HEADS,
            refine: 0,
        })
    }

    /// The same architecture with a refinement head of `channels` (0: none).
    ///
    /// # Errors
    /// When `channels` is not a multiple of the group count.
    pub fn with_refine(self, channels: usize) -> std::result::Result<Self, String> {
        if !channels.is_multiple_of(Self::GROUPS) {
            return Err(format!(
                "refinement width {channels}: it must be 0 (none) or a multiple of {} (group \
                 norm groups)",
                Self::GROUPS
            ));
        }
        Ok(ShapesConfig {
            refine: channels,
            ..self
        })
    }

    /// The architecture of saved UNet weights, read from the shapes of the tensors that fix it
    /// (the first convolution of each level and of the refinement head, if any, and the time MLP),
    /// so a model folder needs no config file and weights of any width load through the same
    /// registry entry.
    ///
    /// # Errors
    /// When a tensor is missing or not a convolution / linear weight, or the widths are not a
    /// valid architecture.
    pub fn of_weights(vb: &VarBuilder) -> Result<Self> {
        let rows = |name: &str, rank: usize| -> Result<usize> {
            let t = vb.get_unchecked(name)?;
            if t.rank() != rank {
                candle_core::bail!("{name} has shape {:?}; expected rank {rank}", t.dims());
            }
            t.dim(0)
        };
        let widths = [
            rows("conv_in.weight", 4)?,
            rows("down1_conv.weight", 4)?,
            rows("down2_conv.weight", 4)?,
        ];
        let refine = if vb.contains_tensor(Refiner::FIRST) {
            rows(Refiner::FIRST, 4)?
        } else {
            0
        };
        Self::new(widths, rows("time1.weight", 2)?)
            .and_then(|c| c.with_refine(refine))
            .map_err(candle_core::Error::msg)
    }
}

fn group_norm(groups: usize, ch: usize, vb: VarBuilder) -> Result<GroupNorm> {
    GroupNorm::new(groups, ch, 1e-5, vb)
}

/// Softmax over the last dimension from `exp` and `sum` (candle's fused softmax has no backward).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let x = x
        .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    x.broadcast_div(&x.sum_keepdim(D::Minus1)?)
}

struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    film: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(cin: usize, cout: usize, c: &ShapesConfig, vb: VarBuilder) -> Result<Self> {
        Ok(ResBlock {
            norm1: group_norm(c.groups, cin, vb.pp("norm1"))?,
            conv1: Conv2d::new(cin, cout, 3, 1, vb.pp("conv1"))?,
            film: candle_nn::linear(c.emb, 2 * cout, vb.pp("film"))?,
            norm2: group_norm(c.groups, cout, vb.pp("norm2"))?,
            conv2: Conv2d::new(cout, cout, 3, 1, vb.pp("conv2"))?,
            skip: if cin == cout {
                None
            } else {
                Some(Conv2d::new(cin, cout, 1, 1, vb.pp("skip"))?)
            },
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let film = self.film.forward(emb)?.unsqueeze(2)?.unsqueeze(3)?;
        let cout = h.dim(1)?;
        let (scale, shift) = (film.narrow(1, 0, cout)?, film.narrow(1, cout, cout)?);
        let h = self
            .norm2
            .forward(&h)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        let h = self.conv2.forward(&h.silu()?)?;
        match &self.skip {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

struct Attention {
    norm: GroupNorm,
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(ch: usize, c: &ShapesConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Attention {
            norm: group_norm(c.groups, ch, vb.pp("norm"))?,
            qkv: candle_nn::linear(ch, 3 * ch, vb.pp("qkv"))?,
            proj: candle_nn::linear(ch, ch, vb.pp("proj"))?,
            heads: c.heads,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, ch, h, w) = x.dims4()?;
        let (n, hd) = (h * w, ch / self.heads);
        let tokens = self
            .norm
            .forward(x)?
            .reshape((b, ch, n))?
            .transpose(1, 2)?
            .contiguous()?;
        let qkv = self.qkv.forward(&tokens)?;
        let head = |i: usize| -> Result<Tensor> {
            qkv.narrow(2, i * ch, ch)?
                .reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
        let out = softmax_last(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, ch))?;
        let out = self
            .proj
            .forward(&out)?
            .transpose(1, 2)?
            .reshape((b, ch, h, w))?;
        x + out
    }
}

/// The full-resolution refinement head. The UNet works on 2×2-folded pixels and predicts each
/// 2×2 block from the same feature vector; the trained model's squares came out with corners
/// softened by a pixel or two, lost at low noise (clean squares noised to sigma 0.51 and denoised
/// stayed squares 85 times in 100, from sigma 0.27 99 times: models/shapes/MODEL_CARD.md).
/// These few convolutions at the image's own resolution add a correction to `v`.
///
/// The head is colour-blind by construction: it sees one colour channel at a time (that channel
/// of the noisy input and of the UNet's `v`, the same weights for red, green and blue) and the
/// time embedding, not the text. A head that read the text or all three channels learned the
/// training set's colour–shape pairs (blue and white shapes are never circles there) and turned
/// the held-out blue and white circles into squares (MODEL_CARD.md).
struct Refiner {
    conv_in: Conv2d,
    block: ResBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Refiner {
    /// Its first convolution's weight, whose presence (and rows) tell the architecture.
    const FIRST: &str = "refine.conv_in.weight";

    fn new(c: &ShapesConfig, vb: VarBuilder) -> Result<Self> {
        let width = c.refine;
        Ok(Refiner {
            conv_in: Conv2d::new(2, width, 3, 1, vb.pp("conv_in"))?,
            block: ResBlock::new(width, width, c, vb.pp("block"))?,
            norm_out: group_norm(c.groups, width, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(width, 1, 3, 1, vb.pp("conv_out"))?,
        })
    }

    /// `v + correction` for the scaled input `x` and the UNet's `v` (both `(n, c, h, w)`), with
    /// the time embedding `time` `(n, emb)`.
    fn forward(&self, x: &Tensor, v: &Tensor, time: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        // Each colour channel an image of its own: (n·c, 2, h, w).
        let per_channel = |t: &Tensor| t.reshape((n * c, 1, h, w));
        let input = Tensor::cat(&[per_channel(x)?, per_channel(v)?], 1)?;
        let e = time.dim(1)?;
        let time = time
            .unsqueeze(1)?
            .broadcast_as((n, c, e))?
            .reshape((n * c, e))?;
        let h1 = self.block.forward(&self.conv_in.forward(&input)?, &time)?;
        let out = self
            .conv_out
            .forward(&self.norm_out.forward(&h1)?.silu()?)?;
        v + out.reshape((n, c, h, w))?
    }
}

/// What a backward through [`ShapesUnet::forward_with`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every parameter.
    All,
    /// Only the refinement head's: the UNet's outputs enter it detached, so training a head on a
    /// trained UNet costs the UNet's forward alone.
    Refiner,
}

/// The text encoder: token embedding plus a learned position embedding, `(n, MAX_TOKENS, TEXT_DIM)`.
pub struct ShapesText {
    token: Embedding,
    position: Tensor,
}

impl ShapesText {
    /// Build (or load) from `vb`.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(ShapesText {
            token: candle_nn::embedding(VOCAB_CAPACITY, TEXT_DIM, vb.pp("token_embedding"))?,
            position: vb.get_with_hints(
                (MAX_TOKENS, TEXT_DIM),
                "position_embedding",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?,
        })
    }

    /// Token ids `(n, MAX_TOKENS)` (u32) to embeddings.
    ///
    /// # Errors
    /// For ids out of range or the wrong shape.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.token.forward(ids)?.broadcast_add(&self.position)
    }
}

/// The denoiser: a three-level UNet on 2×2-folded pixels with FiLM conditioning on time and the
/// (flattened, so word order matters) text embedding, and self-attention at the lowest level.
pub struct ShapesUnet {
    cfg: ShapesConfig,
    time1: Linear,
    time2: Linear,
    text: Linear,
    conv_in: Conv2d,
    down0: ResBlock,
    down1_conv: Conv2d,
    down1: ResBlock,
    down2_conv: Conv2d,
    mid1: ResBlock,
    attn: Attention,
    mid2: ResBlock,
    up1_conv: Conv2d,
    up1: ResBlock,
    up0_conv: Conv2d,
    up0: ResBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    refine: Option<Refiner>,
}

/// `(b, c, h, w)` to `(b, 4c, h/2, w/2)`.
fn fold(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((b, c * 4, h / 2, w / 2))
}

/// The inverse of [`fold`].
fn unfold(x: &Tensor) -> Result<Tensor> {
    let (b, c4, h, w) = x.dims4()?;
    let c = c4 / 4;
    x.reshape((b, c, 2, 2, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, c, h * 2, w * 2))
}

/// Sinusoidal embedding of the (fractional) training timesteps `t` `(n,)`, `(n, dim)`.
fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Tensor::cat(&[args.cos()?, args.sin()?], 1)
}

impl ShapesUnet {
    /// Build (or load) from `vb`.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape.
    pub fn new(cfg: ShapesConfig, vb: VarBuilder) -> Result<Self> {
        let [w0, w1, w2] = cfg.widths;
        let c = &cfg;
        Ok(ShapesUnet {
            cfg,
            time1: candle_nn::linear(64, cfg.emb, vb.pp("time1"))?,
            time2: candle_nn::linear(cfg.emb, cfg.emb, vb.pp("time2"))?,
            text: candle_nn::linear(MAX_TOKENS * TEXT_DIM, cfg.emb, vb.pp("text"))?,
            conv_in: Conv2d::new(12, w0, 3, 1, vb.pp("conv_in"))?,
            down0: ResBlock::new(w0, w0, c, vb.pp("down0"))?,
            down1_conv: Conv2d::new(w0, w1, 3, 2, vb.pp("down1_conv"))?,
            down1: ResBlock::new(w1, w1, c, vb.pp("down1"))?,
            down2_conv: Conv2d::new(w1, w2, 3, 2, vb.pp("down2_conv"))?,
            mid1: ResBlock::new(w2, w2, c, vb.pp("mid1"))?,
            attn: Attention::new(w2, c, vb.pp("attn"))?,
            mid2: ResBlock::new(w2, w2, c, vb.pp("mid2"))?,
            up1_conv: Conv2d::new(w2, w1, 3, 1, vb.pp("up1_conv"))?,
            up1: ResBlock::new(2 * w1, w1, c, vb.pp("up1"))?,
            up0_conv: Conv2d::new(w1, w0, 3, 1, vb.pp("up0_conv"))?,
            up0: ResBlock::new(2 * w0, w0, c, vb.pp("up0"))?,
            norm_out: group_norm(cfg.groups, w0, vb.pp("norm_out"))?,
            conv_out: Conv2d::new(w0, 12, 3, 1, vb.pp("conv_out"))?,
            refine: if cfg.refine > 0 {
                Some(Refiner::new(c, vb.pp("refine"))?)
            } else {
                None
            },
        })
    }

    /// The architecture.
    pub fn config(&self) -> ShapesConfig {
        self.cfg
    }

    /// `v` for scaled input `x` `(n, 3, h, w)` (h, w multiples of 8), timesteps `t` `(n,)` and text
    /// `ctx` `(n, MAX_TOKENS, TEXT_DIM)`.
    ///
    /// # Errors
    /// For inputs of the wrong shape.
    pub fn forward(&self, x: &Tensor, t: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        self.forward_with(x, t, ctx, Reach::All)
    }

    /// [`ShapesUnet::forward`], with a backward reaching only what `reach` says.
    ///
    /// # Errors
    /// For inputs of the wrong shape.
    pub fn forward_with(
        &self,
        x: &Tensor,
        t: &Tensor,
        ctx: &Tensor,
        reach: Reach,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let temb = self.time2.forward(
            &self
                .time1
                .forward(&timestep_embedding(t, 64)?.to_dtype(x.dtype())?)?
                .silu()?,
        )?;
        let text = self
            .text
            .forward(&ctx.reshape((n, MAX_TOKENS * TEXT_DIM))?)?;
        let time = temb.silu()?;
        let emb = (temb + text)?.silu()?;

        let h0 = self
            .down0
            .forward(&self.conv_in.forward(&fold(x)?)?, &emb)?;
        let h1 = self.down1.forward(&self.down1_conv.forward(&h0)?, &emb)?;
        let h = self.mid1.forward(&self.down2_conv.forward(&h1)?, &emb)?;
        let h = self.mid2.forward(&self.attn.forward(&h)?, &emb)?;
        let (_, _, h1h, h1w) = h1.dims4()?;
        let h = self.up1_conv.forward(&upsample_nearest2d(&h, h1h, h1w)?)?;
        let h = self.up1.forward(&Tensor::cat(&[&h, &h1], 1)?, &emb)?;
        let (_, _, h0h, h0w) = h0.dims4()?;
        let h = self.up0_conv.forward(&upsample_nearest2d(&h, h0h, h0w)?)?;
        let h = self.up0.forward(&Tensor::cat(&[&h, &h0], 1)?, &emb)?;
        let v = unfold(&self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)?)?;
        match (&self.refine, reach) {
            (None, _) => Ok(v),
            (Some(r), Reach::All) => r.forward(x, &v, &time),
            (Some(r), Reach::Refiner) => r.forward(x, &v.detach(), &time.detach()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fold_and_unfold_are_inverse() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 8.0 * 8.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 8, 8))
            .unwrap();
        let y = unfold(&fold(&x).unwrap()).unwrap();
        let d = (x - y).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn the_architecture_is_read_back_from_the_weights() {
        // The weights a freshly built `arch` saves, as the engine loads them.
        let saved = |arch: ShapesConfig| {
            let vm = candle_nn::VarMap::new();
            ShapesUnet::new(arch, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
            let tensors = vm
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect();
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)
        };
        let arch = ShapesConfig::new([16, 40, 64], 48).unwrap();
        let vb = saved(arch);
        assert_eq!(ShapesConfig::of_weights(&vb).unwrap(), arch);
        let headed = arch.with_refine(24).unwrap();
        assert_eq!(ShapesConfig::of_weights(&saved(headed)).unwrap(), headed);
        let missing = ShapesConfig::of_weights(&vb.pp("nothing")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot find tensor nothing.conv_in.weight"),
            "{missing}"
        );
    }

    #[test]
    fn widths_that_do_not_split_into_groups_and_heads_are_refused() {
        assert_eq!(
            ShapesConfig::new([32, 60, 128], 128).unwrap_err(),
            "width 60: every width must be a positive multiple of 8 (group norm groups) and 4 \
             (attention heads)"
        );
        assert!(ShapesConfig::new([0, 64, 128], 128).is_err());
        assert!(ShapesConfig::new([32, 64, 128], 0).is_err());
        assert_eq!(
            ShapesConfig::DEFAULT.with_refine(20).unwrap_err(),
            "refinement width 20: it must be 0 (none) or a multiple of 8 (group norm groups)"
        );
        assert_eq!(
            ShapesConfig::DEFAULT.with_refine(0).unwrap(),
            ShapesConfig::DEFAULT
        );
        assert_eq!(
            ShapesConfig::new([32, 64, 128], 128).unwrap(),
            ShapesConfig::DEFAULT
        );
    }

    #[test]
    fn softmax_matches_candle_and_sums_to_one() {
        let x = Tensor::randn(0f32, 3.0, (2, 5, 7), &Device::Cpu).unwrap();
        let a = softmax_last(&x).unwrap();
        let b = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
