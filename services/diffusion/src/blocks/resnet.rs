//! Resnet blocks and the down / up samplers between levels.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

use pixelfarm_kernels::{Conv2d, GroupNorm, Linear, upsample_nearest2d};

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
pub(super) struct Downsample {
    conv: Conv2d,
    pad_after: bool,
}

impl Downsample {
    pub(super) fn new(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Downsample {
            conv: Conv2d::with_padding(channels, channels, 3, 2, padding, vb.pp("conv"))?,
            pad_after: padding == 0,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
pub(super) struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub(super) fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Upsample {
            conv: Conv2d::new(channels, channels, 3, 1, vb.pp("conv"))?,
        })
    }

    pub(super) fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (h, w) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&upsample_nearest2d(x, h, w)?)
    }
}
