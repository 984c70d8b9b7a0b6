//! A loaded model (UNet, VAE, text encoder, tokenizer) and the txt2img pipeline over a group of
//! compatible jobs.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use pixelfarm_core::{Error, ErrorKind, JobParams, Result, Sampler};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tokenizers::Tokenizer;

use crate::clip::ClipText;
use crate::family::XlConfig;
use crate::family::{Family, FamilyDefaults, Prediction};
use crate::registry::{ModelEntry, layout, read_verified};
use crate::rng::JobRng;
use crate::sampler::{NoiseSchedule, Plan, sample};
use crate::shapes_net::{ShapesConfig, ShapesText, ShapesUnet};
use crate::unet::{TIME_IDS, TextTime, Unet};
use crate::vae::Vae;

enum TextEncoder {
    /// SD 1.x / 2.x and the tiny family: one CLIP text transformer, its final-normed last state.
    Clip(ClipText),
    /// The shapes family's positional word embedding.
    Shapes(ShapesText),
    /// SDXL's two encoders.
    Xl(Box<XlText>),
}

/// SDXL's text side: CLIP ViT-L and OpenCLIP ViT-bigG with its own tokenizer.
struct XlText {
    cfg: XlConfig,
    clip_l: ClipText,
    clip_g: ClipText,
    tokenizer_2: Tokenizer,
    pad_2: u32,
}

/// One job's text conditioning, rows `[uncond, cond]` with guidance, `[cond]` without.
#[derive(Clone)]
pub(crate) struct Cond {
    /// `(rows, tokens, dim)` for cross-attention.
    ctx: Tensor,
    /// SDXL only: pooled embedding and time ids of the same rows.
    text_time: Option<TextTime>,
}

impl Cond {
    /// Rows `r` of every part.
    fn rows(&self, r: std::ops::Range<usize>) -> candle_core::Result<Cond> {
        Ok(Cond {
            ctx: self.ctx.i(r.clone())?,
            text_time: match &self.text_time {
                Some(tt) => Some(TextTime {
                    pooled: tt.pooled.i(r.clone())?,
                    time_ids: tt.time_ids.i(r)?,
                }),
                None => None,
            },
        })
    }

    /// The rows of `parts`, in order.
    fn cat(parts: &[Cond]) -> candle_core::Result<Cond> {
        let ctx: Vec<&Tensor> = parts.iter().map(|p| &p.ctx).collect();
        let tts: Option<Vec<&TextTime>> = parts.iter().map(|p| p.text_time.as_ref()).collect();
        Ok(Cond {
            ctx: Tensor::cat(&ctx, 0)?,
            text_time: match tts {
                Some(tts) if !tts.is_empty() => {
                    let pooled: Vec<&Tensor> = tts.iter().map(|t| &t.pooled).collect();
                    let ids: Vec<&Tensor> = tts.iter().map(|t| &t.time_ids).collect();
                    Some(TextTime {
                        pooled: Tensor::cat(&pooled, 0)?,
                        time_ids: Tensor::cat(&ids, 0)?,
                    })
                }
                _ => None,
            },
        })
    }
}

/// The network that predicts noise (or v).
enum Denoiser {
    /// The Stable Diffusion UNet (with SDXL's micro-conditioning where the family has it).
    Sd(Box<Unet>),
    /// The shapes family's pixel-space UNet.
    Shapes(Box<ShapesUnet>),
}

impl Denoiser {
    fn forward(&self, x: &Tensor, t: f64, cond: &Cond) -> candle_core::Result<Tensor> {
        match self {
            Denoiser::Sd(m) => m.forward(x, t, &cond.ctx, cond.text_time.as_ref()),
            Denoiser::Shapes(m) => {
                let ts = Tensor::full(t as f32, x.dim(0)?, x.device())?;
                m.forward(x, &ts, &cond.ctx)
            }
        }
    }
}

/// Everything needed to render with one model, loaded once per worker.
pub struct LoadedModel {
    defaults: FamilyDefaults,
    unet: Denoiser,
    unet_in_channels: usize,
    /// `None` for pixel-space families (`shapes`): latents are pixels.
    vae: Option<Vae>,
    text: TextEncoder,
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    schedule: NoiseSchedule,
    device: Device,
    dtype: DType,
    /// Seconds the load took.
    pub load_seconds: f64,
}

/// What can be batched together: same size, steps, sampler, and guidance on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchKey {
    width: u32,
    height: u32,
    steps: u32,
    sampler: &'static str,
    cfg: bool,
}

impl BatchKey {
    /// The key of `params`.
    pub fn of(params: &JobParams) -> Self {
        BatchKey {
            width: params.width,
            height: params.height,
            steps: params.steps.get(),
            sampler: params.sampler.as_str(),
            cfg: uses_cfg(params),
        }
    }
}

fn uses_cfg(p: &JobParams) -> bool {
    p.guidance.get() > 1.0
}

/// A candle error while loading: the weights do not fit the architecture.
fn bad_weights(file: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| {
        Error::with_source(
            ErrorKind::Permanent,
            format!("model file `{file}` does not fit the family's architecture"),
            e,
        )
    }
}

/// A candle error while rendering: device trouble is transient, anything else permanent.
pub(crate) fn render_error(e: candle_core::Error) -> Error {
    let text = e.to_string().to_lowercase();
    let transient = matches!(e, candle_core::Error::Cuda(_))
        || text.contains("out of memory")
        || text.contains("cuda")
        || text.contains("alloc");
    let kind = if transient {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    };
    Error::with_source(kind, "diffusion failed", e)
}

/// The tokenizer `file` of `entry` (sha256 verified).
fn load_tokenizer(entry: &ModelEntry, dir: &Path, file: &str) -> Result<Tokenizer> {
    let bytes = read_verified(entry, dir, file)?;
    Tokenizer::from_bytes(&bytes)
        .map_err(|e| Error::permanent(format!("`{file}` is not a tokenizer.json: {e}")))
}

/// The id of token `t` in the tokenizer read from `file`.
fn token_id(tokenizer: &Tokenizer, file: &str, t: &str) -> Result<u32> {
    tokenizer
        .token_to_id(t)
        .ok_or_else(|| Error::permanent(format!("`{file}` has no `{t}` token")))
}

impl LoadedModel {
    /// Load `entry` from `dir`, verifying every file's sha256 first.
    ///
    /// # Errors
    /// `Permanent` for a family this engine cannot render, a sha256 mismatch, or weights that do not
    /// fit the architecture; `Transient` for files that cannot be read.
    pub fn load(entry: &ModelEntry, dir: &Path, device: &Device) -> Result<Self> {
        let start = Instant::now();
        let family = entry.family;
        let defaults = family.defaults();
        let dtype = if device.is_cuda() {
            DType::F16
        } else {
            DType::F32
        };
        if family == Family::Shapes {
            return Self::load_shapes(entry, dir, device, start);
        }
        let tensors = |rel: &str, dtype: DType| -> Result<VarBuilder<'static>> {
            let bytes = read_verified(entry, dir, rel)?;
            VarBuilder::from_buffered_safetensors(bytes, dtype, device).map_err(bad_weights(rel))
        };
        let (unet_vb, vae_vb, text_vb) = match &entry.checkpoint {
            None => (
                tensors(layout::UNET, dtype)?,
                // The VAE stays f32: SDXL's overflows in f16, and it is cheap.
                tensors(layout::VAE, DType::F32)?,
                tensors(layout::TEXT_ENCODER, dtype)?,
            ),
            Some(ckpt) => crate::checkpoint::split(entry, dir, ckpt, dtype, device)?,
        };
        let unet_name = entry.checkpoint.as_deref().unwrap_or(layout::UNET);
        let vae_name = entry.checkpoint.as_deref().unwrap_or(layout::VAE);
        let text_name = entry.checkpoint.as_deref().unwrap_or(layout::TEXT_ENCODER);
        let unet_in_channels = unet_vb
            .get_unchecked("conv_in.weight")
            .map_err(bad_weights(unet_name))?
            .dim(1)
            .map_err(bad_weights(unet_name))?;
        if unet_in_channels != 4 && unet_in_channels != 9 {
            return Err(Error::permanent(format!(
                "model file `{unet_name}` has a UNet with {unet_in_channels} input channels; \
                 accepted: 4 (txt2img) or 9 (inpainting)"
            )));
        }
        let xl = family.xl();
        let unet = Denoiser::Sd(Box::new(
            Unet::new(
                unet_vb,
                unet_in_channels,
                defaults.latent_channels,
                &family.unet_config(),
                xl.map(|x| x.text_time),
            )
            .map_err(bad_weights(unet_name))?,
        ));
        let vae =
            Some(Vae::new(vae_vb, 3, 3, &family.vae_config()).map_err(bad_weights(vae_name))?);
        let text = match (xl, family.text_config()) {
            (Some(cfg), _) => {
                let text_2 = tensors(layout::TEXT_ENCODER_2, dtype)?;
                let tokenizer_2 = load_tokenizer(entry, dir, layout::TOKENIZER_2)?;
                // OpenCLIP's tokenizer pads with `!`.
                let pad_2 = token_id(&tokenizer_2, layout::TOKENIZER_2, "!")?;
                TextEncoder::Xl(Box::new(XlText {
                    cfg,
                    clip_l: ClipText::new(text_vb, cfg.clip_l).map_err(bad_weights(text_name))?,
                    clip_g: ClipText::new(text_2, cfg.clip_g)
                        .map_err(bad_weights(layout::TEXT_ENCODER_2))?,
                    tokenizer_2,
                    pad_2,
                }))
            }
            (None, Some(cfg)) => {
                TextEncoder::Clip(ClipText::new(text_vb, cfg).map_err(bad_weights(text_name))?)
            }
            (None, None) => {
                return Err(Error::permanent(format!(
                    "family {family} has no text encoder"
                )));
            }
        };
        Self::assemble(
            entry,
            dir,
            device,
            dtype,
            start,
            unet,
            unet_in_channels,
            vae,
            text,
        )
    }

    /// The shapes family: its own pixel-space UNet and text encoder, no VAE, always f32.
    fn load_shapes(
        entry: &ModelEntry,
        dir: &Path,
        device: &Device,
        start: Instant,
    ) -> Result<Self> {
        let tensors = |rel: &str| -> Result<VarBuilder<'static>> {
            let bytes = read_verified(entry, dir, rel)?;
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)
                .map_err(bad_weights(rel))
        };
        let unet_vb = tensors(layout::UNET)?;
        let unet = ShapesConfig::of_weights(&unet_vb)
            .and_then(|cfg| ShapesUnet::new(cfg, unet_vb))
            .map_err(bad_weights(layout::UNET))?;
        let text = ShapesText::new(tensors(layout::TEXT_ENCODER)?)
            .map_err(bad_weights(layout::TEXT_ENCODER))?;
        let channels = Family::Shapes.defaults().latent_channels;
        Self::assemble(
            entry,
            dir,
            device,
            DType::F32,
            start,
            Denoiser::Shapes(Box::new(unet)),
            channels,
            None,
            TextEncoder::Shapes(text),
        )
    }

    /// The tokenizer and schedule, around loaded networks.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        entry: &ModelEntry,
        dir: &Path,
        device: &Device,
        dtype: DType,
        start: Instant,
        unet: Denoiser,
        unet_in_channels: usize,
        vae: Option<Vae>,
        text: TextEncoder,
    ) -> Result<Self> {
        let family = entry.family;
        let defaults = family.defaults();
        let tokenizer = load_tokenizer(entry, dir, layout::TOKENIZER)?;
        let id = |t: &str| token_id(&tokenizer, layout::TOKENIZER, t);
        let bos = id("<|startoftext|>")?;
        let eos = id("<|endoftext|>")?;
        let pad = match family {
            Family::Sd21 => id("!")?,
            _ => eos,
        };
        let schedule = NoiseSchedule::scaled_linear(
            defaults.beta_start,
            defaults.beta_end,
            defaults.train_timesteps,
        );
        Ok(LoadedModel {
            defaults,
            unet,
            unet_in_channels,
            vae,
            text,
            tokenizer,
            bos,
            eos,
            pad,
            schedule,
            device: device.clone(),
            dtype,
            load_seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Pixels `(1, 3, h, w)` in -1..1 to scaled latents (the VAE's mean; the pixels themselves
    /// for pixel-space families).
    fn encode_image(&self, img: &Tensor) -> candle_core::Result<Tensor> {
        match &self.vae {
            Some(vae) => vae.encode(img)? * self.defaults.vae_scale,
            None => img * self.defaults.vae_scale,
        }
    }

    /// Token ids for `text` with `tokenizer`: start token, at most `max_tokens - 2` tokens, end
    /// token, `pad`; and the end token's position.
    fn token_ids(&self, tokenizer: &Tokenizer, pad: u32, text: &str) -> Result<(Vec<u32>, usize)> {
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| Error::invalid(format!("prompt cannot be tokenized: {e}")))?;
        let max = self.defaults.max_tokens;
        let mut ids = Vec::with_capacity(max);
        ids.push(self.bos);
        ids.extend(enc.get_ids().iter().take(max - 2));
        let eos_at = ids.len();
        ids.push(self.eos);
        ids.resize(max, pad);
        Ok((ids, eos_at))
    }

    /// Token rows of `texts` with `tokenizer` padded with `pad`, and each row's end position.
    fn ids(&self, tokenizer: &Tokenizer, pad: u32, texts: &[&str]) -> Result<(Tensor, Vec<usize>)> {
        let tokens = self.defaults.max_tokens;
        let mut rows = Vec::with_capacity(texts.len() * tokens);
        let mut eos = Vec::with_capacity(texts.len());
        for t in texts {
            let (ids, at) = self.token_ids(tokenizer, pad, t)?;
            rows.extend(ids);
            eos.push(at);
        }
        let ids =
            Tensor::from_vec(rows, (texts.len(), tokens), &self.device).map_err(render_error)?;
        Ok((ids, eos))
    }

    /// The job's text conditioning: `[uncond, cond]` rows (or just `[cond]` without guidance).
    fn encode_text(&self, p: &JobParams) -> Result<Cond> {
        let mut texts = Vec::new();
        if uses_cfg(p) {
            texts.push(p.negative_prompt.as_str());
        }
        texts.push(p.prompt.as_str());
        let (ids, eos) = self.ids(&self.tokenizer, self.pad, &texts)?;
        let plain = |ctx: candle_core::Result<Tensor>| -> Result<Cond> {
            Ok(Cond {
                ctx: ctx
                    .and_then(|t| t.to_dtype(self.dtype))
                    .map_err(render_error)?,
                text_time: None,
            })
        };
        match &self.text {
            TextEncoder::Clip(m) => plain(m.forward(&ids, &eos).map(|o| o.last)),
            TextEncoder::Shapes(m) => plain(m.forward(&ids)),
            TextEncoder::Xl(xl) => self.encode_xl(xl, p, &texts, &ids, &eos),
        }
    }

    /// SDXL: both encoders' penultimate states side by side for cross-attention, the second's
    /// pooled state and the size micro-conditioning (original = target = the job's size, no crop)
    /// for `add_embedding`; an empty negative prompt conditions on zeros where the family says so.
    fn encode_xl(
        &self,
        xl: &XlText,
        p: &JobParams,
        texts: &[&str],
        ids: &Tensor,
        eos: &[usize],
    ) -> Result<Cond> {
        let r = render_error;
        let (ids_2, eos_2) = self.ids(&xl.tokenizer_2, xl.pad_2, texts)?;
        let l = xl.clip_l.forward(ids, eos).map_err(r)?;
        let g = xl.clip_g.forward(&ids_2, &eos_2).map_err(r)?;
        let mut ctx = Tensor::cat(&[&l.penultimate, &g.penultimate], 2).map_err(r)?;
        let mut pooled = g.pooled.ok_or_else(|| {
            Error::permanent(format!(
                "`{}` has no text_projection",
                layout::TEXT_ENCODER_2
            ))
        })?;
        let n = texts.len();
        if n == 2 && texts[0].is_empty() && xl.cfg.zeros_for_empty_negative {
            let zero_first = |t: &Tensor| -> candle_core::Result<Tensor> {
                Tensor::cat(&[&t.i(0..1)?.zeros_like()?, &t.i(1..2)?], 0)
            };
            ctx = zero_first(&ctx).map_err(r)?;
            pooled = zero_first(&pooled).map_err(r)?;
        }
        let (h, w) = (p.height as f32, p.width as f32);
        let row = [h, w, 0.0, 0.0, h, w];
        let time_ids = Tensor::from_vec(row.repeat(n), (n, TIME_IDS), &self.device).map_err(r)?;
        Ok(Cond {
            ctx: ctx.to_dtype(self.dtype).map_err(r)?,
            text_time: Some(TextTime {
                pooled: pooled.to_dtype(self.dtype).map_err(r)?,
                time_ids,
            }),
        })
    }

    /// Render jobs sharing one [`BatchKey`] in lockstep. With `fused`, the UNet runs once per step on
    /// the whole group (faster; results equal to rendering alone only up to float rounding), else
    /// once per job (bit-identical to rendering alone). `on_step(step, steps)` is called after each
    /// denoising step; returning false cancels the group.
    ///
    /// # Errors
    /// `Invalid` for a size that is not a multiple of the VAE's downscale, `Conflict` when
    /// cancelled, and what [`render_error`] makes of candle's errors.
    pub fn render_group(
        &self,
        jobs: &[&JobParams],
        fused: bool,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<Vec<pixelfarm_core::RenderedImage>> {
        let Some(first) = jobs.first() else {
            return Ok(Vec::new());
        };
        let key = BatchKey::of(first);
        if jobs.iter().any(|j| BatchKey::of(j) != key) {
            return Err(Error::invalid(
                "jobs of one group must share size, steps, sampler and guidance on/off",
            ));
        }
        let n = jobs.len();
        let down = self.defaults.vae_downscale;
        if first.width % down != 0 || first.height % down != 0 {
            return Err(Error::invalid(format!(
                "size {}x{} is not a multiple of {down}",
                first.width, first.height
            )));
        }
        if self.unet_in_channels != self.defaults.latent_channels {
            return Err(Error::invalid(
                "this model is an inpainting model: it needs an init image and a mask",
            ));
        }
        let (lh, lw) = (
            (first.height / down) as usize,
            (first.width / down) as usize,
        );
        let c = self.defaults.latent_channels;

        // Text, per job (so a job's embedding never depends on its batch).
        let t0 = Instant::now();
        let embeds: Vec<Cond> = jobs
            .iter()
            .map(|j| self.encode_text(j))
            .collect::<Result<_>>()?;
        // A GPU runs the ops queued so far after the calls return: wait for them, so each phase's
        // time is its own (no cost on the CPU, one wait per phase on a GPU).
        self.device.synchronize().map_err(render_error)?;
        let text_secs = t0.elapsed().as_secs_f64();

        // Noise, per job from its own generator.
        let t0 = Instant::now();
        let plan = Plan::new(first.sampler, &self.schedule, first.steps.get() as usize);
        let mut rngs: Vec<JobRng> = jobs.iter().map(|j| JobRng::new(j.seed.get())).collect();
        let per_job = c * lh * lw;
        let job_noise = |rngs: &mut [JobRng]| -> candle_core::Result<Tensor> {
            let v: Vec<f32> = rngs.iter_mut().flat_map(|r| r.normals(per_job)).collect();
            Tensor::from_vec(v, (n, c, lh, lw), &self.device)
        };
        let x = (job_noise(&mut rngs).map_err(render_error)?
            * (1.0 + plan.sigma_start().powi(2)).sqrt())
        .map_err(render_error)?;
        let guidance: Vec<Tensor> = jobs
            .iter()
            .map(|j| Tensor::from_vec(vec![j.guidance.get() as f32], (1, 1, 1, 1), &self.device))
            .collect::<candle_core::Result<_>>()
            .map_err(render_error)?;
        let prediction = self.defaults.prediction;
        // The UNet on `scaled` rows `rows` with their text, guidance applied.
        let eps_of = |scaled: &Tensor,
                      rows: std::ops::Range<usize>,
                      t: f64|
         -> candle_core::Result<Tensor> {
            let k = rows.len();
            let (input, ctx) = if key.cfg {
                let uncond: Vec<Cond> = rows
                    .clone()
                    .map(|j| embeds[j].rows(0..1))
                    .collect::<candle_core::Result<_>>()?;
                let cond: Vec<Cond> = rows
                    .clone()
                    .map(|j| embeds[j].rows(1..2))
                    .collect::<candle_core::Result<_>>()?;
                (
                    Tensor::cat(&[scaled, scaled], 0)?,
                    Cond::cat(&[uncond, cond].concat())?,
                )
            } else {
                (scaled.clone(), Cond::cat(&embeds[rows.clone()])?)
            };
            let out = self.unet.forward(&input, t, &ctx)?.to_dtype(DType::F32)?;
            if !key.cfg {
                return Ok(out);
            }
            let g = Tensor::cat(&guidance[rows], 0)?;
            let (u, c) = (out.i(0..k)?, out.i(k..2 * k)?);
            &u + (c - &u)?.broadcast_mul(&g)?
        };
        let mut denoise =
            |x: &Tensor, _step: usize, sigma: f64, t: f64| -> candle_core::Result<Tensor> {
                let scaled = (x / (sigma * sigma + 1.0).sqrt())?.to_dtype(self.dtype)?;
                let out = if fused || n == 1 {
                    eps_of(&scaled, 0..n, t)?
                } else {
                    // One UNet call per job: bit-identical to the job rendered alone (a fused batch
                    // changes gemm blocking and so the last bits).
                    let parts: Vec<Tensor> = (0..n)
                        .map(|j| eps_of(&scaled.i(j..j + 1)?, j..j + 1, t))
                        .collect::<candle_core::Result<_>>()?;
                    Tensor::cat(&parts, 0)?
                };
                match prediction {
                    Prediction::Epsilon => x - (out * sigma)?,
                    Prediction::V => {
                        (x / (sigma * sigma + 1.0))?
                            - (out * (sigma / (sigma * sigma + 1.0).sqrt()))?
                    }
                }
            };
        let mut noise = |_: &Tensor| job_noise(&mut rngs);
        let steps = plan.steps();
        let mut cancelled = false;
        let mut step_cb = |i: usize| {
            let go = on_step(i + 1, steps);
            cancelled = !go;
            go
        };
        let sampler: Sampler = first.sampler;
        let x = sample(sampler, &plan, x, &mut denoise, &mut noise, &mut step_cb)
            .map_err(render_error)?;
        if cancelled {
            return Err(Error::cancelled());
        }
        let latents = (x / (1.0 + plan.sigma_end().powi(2)).sqrt()).map_err(render_error)?;
        self.device.synchronize().map_err(render_error)?;
        let denoise_secs = t0.elapsed().as_secs_f64();

        // VAE, per job.
        let mut out = Vec::with_capacity(n);
        for (i, job) in jobs.iter().enumerate() {
            let t0 = Instant::now();
            let rgb = self.decode(&latents.i(i..i + 1).map_err(render_error)?)?;
            let phases = BTreeMap::from([
                ("text_encode".to_string(), text_secs / n as f64),
                ("denoise".to_string(), denoise_secs / n as f64),
                ("vae_decode".to_string(), t0.elapsed().as_secs_f64()),
                ("model_load".to_string(), 0.0),
            ]);
            out.push(pixelfarm_core::RenderedImage {
                width: job.width,
                height: job.height,
                rgb,
                phases,
            });
        }
        Ok(out)
    }

    /// img2img and inpainting for one job: start from `init` (RGB8 at the job's size) noised to
    /// `strength` of the schedule; with `mask` (one byte per pixel, > 127 = repaint) the kept area
    /// is blended back at every step (plain UNets), or given to the UNet (9-channel inpainting UNets).
    ///
    /// `on_step` as for [`Self::render_group`].
    ///
    /// # Errors
    /// `Invalid` for a strength outside 0..=1; else as [`Self::render_group`].
    pub fn render_from_image(
        &self,
        job: &JobParams,
        init: &[u8],
        strength: f64,
        mask: Option<&[u8]>,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<pixelfarm_core::RenderedImage> {
        let (latents, _, text_secs, denoise_secs) =
            self.image_latents(job, init, strength, mask, on_step)?;
        let t0 = Instant::now();
        let rgb = self.decode(&latents)?;
        Ok(pixelfarm_core::RenderedImage {
            width: job.width,
            height: job.height,
            rgb,
            phases: BTreeMap::from([
                ("text_encode".to_string(), text_secs),
                ("denoise".to_string(), denoise_secs),
                ("vae_decode".to_string(), t0.elapsed().as_secs_f64()),
                ("model_load".to_string(), 0.0),
            ]),
        })
    }

    /// The final and the init latents of [`Self::render_from_image`], with the text and denoise
    /// seconds.
    pub(crate) fn image_latents(
        &self,
        job: &JobParams,
        init: &[u8],
        strength: f64,
        mask: Option<&[u8]>,
        on_step: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Result<(Tensor, Tensor, f64, f64)> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::invalid(format!(
                "strength is {strength}; accepted: 0 to 1"
            )));
        }
        let (w, h) = (job.width as usize, job.height as usize);
        let down = self.defaults.vae_downscale as usize;
        let (lh, lw) = (h / down, w / down);
        let c = self.defaults.latent_channels;
        let cfg = uses_cfg(job);
        let t0 = Instant::now();
        let embeds = self.encode_text(job)?;
        self.device.synchronize().map_err(render_error)?;
        let text_secs = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let dev = &self.device;
        let r = |e| render_error(e);
        let pixels: Vec<f32> = init.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        let img = Tensor::from_vec(pixels, (1, h, w, 3), dev)
            .and_then(|t| t.permute((0, 3, 1, 2))?.contiguous())
            .map_err(r)?;
        let init_latent = self.encode_image(&img).map_err(r)?;
        // The mask at latent resolution: a latent cell is repainted if any of its pixels is.
        let mask_latent = match mask {
            None => None,
            Some(m) => {
                let mut cells = vec![0f32; lh * lw];
                for y in 0..h {
                    for x in 0..w {
                        if m[y * w + x] > 127 {
                            cells[(y / down) * lw + x / down] = 1.0;
                        }
                    }
                }
                Some(Tensor::from_vec(cells, (1, 1, lh, lw), dev).map_err(r)?)
            }
        };
        let inpaint_unet = self.unet_in_channels == 9;
        let extra = match (&mask_latent, inpaint_unet) {
            (Some(m), true) => {
                let keep = (1.0 - m).map_err(r)?;
                let masked = self
                    .encode_image(
                        &img.broadcast_mul(&keep.upsample_nearest2d(h, w).map_err(r)?)
                            .map_err(r)?,
                    )
                    .map_err(r)?;
                Some(Tensor::cat(&[m, &masked], 1).map_err(r)?)
            }
            (None, true) => {
                return Err(Error::invalid(
                    "this model is an inpainting model: it needs a mask",
                ));
            }
            _ => None,
        };

        let full = Plan::new(job.sampler, &self.schedule, job.steps.get() as usize);
        let keep_steps = ((full.steps() as f64) * strength).round() as usize;
        let start = full.steps() - keep_steps.min(full.steps());
        let plan = Plan {
            sigmas: full.sigmas[start..].to_vec(),
            timesteps: full.timesteps[start..].to_vec(),
        };
        let mut rng = JobRng::new(job.seed.get());
        let noise0 = Tensor::from_vec(rng.normals(c * lh * lw), (1, c, lh, lw), dev).map_err(r)?;
        let x = (&init_latent + (&noise0 * plan.sigma_start()).map_err(r)?).map_err(r)?;
        let g = Tensor::from_vec(vec![job.guidance.get() as f32], (1, 1, 1, 1), dev).map_err(r)?;
        let prediction = self.defaults.prediction;
        let blend = |x: Tensor, sigma: f64| -> candle_core::Result<Tensor> {
            match (&mask_latent, inpaint_unet) {
                (Some(m), false) => {
                    let kept = (&init_latent + (&noise0 * sigma)?)?;
                    x.broadcast_mul(m)? + kept.broadcast_mul(&(1.0 - m)?)?
                }
                _ => Ok(x),
            }
        };
        let mut denoise =
            |x: &Tensor, _: usize, sigma: f64, t: f64| -> candle_core::Result<Tensor> {
                let mut scaled = (x / (sigma * sigma + 1.0).sqrt())?;
                if let Some(e) = &extra {
                    scaled = Tensor::cat(&[&scaled, e], 1)?;
                }
                let scaled = scaled.to_dtype(self.dtype)?;
                let input = if cfg {
                    Tensor::cat(&[&scaled, &scaled], 0)?
                } else {
                    scaled
                };
                let out = self
                    .unet
                    .forward(&input, t, &embeds)?
                    .to_dtype(DType::F32)?;
                let out = if cfg {
                    let (u, c) = (out.i(0..1)?, out.i(1..2)?);
                    (&u + (c - &u)?.broadcast_mul(&g)?)?
                } else {
                    out
                };
                let x0 = match prediction {
                    Prediction::Epsilon => (x - (out * sigma)?)?,
                    Prediction::V => {
                        ((x / (sigma * sigma + 1.0))?
                            - (out * (sigma / (sigma * sigma + 1.0).sqrt()))?)?
                    }
                };
                Ok(x0)
            };
        let mut noise = |like: &Tensor| {
            Tensor::from_vec(rng.normals(like.elem_count()), like.shape(), like.device())
        };
        let mut sigmas = plan.sigmas.iter().skip(1).copied();
        let mut after = |x: Tensor| blend(x, sigmas.next().unwrap_or(0.0));
        let steps = plan.steps();
        let mut cancelled = false;
        let mut step_cb = |i: usize| {
            let go = on_step(i + 1, steps);
            cancelled = !go;
            go
        };
        let x = crate::sampler::sample_with(
            job.sampler,
            &plan,
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
        let x = blend(x, plan.sigma_end()).map_err(r)?;
        let latents = (x / (1.0 + plan.sigma_end().powi(2)).sqrt()).map_err(r)?;
        dev.synchronize().map_err(r)?;
        let denoise_secs = t0.elapsed().as_secs_f64();
        let init_latent = (init_latent / (1.0 + plan.sigma_end().powi(2)).sqrt()).map_err(r)?;
        Ok((latents, init_latent, text_secs, denoise_secs))
    }

    /// The VAE round trip of `init` (what img2img at strength 0 must give).
    ///
    /// # Errors
    /// What [`render_error`] makes of candle's errors.
    pub fn vae_round_trip(&self, width: u32, height: u32, init: &[u8]) -> Result<Vec<u8>> {
        let (w, h) = (width as usize, height as usize);
        let pixels: Vec<f32> = init.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
        let latent = Tensor::from_vec(pixels, (1, h, w, 3), &self.device)
            .and_then(|t| t.permute((0, 3, 1, 2))?.contiguous())
            .and_then(|img| self.encode_image(&img))
            .map_err(render_error)?;
        self.decode(&latent)
    }

    /// Scaled latents `(1, c, h, w)` to pixels `(1, 3, h', w')`, about -1..1 (the VAE's output,
    /// not yet clamped), in f32.
    ///
    /// # Errors
    /// What [`render_error`] makes of candle's errors.
    pub fn decode_to_pixels(&self, latents: &Tensor) -> Result<Tensor> {
        (latents.to_dtype(DType::F32).map_err(render_error)? / self.defaults.vae_scale)
            .and_then(|l| match &self.vae {
                Some(vae) => vae.decode(&l),
                None => Ok(l),
            })
            .map_err(render_error)
    }

    /// The text conditioning of `p`'s prompts, rows `[negative, prompt]` with guidance and
    /// `[prompt]` without: the cross-attention states and, for SDXL, the pooled text embedding and
    /// the time ids. With [`Self::denoiser_output`] and [`Self::decode_to_pixels`], a render's
    /// stages one at a time, which `bench/parity.py` checks against diffusers.
    ///
    /// # Errors
    /// As a render's text stage.
    pub fn text_conditioning(&self, p: &JobParams) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let cond = self.encode_text(p)?;
        Ok((cond.ctx, cond.text_time.map(|tt| (tt.pooled, tt.time_ids))))
    }

    /// The denoiser's prediction (noise or v, as the family's) for latents `x`, one row per row of
    /// `p`'s [`Self::text_conditioning`], at training timestep `t`, in f32; no guidance applied.
    ///
    /// # Errors
    /// What [`render_error`] makes of candle's errors.
    pub fn denoiser_output(&self, x: &Tensor, t: f64, p: &JobParams) -> Result<Tensor> {
        let cond = self.encode_text(p)?;
        x.to_dtype(self.dtype)
            .and_then(|x| self.unet.forward(&x, t, &cond))
            .and_then(|out| out.to_dtype(DType::F32))
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
