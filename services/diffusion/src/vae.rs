//! The SD VAE (diffusers' `AutoencoderKL`) on pixelfarm's blocks (`blocks`): the same
//! weight names and config as candle-transformers' (`AutoEncoderKLConfig`).
//!
//! [`Vae::encode`] returns the mean of the latent distribution (diffusers' `latent_dist.mode()`):
//! img2img and inpainting need an encoding that is the same on every worker, and a job's only
//! randomness is its own seeded noise. (diffusers' img2img pipelines sample the distribution with
//! their generator instead; the difference is the posterior's standard deviation, small in trained
//! VAEs.)

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use crate::blocks::{
    AttentionBlock, DownBlock, LevelConfig, MidAttention, MidBlock, ResnetConfig, UpBlock,
};
use pixelfarm_kernels::{Conv2d, GroupNorm};

/// Every resnet of the VAE: no time embedding, epsilon 1e-6.
fn resnet(groups: usize) -> ResnetConfig {
    ResnetConfig {
        groups,
        eps: 1e-6,
        temb: None,
        output_scale: 1.0,
    }
}

/// The bottom of the encoder and decoder: resnet, single-head attention, resnet.
fn mid_block(vb: VarBuilder, channels: usize, groups: usize) -> Result<MidBlock> {
    let attention = AttentionBlock::new(vb.pp("attentions.0"), channels, resnet(groups))?;
    MidBlock::new(vb, channels, resnet(groups), MidAttention::Vae(attention))
}

/// Image `(n, 3, h, w)` in [-1, 1] → the mean and log-variance of the latent, `(n, 2·latent, …)`.
struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, cin: usize, latent: usize, cfg: &AutoEncoderKLConfig) -> Result<Self> {
        let (ch, groups) = (&cfg.block_out_channels, cfg.norm_num_groups);
        let last = ch[ch.len() - 1];
        let down = ch
            .iter()
            .enumerate()
            .map(|(i, &cout)| {
                let level = LevelConfig {
                    cin: if i > 0 { ch[i - 1] } else { ch[0] },
                    cout,
                    layers: cfg.layers_per_block,
                    attention: None,
                    resample: i + 1 < ch.len(),
                };
                let vb = vb.pp("down_blocks").pp(i.to_string());
                DownBlock::new(vb, level, resnet(groups), None, 0)
            })
            .collect::<Result<_>>()?;
        Ok(Encoder {
            conv_in: Conv2d::new(cin, ch[0], 3, 1, vb.pp("conv_in"))?,
            down,
            mid: mid_block(vb.pp("mid_block"), last, groups)?,
            norm_out: GroupNorm::new(groups, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(last, 2 * latent, 3, 1, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down {
            x = block.forward(&x, None, None)?.0;
        }
        let x = self.mid.forward(&x, None, None)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}

/// Latent `(n, latent, h, w)` → image `(n, 3, 8h, 8w)` (for four levels) in about [-1, 1].
struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, latent: usize, cout: usize, cfg: &AutoEncoderKLConfig) -> Result<Self> {
        let (groups, n) = (cfg.norm_num_groups, cfg.block_out_channels.len());
        let ch: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let up = ch
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let level = LevelConfig {
                    cin: if i > 0 { ch[i - 1] } else { ch[0] },
                    cout: c,
                    layers: cfg.layers_per_block + 1,
                    attention: None,
                    resample: i + 1 < n,
                };
                UpBlock::decoder(vb.pp("up_blocks").pp(i.to_string()), level, resnet(groups))
            })
            .collect::<Result<_>>()?;
        let (first, last) = (ch[0], ch[n - 1]);
        Ok(Decoder {
            conv_in: Conv2d::new(latent, first, 3, 1, vb.pp("conv_in"))?,
            mid: mid_block(vb.pp("mid_block"), first, groups)?,
            up,
            norm_out: GroupNorm::new(groups, last, 1e-6, vb.pp("conv_norm_out"))?,
            conv_out: Conv2d::new(last, cout, 3, 1, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut x = self.mid.forward(&self.conv_in.forward(z)?, None, None)?;
        for block in &self.up {
            x = block.forward(&x, &[], None, None, None)?;
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}

/// The KL autoencoder between RGB images and SD latents.
pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    latent: usize,
}

impl Vae {
    /// Build (or load) from `vb` (diffusers names), `cin` / `cout` image channels.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape, or the config has no levels.
    pub fn new(vb: VarBuilder, cin: usize, cout: usize, cfg: &AutoEncoderKLConfig) -> Result<Self> {
        if cfg.block_out_channels.is_empty() {
            candle_core::bail!("a VAE needs at least one level (block_out_channels is empty)");
        }
        let latent = cfg.latent_channels;
        let pointwise = |use_it: bool, c: usize, name: &str| -> Result<Option<Conv2d>> {
            match use_it {
                true => Some(Conv2d::new(c, c, 1, 1, vb.pp(name))).transpose(),
                false => Ok(None),
            }
        };
        Ok(Vae {
            encoder: Encoder::new(vb.pp("encoder"), cin, latent, cfg)?,
            decoder: Decoder::new(vb.pp("decoder"), latent, cout, cfg)?,
            quant_conv: pointwise(cfg.use_quant_conv, 2 * latent, "quant_conv")?,
            post_quant_conv: pointwise(cfg.use_post_quant_conv, latent, "post_quant_conv")?,
            latent,
        })
    }

    /// The latent mean of images `(n, 3, h, w)` in [-1, 1] (unscaled: multiply by the family's
    /// VAE scale for the UNet).
    ///
    /// # Errors
    /// For an input of the wrong shape.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let moments = self.encoder.forward(x)?;
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&moments)?,
            None => moments,
        };
        moments.narrow(1, 0, self.latent)
    }

    /// Images in about [-1, 1] from unscaled latents.
    ///
    /// # Errors
    /// For an input of the wrong shape.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match &self.post_quant_conv {
            Some(p) => self.decoder.forward(&p.forward(z)?),
            None => self.decoder.forward(z),
        }
    }
}
