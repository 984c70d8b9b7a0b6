//! A loaded model and its renders: text-to-image over a group of jobs that share a
//! [`BatchKey`], img2img and inpainting for one job, each steered by the job's ControlNets when
//! it renders alone, and (`stages`) the stages one at a time for parity checks. Each render
//! conditions every job on its own text ([`crate::condition`]), makes its starting latents and
//! [`Rows`], and hands them to the one denoising loop ([`Loop`]).

use candle_core::{DType, Device, IndexOp, Tensor};
use pixelfarm_core::{
    BatchKey, Error, JobParams, MASK_REPAINT_ABOVE, RenderedImage, Result, RgbImage, Upscaler,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::condition::{Cond, TextSide};
use crate::control::JobControl;
use crate::denoise::{Denoiser, Keep, Loop, Rows, UnetInput, job_noise};
use crate::failure::render_error;
use crate::family::FamilyDefaults;
use crate::load::{Weights, build, networks};
use crate::lora::{Lora, merged};
use crate::registry::ModelEntry;
use crate::rng::JobRng;
use crate::sampler::{NoiseSchedule, Plan};
use crate::vae::Vae;

/// Everything needed to render with one model, loaded once per worker.
pub struct LoadedModel {
    defaults: FamilyDefaults,
    denoiser: Denoiser,
    unet_input: UnetInput,
    /// `None` for pixel-space families (`shapes`): latents are pixels. Shared with the model's
    /// LoRA variants, which leave it as it is.
    vae: Option<Arc<Vae>>,
    text: TextSide,
    schedule: NoiseSchedule,
    device: Device,
    dtype: DType,
    /// What the denoiser and text side were built from; `None` for a LoRA variant (LoRAs merge
    /// into the base model's weights only).
    weights: Option<Weights>,
    /// Seconds the load took (for a LoRA variant: the merge and build).
    pub load_seconds: f64,
}

/// The starting latents of an img2img or inpainting render and what its loop needs besides.
struct ImageStart {
    plan: Plan,
    x: Tensor,
    init_latent: Tensor,
    rng: JobRng,
    extra: Option<Tensor>,
    keep: Option<Keep>,
}

/// RGB8 pixels, `h * w * 3` bytes, as a `(1, 3, h, w)` tensor in -1..1.
fn rgb_tensor(
    rgb: &[u8],
    width: usize,
    height: usize,
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let pixels: Vec<f32> = rgb.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    Tensor::from_vec(pixels, (1, height, width, 3), dev)?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

/// The steps of a `steps`-step schedule that a render from an image at `strength` runs: its
/// last ones, `strength` of them.
fn kept_steps(steps: usize, strength: f64) -> usize {
    ((steps as f64 * strength).round() as usize).min(steps)
}

/// The refining steps of `job`'s hires fix that run (0 without one).
fn refine_steps(job: &JobParams) -> usize {
    job.hires.map_or(0, |h| {
        kept_steps(h.steps_for(job.steps).get() as usize, h.strength.get())
    })
}

/// The seconds of each phase of one job's render.
fn phases(text: f64, denoise: f64, vae: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("text_encode".to_string(), text),
        ("denoise".to_string(), denoise),
        ("vae_decode".to_string(), vae),
        ("model_load".to_string(), 0.0),
    ])
}

impl LoadedModel {
    /// Load `entry` from `dir`, verifying every file's sha256 first.
    ///
    /// # Errors
    /// `Permanent` for a family this engine cannot render, a sha256 mismatch, or weights that do not
    /// fit the architecture; `Transient` for files that cannot be read.
    pub fn load(entry: &ModelEntry, dir: &Path, device: &Device) -> Result<Self> {
        let start = Instant::now();
        let nets = networks(entry, dir, device)?;
        let defaults = entry.family.defaults();
        let schedule = NoiseSchedule::scaled_linear(
            defaults.beta_start,
            defaults.beta_end,
            defaults.train_timesteps,
        );
        Ok(LoadedModel {
            defaults,
            denoiser: nets.denoiser,
            unet_input: nets.unet_input,
            vae: nets.vae.map(Arc::new),
            text: nets.text,
            schedule,
            device: device.clone(),
            dtype: nets.dtype,
            weights: nets.weights,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The LoRA files `loras` (name and bytes, sha256 already checked) of `entry`'s family,
    /// merged at their weights into a copy of this model: a new denoiser and text side over the
    /// changed layers, everything else shared.
    ///
    /// # Errors
    /// `Permanent` for a LoRA variant (never asked: variants are made from base models) and for
    /// a file [`Lora::parse`] refuses;
    /// `Transient` when the device fails.
    pub(crate) fn with_loras(
        &self,
        entry: &ModelEntry,
        loras: &[(&str, Vec<u8>, f64)],
    ) -> Result<LoadedModel> {
        let start = Instant::now();
        let weights = self.weights.as_ref().ok_or_else(|| {
            Error::permanent("LoRAs merge into a base model, not into a LoRA variant")
        })?;
        let parsed = loras
            .iter()
            .map(|(name, bytes, w)| {
                Lora::parse(bytes, name, entry.family, weights, &self.device).map(|l| (l, *w))
            })
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<(&Lora, f64)> = parsed.iter().map(|(l, w)| (l, *w)).collect();
        let changed = merged(weights, &pairs)?;
        let built = build(
            entry,
            &changed,
            self.text.tokenizers(),
            self.dtype,
            &self.device,
        )?;
        Ok(LoadedModel {
            defaults: self.defaults,
            denoiser: built.denoiser,
            unet_input: built.unet_input,
            vae: self.vae.clone(),
            text: built.text,
            schedule: self.schedule.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
            weights: None,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The denoising loop over this model's network.
    fn denoise_loop(&self, fused: bool) -> Loop<'_> {
        Loop {
            denoiser: &self.denoiser,
            prediction: self.defaults.prediction,
            dtype: self.dtype,
            fused,
        }
    }

    /// Each job's text conditioning and the seconds it took.
    fn conditions(&self, jobs: &[&JobParams]) -> Result<(Vec<Cond>, f64)> {
        let t0 = Instant::now();
        let conds = jobs
            .iter()
            .map(|j| self.text.encode(j))
            .collect::<Result<_>>()?;
        // A GPU runs the queued ops after the calls return: wait for them, so each phase's time
        // is its own (no cost on the CPU, one wait per phase on a GPU).
        self.device.synchronize().map_err(render_error)?;
        Ok((conds, t0.elapsed().as_secs_f64()))
    }

    /// Each job's guidance scale as `(n, 1, 1, 1)` when the group is guided.
    fn guidance(&self, jobs: &[&JobParams]) -> Result<Option<Tensor>> {
        if !jobs[0].guidance.guides() {
            return Ok(None);
        }
        let scales: Vec<f32> = jobs.iter().map(|j| j.guidance.get() as f32).collect();
        Tensor::from_vec(scales, (jobs.len(), 1, 1, 1), &self.device)
            .map(Some)
            .map_err(render_error)
    }

    /// The latents' `(height, width)` for a render of `width x height` pixels.
    ///
    /// # Errors
    /// `Invalid` when the size is not a multiple of the VAE's downscale.
    fn latent_size(&self, width: u32, height: u32) -> Result<(usize, usize)> {
        let down = self.defaults.vae_downscale;
        if !width.is_multiple_of(down) || !height.is_multiple_of(down) {
            return Err(Error::invalid(format!(
                "size {width}x{height} is not a multiple of {down}"
            )));
        }
        Ok(((height / down) as usize, (width / down) as usize))
    }

    /// Render jobs sharing one [`BatchKey`] in lockstep. With `fused`, the UNet runs once per step
    /// on the whole group (faster; results equal to rendering alone only up to float rounding),
    /// else once per job (bit-identical to rendering alone). `control` steers a group of one job
    /// ([`JobControl::NONE`] for none). `on_step(step, steps)` is called after each denoising
    /// step; returning false cancels the group.
    ///
    /// # Errors
    /// `Invalid` for jobs with different keys, a size that is not a multiple of the VAE's
    /// downscale, an inpainting model, or ControlNets on a group of several jobs; `Conflict`
    /// when cancelled; `Transient` when the device fails; `Permanent` for candle's other errors.
    pub(crate) fn render_group(
        &self,
        jobs: &[&JobParams],
        fused: bool,
        control: &JobControl,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Vec<RenderedImage>> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        if !control.is_empty() && jobs.len() > 1 {
            return Err(Error::invalid("a job with ControlNets renders alone"));
        }
        if jobs.iter().any(|j| BatchKey::of(j) != BatchKey::of(first)) {
            return Err(Error::invalid(
                "jobs of one group must share size, steps, sampler and guidance on/off",
            ));
        }
        let (lh, lw) = self.latent_size(first.width, first.height)?;
        if self.unet_input != UnetInput::Latents {
            return Err(Error::invalid(
                "this model is an inpainting model: it needs an init image and a mask",
            ));
        }
        let (conds, text_secs) = self.conditions(jobs)?;

        let t0 = Instant::now();
        let plan = Plan::new(first.sampler, &self.schedule, first.steps.get() as usize);
        let mut rngs: Vec<JobRng> = jobs.iter().map(|j| JobRng::new(j.seed.get())).collect();
        let c = self.defaults.latent_channels;
        let x = job_noise(&mut rngs, (jobs.len(), c, lh, lw), &self.device)
            .and_then(|x| x * (1.0 + plan.sigma_start().powi(2)).sqrt())
            .map_err(render_error)?;
        let mut rows = Rows {
            conds,
            guidance: self.guidance(jobs)?,
            rngs,
            extra: None,
            keep: None,
            control: control.guides(first.width, first.height, &self.device, self.dtype)?,
        };
        let refine_steps = refine_steps(first);
        let total = plan.steps() + refine_steps;
        let latents =
            self.denoise_loop(fused)
                .run(first.sampler, &plan, x, &mut rows, &mut |s, _| {
                    on_step(s, total)
                })?;
        let denoise_secs = t0.elapsed().as_secs_f64();
        if first.hires.is_none() {
            return self.finish(jobs, &latents, text_secs, denoise_secs);
        }
        let n = plan.steps();
        let mut out = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let t0 = Instant::now();
            let row = latents.i(i..i + 1).map_err(render_error)?;
            let refined = self.refine(job, &row, control, &mut |s, _| on_step(n + s, total))?;
            let secs = denoise_secs / jobs.len() as f64 + t0.elapsed().as_secs_f64();
            out.append(&mut self.finish(&[job], &refined, text_secs / jobs.len() as f64, secs)?);
        }
        Ok(out)
    }

    /// The hires fix of one job: its first pass's `latents` (`(1, c, h, w)`) enlarged by its
    /// upscaler, then `strength` of its refining schedule run on them with the job's prompt and
    /// seed, as img2img of the enlarged image does (for `lanczos`, exactly: the enlarged image is
    /// encoded the same way). `on_step` gets the refining steps. Without a hires fix, `latents`.
    ///
    /// # Errors
    /// `Invalid` for an inpainting model (its UNet wants a mask) or a size the hires fix cannot
    /// make; else as [`Self::render_group`].
    fn refine(
        &self,
        job: &JobParams,
        latents: &Tensor,
        control: &JobControl,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Tensor> {
        let Some(h) = job.hires else {
            return Ok(latents.clone());
        };
        if self.unet_input != UnetInput::Latents {
            return Err(Error::invalid(
                "`hires` needs a model that renders without a mask; this one is an inpainting model",
            ));
        }
        let (width, height) = h.size(job.width, job.height)?;
        let (lh, lw) = self.latent_size(width, height)?;
        let enlarged = match h.upscaler {
            Upscaler::Latent => latents.upsample_nearest2d(lh, lw).map_err(render_error)?,
            Upscaler::Lanczos => {
                let rgb = self.decode(latents)?;
                let big = crate::hires::enlarge(&rgb, job.width, job.height, width, height);
                rgb_tensor(&big, width as usize, height as usize, &self.device)
                    .and_then(|img| self.encode_image(&img))
                    .map_err(render_error)?
            }
        };
        let refined = JobParams {
            width,
            height,
            steps: h.steps_for(job.steps),
            init: None,
            hires: None,
            ..job.clone()
        };
        let (conds, _) = self.conditions(&[&refined])?;
        let (plan, x, rng, _) = self
            .noised(&refined, &enlarged, h.strength.get())
            .map_err(render_error)?;
        let mut rows = Rows {
            conds,
            guidance: self.guidance(&[&refined])?,
            rngs: vec![rng],
            extra: None,
            keep: None,
            control: control.guides(width, height, &self.device, self.dtype)?,
        };
        self.denoise_loop(false)
            .run(job.sampler, &plan, x, &mut rows, on_step)
    }

    /// Each job's image from its row of `latents`, with the group's text and denoise seconds
    /// shared out evenly.
    fn finish(
        &self,
        jobs: &[&JobParams],
        latents: &Tensor,
        text_secs: f64,
        denoise_secs: f64,
    ) -> Result<Vec<RenderedImage>> {
        let n = jobs.len() as f64;
        let mut out = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let t0 = Instant::now();
            let (width, height) = job.render_size()?;
            let rgb = self.decode(&latents.i(i..i + 1).map_err(render_error)?)?;
            out.push(RenderedImage {
                image: RgbImage { width, height, rgb },
                phases: phases(text_secs / n, denoise_secs / n, t0.elapsed().as_secs_f64()),
            });
        }
        Ok(out)
    }

    /// img2img and inpainting for one job: start from `init` (RGB8 at the job's size) noised to
    /// `strength` of the schedule; with `mask` (one byte per pixel, above [`MASK_REPAINT_ABOVE`]
    /// = repaint) the kept area is blended back at every step (plain UNets), or given to the UNet
    /// (inpainting UNets).
    ///
    /// `control` and `on_step` as for [`Self::render_group`].
    ///
    /// # Errors
    /// `Invalid` for a strength outside 0..=1, or an inpainting model without a mask; else as
    /// [`Self::render_group`].
    pub(crate) fn render_from_image(
        &self,
        job: &JobParams,
        init: &[u8],
        strength: f64,
        mask: Option<&[u8]>,
        control: &JobControl,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<RenderedImage> {
        let n = kept_steps(job.steps.get() as usize, strength);
        let total = n + refine_steps(job);
        let (latents, _, text_secs, denoise_secs) =
            self.image_latents(job, init, strength, mask, control, &mut |s, _| {
                on_step(s, total)
            })?;
        let t0 = Instant::now();
        let latents = self.refine(job, &latents, control, &mut |s, _| on_step(n + s, total))?;
        let denoise_secs = denoise_secs + t0.elapsed().as_secs_f64();
        let mut images = self.finish(&[job], &latents, text_secs, denoise_secs)?;
        Ok(images.remove(0))
    }

    /// The final and the init latents of [`Self::render_from_image`], with the text and denoise
    /// seconds.
    pub(crate) fn image_latents(
        &self,
        job: &JobParams,
        init: &[u8],
        strength: f64,
        mask: Option<&[u8]>,
        control: &JobControl,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(Tensor, Tensor, f64, f64)> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid(format!(
                "strength is {strength}; accepted: 0 to 1"
            )));
        }
        if mask.is_none() && self.unet_input == UnetInput::Inpainting {
            return Err(Error::invalid(
                "this model is an inpainting model: it needs a mask",
            ));
        }
        let (conds, text_secs) = self.conditions(&[job])?;
        let t0 = Instant::now();
        let start = self
            .image_start(job, init, strength, mask)
            .map_err(render_error)?;
        let mut rows = Rows {
            conds,
            guidance: self.guidance(&[job])?,
            rngs: vec![start.rng],
            extra: start.extra,
            keep: start.keep,
            control: control.guides(job.width, job.height, &self.device, self.dtype)?,
        };
        let latents =
            self.denoise_loop(false)
                .run(job.sampler, &start.plan, start.x, &mut rows, on_step)?;
        let denoise_secs = t0.elapsed().as_secs_f64();
        let init_latent = (start.init_latent / (1.0 + start.plan.sigma_end().powi(2)).sqrt())
            .map_err(render_error)?;
        Ok((latents, init_latent, text_secs, denoise_secs))
    }

    /// The starting point of an image render: the tail of the job's plan that `strength` keeps,
    /// the init image's latents noised to its first level, and the inpainting inputs (an
    /// inpainting UNet's `mask` is present).
    fn image_start(
        &self,
        job: &JobParams,
        init: &[u8],
        strength: f64,
        mask: Option<&[u8]>,
    ) -> candle_core::Result<ImageStart> {
        let (w, h) = (job.width as usize, job.height as usize);
        let down = self.defaults.vae_downscale as usize;
        let (lh, lw) = (h / down, w / down);
        let dev = &self.device;
        let img = rgb_tensor(init, w, h, dev)?;
        let init_latent = self.encode_image(&img)?;
        // The mask at latent resolution: a latent cell is repainted if any of its pixels is.
        let mask_latent = match mask {
            None => None,
            Some(m) => {
                let mut cells = vec![0f32; lh * lw];
                for y in 0..h {
                    for x in 0..w {
                        if m[y * w + x] > MASK_REPAINT_ABOVE {
                            cells[(y / down) * lw + x / down] = 1.0;
                        }
                    }
                }
                Some(Tensor::from_vec(cells, (1, 1, lh, lw), dev)?)
            }
        };
        let extra = match (&mask_latent, self.unet_input) {
            (Some(m), UnetInput::Inpainting) => {
                let keep = (1.0 - m)?;
                let masked =
                    self.encode_image(&img.broadcast_mul(&keep.upsample_nearest2d(h, w)?)?)?;
                Some(Tensor::cat(&[m, &masked], 1)?)
            }
            _ => None,
        };
        let (plan, x, rng, noise) = self.noised(job, &init_latent, strength)?;
        let keep = match (mask_latent, self.unet_input) {
            (Some(mask), UnetInput::Latents) => Some(Keep {
                init: init_latent.clone(),
                noise,
                mask,
            }),
            _ => None,
        };
        Ok(ImageStart {
            plan,
            x,
            init_latent,
            rng,
            extra,
            keep,
        })
    }

    /// The tail of `job`'s plan that `strength` keeps, and `init_latent` noised to its first
    /// level with noise from the job's seed (returned too): where every render from an image
    /// starts.
    fn noised(
        &self,
        job: &JobParams,
        init_latent: &Tensor,
        strength: f64,
    ) -> candle_core::Result<(Plan, Tensor, JobRng, Tensor)> {
        let full = Plan::new(job.sampler, &self.schedule, job.steps.get() as usize);
        let first = full.steps() - kept_steps(full.steps(), strength);
        let plan = Plan {
            sigmas: full.sigmas[first..].to_vec(),
            timesteps: full.timesteps[first..].to_vec(),
        };
        let mut rng = JobRng::new(job.seed.get());
        let noise = job_noise(
            std::slice::from_mut(&mut rng),
            init_latent.dims().to_vec(),
            &self.device,
        )?;
        let x = (init_latent + (&noise * plan.sigma_start())?)?;
        Ok((plan, x, rng, noise))
    }

    /// Pixels `(1, 3, h, w)` in -1..1 to scaled latents (the VAE's mean; the pixels themselves
    /// for pixel-space families).
    fn encode_image(&self, img: &Tensor) -> candle_core::Result<Tensor> {
        match &self.vae {
            Some(vae) => vae.encode(img)? * self.defaults.vae_scale,
            None => img * self.defaults.vae_scale,
        }
    }

    /// The VAE round trip of `init` (what img2img at strength 0 must give).
    ///
    /// # Errors
    /// `Transient` when the device fails, else `Permanent` (candle's errors, by variant).
    pub fn vae_round_trip(&self, width: u32, height: u32, init: &[u8]) -> Result<Vec<u8>> {
        let latent = rgb_tensor(init, width as usize, height as usize, &self.device)
            .and_then(|img| self.encode_image(&img))
            .map_err(render_error)?;
        self.decode(&latent)
    }

    /// Scaled latents `(1, c, h, w)` to pixels `(1, 3, h', w')`, about -1..1 (the VAE's output,
    /// not yet clamped), in f32.
    ///
    /// # Errors
    /// `Transient` when the device fails, else `Permanent` (candle's errors, by variant).
    pub fn decode_to_pixels(&self, latents: &Tensor) -> Result<Tensor> {
        (latents.to_dtype(DType::F32).map_err(render_error)? / self.defaults.vae_scale)
            .and_then(|l| match &self.vae {
                Some(vae) => vae.decode(&l),
                None => Ok(l),
            })
            .map_err(render_error)
    }

    /// Latents `(1, c, h, w)` to RGB8 bytes.
    fn decode(&self, latents: &Tensor) -> Result<Vec<u8>> {
        let img = (self.decode_to_pixels(latents)? / 2.0)
            .and_then(|img| (img + 0.5)?.clamp(0f32, 1f32))
            .and_then(|img| (img * 255.0)?.round())
            .and_then(|img| img.to_dtype(DType::U8))
            .and_then(|img| img.i(0)?.permute((1, 2, 0))?.flatten_all()?.to_vec1::<u8>())
            .map_err(render_error)?;
        Ok(img)
    }
}

mod stages;
