//! The denoising loop, one for every kind of render: text-to-image, img2img and inpainting differ
//! only in where the latents start and in the [`Rows`] they bring (extra UNet channels, an area
//! kept from the init image, ControlNets and their images); guidance, the prediction type,
//! per-job noise, ControlNet residuals and cancellation are decided here once.

use candle_core::{DType, Device, IndexOp, Shape, Tensor};
use pixelfarm_core::{ControlSpec, Error, Result, Sampler};
use std::ops::Range;
use std::sync::Arc;

use crate::condition::Cond;
use crate::controlnet::ControlNet;
use crate::failure::render_error;
use crate::family::Prediction;
use crate::rng::JobRng;
use crate::sampler::{Plan, sample_with};
use crate::shapes_net::ShapesUnet;
use crate::unet::{Residuals, Unet};

/// The network that predicts noise (or v).
pub(crate) enum Denoiser {
    /// The Stable Diffusion UNet (with SDXL's micro-conditioning where the family has it).
    Sd(Box<Unet>),
    /// The shapes family's pixel-space UNet.
    Shapes(Box<ShapesUnet>),
}

impl Denoiser {
    /// The prediction for input `x` (latents, plus any extra channels) at training timestep `t`,
    /// with ControlNets' `residuals` added (SD UNets only).
    pub fn forward(
        &self,
        x: &Tensor,
        t: f64,
        cond: &Cond,
        residuals: Option<&Residuals>,
    ) -> candle_core::Result<Tensor> {
        match self {
            Denoiser::Sd(m) => m.forward(x, t, &cond.ctx, cond.text_time.as_ref(), residuals),
            Denoiser::Shapes(_) if residuals.is_some() => {
                candle_core::bail!("the shapes family takes no ControlNet")
            }
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

/// A ControlNet steering a group: its network, each job's control image as it embeds it, and
/// the job's entry for it (weight, the part of the schedule it acts on).
pub(crate) struct Guide {
    pub net: Arc<ControlNet>,
    /// [`ControlNet::condition`] of the control images at the render's size, one row per job.
    pub hint: Tensor,
    pub spec: ControlSpec,
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
    /// The ControlNets steering every job of the group; their residuals add up.
    pub control: Vec<Guide>,
}

/// What every UNet call of a group reads besides the latents (borrowed from its [`Rows`]).
struct Inputs<'a> {
    conds: &'a [Cond],
    guidance: Option<&'a Tensor>,
    extra: Option<&'a Tensor>,
    control: &'a [Guide],
}

/// Where a UNet call is in its schedule: step `step` of `steps`, at training timestep `t`.
#[derive(Clone, Copy)]
struct At {
    step: usize,
    steps: usize,
    t: f64,
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
        let steps = plan.steps();
        let inputs = Inputs {
            conds: &rows.conds,
            guidance: rows.guidance.as_ref(),
            extra: rows.extra.as_ref(),
            control: &rows.control,
        };
        let mut denoise =
            |x: &Tensor, step: usize, sigma: f64, t: f64| -> candle_core::Result<Tensor> {
                let scaled = (x / (sigma * sigma + 1.0).sqrt())?.to_dtype(self.dtype)?;
                let at = At { step, steps, t };
                let out = if self.fused || n == 1 {
                    self.predict(&scaled, 0..n, at, &inputs)?
                } else {
                    let parts: Vec<Tensor> = (0..n)
                        .map(|j| self.predict(&scaled.i(j..j + 1)?, j..j + 1, at, &inputs))
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

    /// The guided prediction for `scaled` (the latents of jobs `jobs`, scaled as the UNet reads
    /// them) at step `at`: with guidance, one call on the rows twice over (unconditional, then
    /// conditional) and each job's `uncond + scale * (cond - uncond)`; without, one call on the
    /// rows. The UNet reads the inputs' extra channels after the latents, and the residuals of
    /// the ControlNets acting on this step (which read the latents alone, as in diffusers).
    fn predict(
        &self,
        scaled: &Tensor,
        jobs: Range<usize>,
        at: At,
        inputs: &Inputs,
    ) -> candle_core::Result<Tensor> {
        let input = match inputs.extra {
            Some(e) => Tensor::cat(&[scaled, &e.i(jobs.clone())?.to_dtype(self.dtype)?], 1)?,
            None => scaled.clone(),
        };
        let Some(scales) = inputs.guidance else {
            let ctx = Cond::cat(&inputs.conds[jobs.clone()])?;
            let res = self.residuals(scaled, &jobs, at, &ctx, inputs.control, false)?;
            return self
                .denoiser
                .forward(&input, at.t, &ctx, res.as_ref())?
                .to_dtype(DType::F32);
        };
        let k = jobs.len();
        let rows = |r: Range<usize>| -> candle_core::Result<Vec<Cond>> {
            jobs.clone()
                .map(|j| inputs.conds[j].rows(r.clone()))
                .collect()
        };
        let ctx = Cond::cat(&[rows(0..1)?, rows(1..2)?].concat())?;
        let twice = Tensor::cat(&[scaled, scaled], 0)?;
        let res = self.residuals(&twice, &jobs, at, &ctx, inputs.control, true)?;
        let out = self
            .denoiser
            .forward(
                &Tensor::cat(&[&input, &input], 0)?,
                at.t,
                &ctx,
                res.as_ref(),
            )?
            .to_dtype(DType::F32)?;
        let (u, c) = (out.i(0..k)?, out.i(k..2 * k)?);
        &u + (c - &u)?.broadcast_mul(&scales.i(jobs)?)?
    }

    /// The sum of the residuals of the `guides` acting on step `at` for the UNet call on
    /// `latents` (the rows of jobs `jobs`, `twice` over for guidance) with text `ctx`; `None`
    /// when none acts (a weight of 0 adds nothing either).
    fn residuals(
        &self,
        latents: &Tensor,
        jobs: &Range<usize>,
        at: At,
        ctx: &Cond,
        guides: &[Guide],
        twice: bool,
    ) -> candle_core::Result<Option<Residuals>> {
        let mut sum: Option<Residuals> = None;
        for g in guides {
            let weight = g.spec.weight.get();
            if weight == 0.0 || !g.spec.acts_on(at.step, at.steps) {
                continue;
            }
            let mut hint = g.hint.i(jobs.clone())?;
            if twice {
                hint = Tensor::cat(&[&hint, &hint], 0)?;
            }
            let r = g.net.forward(
                latents,
                at.t,
                &ctx.ctx,
                ctx.text_time.as_ref(),
                &hint,
                weight,
            )?;
            sum = Some(match sum {
                Some(s) => s.add(&r)?,
                None => r,
            });
        }
        Ok(sum)
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
