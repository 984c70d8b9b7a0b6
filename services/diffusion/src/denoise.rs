//! The denoising loop, one for every kind of render: text-to-image, img2img and inpainting differ
//! only in where the latents start and in the [`Rows`] they bring (extra UNet channels, an area
//! kept from the init image); guidance, the prediction type, per-job noise and cancellation are
//! decided here once.

use candle_core::{DType, Device, IndexOp, Shape, Tensor};
use pixelfarm_core::{Error, Result, Sampler};
use std::ops::Range;

use crate::condition::Cond;
use crate::failure::render_error;
use crate::family::Prediction;
use crate::rng::JobRng;
use crate::sampler::{Plan, sample_with};
use crate::shapes_net::ShapesUnet;
use crate::unet::Unet;

/// The network that predicts noise (or v).
pub(crate) enum Denoiser {
    /// The Stable Diffusion UNet (with SDXL's micro-conditioning where the family has it).
    Sd(Box<Unet>),
    /// The shapes family's pixel-space UNet.
    Shapes(Box<ShapesUnet>),
}

impl Denoiser {
    /// The prediction for input `x` (latents, plus any extra channels) at training timestep `t`.
    pub fn forward(&self, x: &Tensor, t: f64, cond: &Cond) -> candle_core::Result<Tensor> {
        match self {
            Denoiser::Sd(m) => m.forward(x, t, &cond.ctx, cond.text_time.as_ref()),
            Denoiser::Shapes(m) => {
                let ts = Tensor::full(t as f32, x.dim(0)?, x.device())?;
                m.forward(x, &ts, &cond.ctx)
            }
        }
    }
}

/// Fresh standard normals shaped `shape` (one row per job), each job's row drawn from its own
/// generator in `rngs`, so a job's noise never depends on the batch it renders in.
pub(crate) fn job_noise(
    rngs: &mut [JobRng],
    shape: impl Into<Shape>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let per_job = shape.elem_count() / rngs.len();
    let v: Vec<f32> = rngs.iter_mut().flat_map(|r| r.normals(per_job)).collect();
    Tensor::from_vec(v, shape, device)
}

/// What a UNet reads besides the noisy latents, told by its input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnetInput {
    /// The latents alone.
    Latents,
    /// Inpainting UNets: the latents, the mask (one channel) and the masked image's latents.
    Inpainting,
}

impl UnetInput {
    /// The input of a UNet with `channels` input channels for latents of `latent` channels.
    pub fn of_channels(channels: usize, latent: usize) -> Option<Self> {
        match channels {
            c if c == latent => Some(UnetInput::Latents),
            c if c == Self::inpainting_channels(latent) => Some(UnetInput::Inpainting),
            _ => None,
        }
    }

    /// An inpainting UNet's input channels for latents of `latent` channels.
    pub fn inpainting_channels(latent: usize) -> usize {
        2 * latent + 1
    }
}

/// Plain-UNet inpainting: after every step the area outside the mask is reset to the init
/// image's latents noised to the step's level, so only the masked area is generated.
pub(crate) struct Keep {
    /// The init image's latents, `(n, c, h, w)`.
    pub init: Tensor,
    /// The noise the render started from, `(n, c, h, w)`.
    pub noise: Tensor,
    /// 1 where repainted, 0 where kept, `(n, 1, h, w)`.
    pub mask: Tensor,
}

impl Keep {
    fn blend(&self, x: Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let kept = (&self.init + (&self.noise * sigma)?)?;
        x.broadcast_mul(&self.mask)? + kept.broadcast_mul(&(1.0 - &self.mask)?)?
    }
}

/// A group's rows: per job, in the order of the latents' rows.
pub(crate) struct Rows {
    /// Each job's text conditioning ([`Cond`]).
    pub conds: Vec<Cond>,
    /// Each job's guidance scale, `(n, 1, 1, 1)`, when the group is guided; `None` when not.
    pub guidance: Option<Tensor>,
    /// Each job's generator, continuing after the starting noise: the stochastic samplers' fresh
    /// noise comes from the job's own stream, whatever batch it renders in.
    pub rngs: Vec<JobRng>,
    /// Channels appended to the latents for the UNet ([`UnetInput::Inpainting`]).
    pub extra: Option<Tensor>,
    /// The area kept from an init image, for plain UNets that inpaint.
    pub keep: Option<Keep>,
}

/// The denoising of one group of jobs.
pub(crate) struct Loop<'a> {
    pub denoiser: &'a Denoiser,
    pub prediction: Prediction,
    /// The denoiser's dtype; guidance and the sampler work in f32.
    pub dtype: DType,
    /// One UNet call per step for the whole group (faster; equal to rendering alone up to float
    /// rounding), else one per job (bit-identical to rendering alone: a fused batch changes the
    /// matrix kernels' blocking and so the last bits).
    pub fused: bool,
}

impl Loop<'_> {
    /// Runs `sampler` along `plan` from `x` (noisy latents at `plan.sigma_start()`, one row per
    /// job) and returns the denoised latents. `on_step(step, steps)` is called after each step;
    /// returning false cancels the render.
    ///
    /// # Errors
    /// `Conflict` when cancelled, else what [`render_error`] makes of candle's errors.
    pub fn run(
        &self,
        sampler: Sampler,
        plan: &Plan,
        x: Tensor,
        rows: &mut Rows,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Tensor> {
        let n = rows.conds.len();
        let (conds, guidance, extra) = (&rows.conds, &rows.guidance, &rows.extra);
        let mut denoise = |x: &Tensor,
                           _step: usize,
                           sigma: f64,
                           t: f64|
         -> candle_core::Result<Tensor> {
            let mut scaled = (x / (sigma * sigma + 1.0).sqrt())?;
            if let Some(e) = extra {
                scaled = Tensor::cat(&[&scaled, e], 1)?;
            }
            let scaled = scaled.to_dtype(self.dtype)?;
            let out = if self.fused || n == 1 {
                self.predict(&scaled, 0..n, t, conds, guidance.as_ref())?
            } else {
                let parts: Vec<Tensor> = (0..n)
                    .map(|j| {
                        self.predict(&scaled.i(j..j + 1)?, j..j + 1, t, conds, guidance.as_ref())
                    })
                    .collect::<candle_core::Result<_>>()?;
                Tensor::cat(&parts, 0)?
            };
            self.x0(x, &out, sigma)
        };
        let rngs = &mut rows.rngs;
        let mut noise = |like: &Tensor| job_noise(rngs, like.shape(), like.device());
        let keep = rows.keep.as_ref();
        let mut sigmas = plan.sigmas.iter().skip(1).copied();
        let mut after = |x: Tensor| match keep {
            Some(k) => k.blend(x, sigmas.next().unwrap_or(0.0)),
            None => Ok(x),
        };
        let steps = plan.steps();
        let mut cancelled = false;
        let mut step_cb = |i: usize| {
            let go = on_step(i + 1, steps);
            cancelled = !go;
            go
        };
        let r = render_error;
        let mut x = sample_with(
            sampler,
            plan,
            x,
            &mut denoise,
            &mut noise,
            &mut step_cb,
            &mut after,
        )
        .map_err(r)?;
        if cancelled {
            return Err(Error::cancelled());
        }
        if let Some(k) = keep {
            x = k.blend(x, plan.sigma_end()).map_err(r)?;
        }
        let latents = (x / (1.0 + plan.sigma_end().powi(2)).sqrt()).map_err(r)?;
        latents.device().synchronize().map_err(r)?;
        Ok(latents)
    }

    /// The guided prediction for `scaled` (the UNet's input rows of jobs `jobs`) at timestep `t`:
    /// with guidance, one call on the rows twice over (unconditional, then conditional) and each
    /// job's `uncond + scale * (cond - uncond)`; without, one call on the rows.
    fn predict(
        &self,
        scaled: &Tensor,
        jobs: Range<usize>,
        t: f64,
        conds: &[Cond],
        guidance: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let Some(scales) = guidance else {
            let ctx = Cond::cat(&conds[jobs])?;
            return self.denoiser.forward(scaled, t, &ctx)?.to_dtype(DType::F32);
        };
        let k = jobs.len();
        let rows = |r: Range<usize>| -> candle_core::Result<Vec<Cond>> {
            jobs.clone().map(|j| conds[j].rows(r.clone())).collect()
        };
        let ctx = Cond::cat(&[rows(0..1)?, rows(1..2)?].concat())?;
        let input = Tensor::cat(&[scaled, scaled], 0)?;
        let out = self
            .denoiser
            .forward(&input, t, &ctx)?
            .to_dtype(DType::F32)?;
        let (u, c) = (out.i(0..k)?, out.i(k..2 * k)?);
        &u + (c - &u)?.broadcast_mul(&scales.i(jobs)?)?
    }

    /// The estimate of the clean latents from the prediction `out` for `x` at `sigma`.
    fn x0(&self, x: &Tensor, out: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        match self.prediction {
            Prediction::Epsilon => x - (out * sigma)?,
            Prediction::V => {
                (x / (sigma * sigma + 1.0))? - (out * (sigma / (sigma * sigma + 1.0).sqrt()))?
            }
        }
    }
}
