//! Training the `shapes` model with candle: v-prediction on the family's own noise schedule, AdamW,
//! an EMA of the weights (what ships), caption dropout for classifier-free guidance, checkpoints to
//! resume from.
//!
//! Every batch is a function of `(seed, step)` alone, so a resumed run sees the same data as an
//! uninterrupted one (the optimizer's moments restart, a short disturbance).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use pixelfarm_diffusion::sampler::NoiseSchedule;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig, ShapesText, ShapesUnet};
use pixelfarm_diffusion::{Family, JobRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenizers::Tokenizer;

use crate::data::{Generator, SIDE, to_model_pixels};
use crate::vocab;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Where checkpoints, samples and the log go.
    pub out_dir: PathBuf,
    /// Total optimizer steps (a resumed run continues up to this).
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over the first `warmup` steps of a session, then constant
    /// until `decay_start`, then a cosine down to `lr_min` at `steps`).
    pub lr: f64,
    /// Warm-up steps at the start of every session (the optimizer's moments restart on resume).
    pub warmup: usize,
    /// Step where the cosine decay starts (`None`: no decay).
    pub decay_start: Option<usize>,
    /// Learning rate reached at `steps` when decaying.
    pub lr_min: f64,
    /// Seed of the data, noise and initial weights' order.
    pub seed: u64,
    /// EMA decay of the shipped weights.
    pub ema_decay: f64,
    /// What the batches are made of.
    pub mix: DataMix,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Stop after this many seconds of wall time (checkpointing first), whatever `steps` says.
    pub max_seconds: Option<f64>,
    /// The architecture.
    pub arch: ShapesConfig,
    /// Which parameters train: all, or only the refinement head's (the UNet stays as it is).
    pub reach: Reach,
    /// How the per-pixel errors are weighted.
    pub weighting: LossWeighting,
    /// Where the networks train (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
    /// Threads that generate the batches of the coming steps while the current one trains (at
    /// least 1). Batches are functions of `(seed, step)`, so the count never changes the data.
    pub data_threads: usize,
}

/// What a batch is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataMix {
    /// Share of captions replaced by the empty prompt (for guidance).
    pub uncond_prob: f64,
    /// Share of examples that are squares (`None`: every training combination equally often: 50
    /// of the 140 are squares). The weak shape can be drawn more often in a fine-tune.
    pub square_share: Option<f64>,
}

impl Default for DataMix {
    fn default() -> Self {
        DataMix {
            uncond_prob: 0.1,
            square_share: None,
        }
    }
}

/// Weights of the v-prediction squared error. The default is the plain mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossWeighting {
    /// Extra weight of the pixels on the shape's outline ([`crate::data::Spec::outline`]): 0 for
    /// none, `k` for `1 + k` on the outline. The shape's identity lives in a few dozen outline
    /// pixels that a plain mean drowns in the background's.
    pub outline: f64,
    /// Extra weight near the shape's vertices ([`crate::data::Spec::corners`]): `k` for up to
    /// `1 + k` there, on top of the outline's. What tells a square from a circle is a handful of
    /// corner pixels, which the model rounds off.
    pub corner: f64,
    /// Min-SNR-γ weighting (Hang et al., 2023; for v: `min(SNR, γ) / (SNR + 1)`): caps the weight
    /// of nearly clean timesteps so the mid-noise ones, where shapes form, are learned sooner.
    pub min_snr_gamma: Option<f64>,
}

impl LossWeighting {
    /// The weight of an example at noise `sigma` (`x = x0 + sigma * eps`).
    pub fn timestep_weight(&self, sigma: f64) -> f64 {
        match self.min_snr_gamma {
            Some(gamma) => {
                let snr = 1.0 / (sigma * sigma);
                snr.min(gamma) / (snr + 1.0)
            }
            None => 1.0,
        }
    }
}

/// The networks and their trainable variables.
pub struct Model {
    /// Variables of the UNet.
    pub unet_vars: VarMap,
    /// Variables of the text encoder.
    pub text_vars: VarMap,
    /// The UNet.
    pub unet: ShapesUnet,
    /// The text encoder.
    pub text: ShapesText,
}

impl Model {
    /// Freshly initialised networks on `dev`.
    ///
    /// # Errors
    /// Only for candle errors.
    pub fn new(arch: ShapesConfig, dev: &Device) -> Result<Self> {
        let unet_vars = VarMap::new();
        let text_vars = VarMap::new();
        let unet = ShapesUnet::new(arch, VarBuilder::from_varmap(&unet_vars, DType::F32, dev))?;
        let text = ShapesText::new(VarBuilder::from_varmap(&text_vars, DType::F32, dev))?;
        Ok(Model {
            unet_vars,
            text_vars,
            unet,
            text,
        })
    }

    /// Every trainable variable by `unet.`/`text.`-prefixed name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (prefix, vm) in [("unet.", &self.unet_vars), ("text.", &self.text_vars)] {
            let data = vm.data().lock().unwrap_or_else(|p| p.into_inner());
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            for n in names {
                out.push((format!("{prefix}{n}"), data[&n].clone()));
            }
        }
        out
    }

    /// The variables a backward with `reach` trains.
    pub fn trained_vars(&self, reach: Reach) -> Vec<(String, Var)> {
        let mut vars = self.named_vars();
        if reach == Reach::Refiner {
            vars.retain(|(n, _)| n.starts_with(REFINER_PREFIX));
        }
        vars
    }

    /// Parameter count.
    pub fn param_count(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Names of the refinement head's variables start with this.
const REFINER_PREFIX: &str = "unet.refine.";

/// One training batch: clean pixels, token ids, timesteps, noise.
pub struct Batch {
    /// `(n, 3, SIDE, SIDE)` in -1..1.
    pub x0: Tensor,
    /// `(n, MAX_TOKENS)` u32.
    pub ids: Tensor,
    /// `(n,)` fractional training timesteps.
    pub t: Tensor,
    /// `(n,)` `sqrt(abar)` of each timestep.
    pub alpha: Tensor,
    /// `(n,)` `sqrt(1 - abar)`.
    pub sigma: Tensor,
    /// `(n, 3, SIDE, SIDE)` standard normal.
    pub noise: Tensor,
    /// `(n, 1, SIDE, SIDE)` weight of each pixel's squared error.
    pub weight: Tensor,
}

impl Batch {
    /// The same batch on `dev`.
    ///
    /// # Errors
    /// Only for candle errors.
    pub fn to_device(&self, dev: &Device) -> Result<Batch> {
        Ok(Batch {
            x0: self.x0.to_device(dev)?,
            ids: self.ids.to_device(dev)?,
            t: self.t.to_device(dev)?,
            alpha: self.alpha.to_device(dev)?,
            sigma: self.sigma.to_device(dev)?,
            noise: self.noise.to_device(dev)?,
            weight: self.weight.to_device(dev)?,
        })
    }
}

/// The batch of step `step` of a run seeded `seed` (on the CPU).
///
/// # Errors
/// Only for candle errors.
pub fn batch(
    seed: u64,
    step: usize,
    n: usize,
    mix: &DataMix,
    weighting: &LossWeighting,
    tok: &Tokenizer,
    schedule: &NoiseSchedule,
) -> Result<Batch> {
    let mut g = Generator::new(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .with_square_share(mix.square_share);
    let dev = Device::Cpu;
    let mut pixels = Vec::with_capacity(n * 3 * SIDE * SIDE);
    let mut ids = Vec::with_capacity(n * vocab_len());
    let (mut ts, mut alphas, mut sigmas) = (Vec::new(), Vec::new(), Vec::new());
    let mut weights = Vec::with_capacity(n * SIDE * SIDE);
    for _ in 0..n {
        let (spec, caption, img) = g.next_example();
        pixels.extend(to_model_pixels(&img));
        let text = if g.rng().uniform() < mix.uncond_prob {
            ""
        } else {
            caption.as_str()
        };
        ids.extend(vocab::token_ids(tok, text));
        let t = g.rng().uniform() * (schedule.len() - 1) as f64;
        let s = schedule.sigma_at(t);
        let tw = weighting.timestep_weight(s);
        let mut w = vec![1.0; SIDE * SIDE];
        if weighting.outline > 0.0 {
            for (w, o) in w.iter_mut().zip(spec.outline()) {
                *w += weighting.outline * o;
            }
        }
        if weighting.corner > 0.0 {
            for (w, c) in w.iter_mut().zip(spec.corners()) {
                *w += weighting.corner * c;
            }
        }
        weights.extend(w.into_iter().map(|w| (tw * w) as f32));
        ts.push(t as f32);
        alphas.push((1.0 / (1.0 + s * s).sqrt()) as f32);
        sigmas.push((s / (1.0 + s * s).sqrt()) as f32);
    }
    let noise = g.rng().normals(n * 3 * SIDE * SIDE);
    Ok(Batch {
        x0: Tensor::from_vec(pixels, (n, 3, SIDE, SIDE), &dev)?,
        ids: Tensor::from_vec(ids, (n, vocab_len()), &dev)?,
        t: Tensor::from_vec(ts, n, &dev)?,
        alpha: Tensor::from_vec(alphas, (n, 1, 1, 1), &dev)?,
        sigma: Tensor::from_vec(sigmas, (n, 1, 1, 1), &dev)?,
        noise: Tensor::from_vec(noise, (n, 3, SIDE, SIDE), &dev)?,
        weight: Tensor::from_vec(weights, (n, 1, SIDE, SIDE), &dev)?,
    })
}

fn vocab_len() -> usize {
    pixelfarm_diffusion::shapes_net::MAX_TOKENS
}

/// The (weighted) v-prediction loss of `model` on `b`, its backward reaching `reach`.
///
/// # Errors
/// Only for candle errors.
pub fn loss(model: &Model, b: &Batch, reach: Reach) -> Result<Tensor> {
    let xt = (b.x0.broadcast_mul(&b.alpha)? + b.noise.broadcast_mul(&b.sigma)?)?;
    let v = (b.noise.broadcast_mul(&b.alpha)? - b.x0.broadcast_mul(&b.sigma)?)?;
    let ctx = match reach {
        Reach::All => model.text.forward(&b.ids)?,
        Reach::Refiner => model.text.forward(&b.ids)?.detach(),
    };
    let pred = model.unet.forward_with(&xt, &b.t, &ctx, reach)?;
    Ok((pred - v)?.sqr()?.broadcast_mul(&b.weight)?.mean_all()?)
}

/// The family's training schedule.
pub fn schedule() -> NoiseSchedule {
    let d = Family::Shapes.defaults();
    NoiseSchedule::scaled_linear(d.beta_start, d.beta_end, d.train_timesteps)
}

/// The learning rate of `step` in a session that started at `session_start`.
pub fn learning_rate(cfg: &TrainConfig, session_start: usize, step: usize) -> f64 {
    let warm = ((step - session_start.min(step) + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
    let peak = match cfg.decay_start {
        Some(start) if step > start && cfg.steps > start => {
            let done = ((step - start) as f64 / (cfg.steps - start) as f64).min(1.0);
            cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
        }
        _ => cfg.lr,
    };
    peak * warm
}

/// Files of a checkpoint folder.
const STATE: &str = "state.json";

fn save_tensors(map: &HashMap<String, Tensor>, prefix: &str, path: &Path) -> Result<()> {
    let sub: HashMap<String, Tensor> = map
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect();
    candle_core::safetensors::save(&sub, path).with_context(|| format!("writing {path:?}"))
}

/// Write `unet.safetensors` and `text_encoder.safetensors` of `tensors` (prefixed names) into `dir`.
///
/// # Errors
/// When the files cannot be written.
pub fn save_split(tensors: &HashMap<String, Tensor>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    save_tensors(tensors, "unet.", &dir.join("unet.safetensors"))?;
    save_tensors(tensors, "text.", &dir.join("text_encoder.safetensors"))
}

fn load_split(dir: &Path, dev: &Device) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (prefix, file) in [
        ("unet.", "unet.safetensors"),
        ("text.", "text_encoder.safetensors"),
    ] {
        for (k, v) in candle_core::safetensors::load(dir.join(file), dev)? {
            out.insert(format!("{prefix}{k}"), v);
        }
    }
    Ok(out)
}

/// What `state.json` records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: usize,
    /// Wall seconds spent training so far, over all sessions.
    pub seconds: f64,
    /// EMA of the loss.
    pub loss_ema: f64,
}

/// Train (or resume) per `cfg`; logs one line per 25 steps to stdout.
///
/// # Errors
/// For I/O and candle errors.
pub fn train(cfg: &TrainConfig) -> Result<RunState> {
    let ckpt = cfg.out_dir.join("checkpoint");
    std::fs::create_dir_all(&ckpt)?;
    let model = Model::new(cfg.arch, &cfg.device)?;
    let vars = model.named_vars();
    let mut state = RunState {
        step: 0,
        seconds: 0.0,
        loss_ema: 0.0,
    };
    let mut ema: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().expect("copy")))
        .collect();
    if ckpt.join(STATE).exists() {
        let weights = load_split(&ckpt.join("weights"), &cfg.device)?;
        for (n, v) in &vars {
            let w = weights
                .get(n)
                .with_context(|| format!("checkpoint lacks {n}"))?;
            anyhow::ensure!(
                w.dims() == v.dims(),
                "checkpoint's {n} has shape {:?}, the architecture asked for ({:?}) {:?}: \
                 resume with the widths the run started with",
                w.dims(),
                cfg.arch,
                v.dims()
            );
            v.set(w)?;
        }
        if let Some(extra) = weights.keys().find(|n| !vars.iter().any(|(m, _)| m == *n)) {
            anyhow::bail!(
                "checkpoint has {extra}, which the architecture asked for ({:?}) lacks: resume \
                 with the widths the run started with",
                cfg.arch
            );
        }
        ema = load_split(&ckpt.join("ema"), &cfg.device)?;
        state = serde_json::from_slice(&std::fs::read(ckpt.join(STATE))?)?;
        println!(
            "resumed at step {} ({:.0} s trained)",
            state.step, state.seconds
        );
    }
    let trained = model.trained_vars(cfg.reach);
    anyhow::ensure!(
        !trained.is_empty(),
        "only the refinement head is to train, but the architecture ({:?}) has none",
        cfg.arch
    );
    println!(
        "shapes model: {} parameters ({} trained), batch {}, lr {}, {} steps, on {:?}",
        model.param_count(),
        trained.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        cfg.batch,
        cfg.lr,
        cfg.steps,
        cfg.device
    );
    let mut opt = AdamW::new(
        trained.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let session = Instant::now();
    let session_start = state.step;
    let base_seconds = state.seconds;
    let mut last_ckpt = state.step;
    let save = |state: &RunState, ema: &HashMap<String, Tensor>| -> Result<()> {
        let weights: HashMap<String, Tensor> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let tmp = cfg.out_dir.join("checkpoint.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        save_split(&weights, &tmp.join("weights"))?;
        save_split(ema, &tmp.join("ema"))?;
        std::fs::write(tmp.join(STATE), serde_json::to_vec_pretty(state)?)?;
        let old = cfg.out_dir.join("checkpoint.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&ckpt, &old)?;
        std::fs::rename(&tmp, &ckpt)?;
        std::fs::remove_dir_all(&old)?;
        Ok(())
    };
    let mut data = Prefetch::start(cfg, state.step);
    while state.step < cfg.steps {
        let t0 = Instant::now();
        let step = state.step;
        let lr = learning_rate(cfg, session_start, step);
        opt.set_learning_rate(lr);
        let b = data.take(step)?.to_device(&cfg.device)?;
        let l = loss(&model, &b, cfg.reach)?;
        opt.backward_step(&l)?;
        let lv = l.to_scalar::<f32>()? as f64;
        state.loss_ema = if step == 0 || state.loss_ema == 0.0 {
            lv
        } else {
            0.98 * state.loss_ema + 0.02 * lv
        };
        // EMA with warm-up: short memory early, `ema_decay` later.
        let decay = cfg
            .ema_decay
            .min((1.0 + step as f64) / (10.0 + step as f64));
        // Only the trained variables: the frozen ones' EMA is themselves, and recomputing it would
        // round them off it.
        for (n, v) in &trained {
            let e = &ema[n];
            // Detached: an op on a variable records its inputs for backprop, so without this each
            // step's EMA would hold the previous one alive (memory grew ~15 MB a step).
            let new = ((e * decay)? + (v.as_tensor().detach() * (1.0 - decay))?)?.detach();
            ema.insert(n.clone(), new);
        }
        state.step += 1;
        state.seconds = base_seconds + session.elapsed().as_secs_f64();
        if state.step.is_multiple_of(25) || state.step == 1 {
            println!(
                "step {} loss {:.4} (ema {:.4}) lr {:.2e} {:.3} s/step, {:.1} s total",
                state.step,
                lv,
                state.loss_ema,
                lr,
                t0.elapsed().as_secs_f64(),
                state.seconds
            );
        }
        let out_of_time = cfg
            .max_seconds
            .is_some_and(|m| session.elapsed().as_secs_f64() >= m);
        if state.step - last_ckpt >= cfg.checkpoint_every || state.step == cfg.steps || out_of_time
        {
            save(&state, &ema)?;
            last_ckpt = state.step;
            println!("checkpoint at step {}", state.step);
        }
        if out_of_time {
            println!("stopping: time budget reached");
            break;
        }
    }
    Ok(state)
}

/// Batches of the coming steps, generated on `cfg.data_threads` threads: thread `i` makes the steps
/// `start + i`, `start + i + threads`, … and stays at most two batches ahead of the trainer.
struct Prefetch {
    rx: Vec<std::sync::mpsc::Receiver<(usize, Result<Batch>)>>,
    start: usize,
}

impl Prefetch {
    fn start(cfg: &TrainConfig, start: usize) -> Prefetch {
        let threads = cfg.data_threads.max(1);
        let rx = (0..threads)
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                let (seed, n, mix, weighting, steps) =
                    (cfg.seed, cfg.batch, cfg.mix, cfg.weighting, cfg.steps);
                std::thread::spawn(move || {
                    let tok = vocab::tokenizer();
                    let sched = schedule();
                    for step in (start + i..steps).step_by(threads) {
                        let b = batch(seed, step, n, &mix, &weighting, &tok, &sched);
                        // The trainer has stopped (time budget or error): stop too.
                        if tx.send((step, b)).is_err() {
                            break;
                        }
                    }
                });
                rx
            })
            .collect();
        Prefetch { rx, start }
    }

    /// The batch of `step` (steps are taken in order).
    fn take(&mut self, step: usize) -> Result<Batch> {
        let threads = self.rx.len();
        let (got, b) = self.rx[(step - self.start) % threads]
            .recv()
            .context("a data thread stopped")?;
        debug_assert_eq!(got, step);
        b
    }
}

/// Start a run in `out_dir` from the weights of the model folder `model_dir` (as written by
/// [`crate::export::write_model`]): they become both the trained and the EMA weights, and the run
/// continues at `state.step` (so it sees new data). For continuing a shipped model whose training
/// checkpoint is gone. With `refine > 0` a model without a refinement head gets one of that width,
/// freshly initialised but for its last convolution, which starts at zero so the model's outputs
/// are the folder's until the head has trained.
///
/// # Errors
/// When `out_dir` already holds a checkpoint, the folder's head differs from `refine`, or a file
/// cannot be read or written.
pub fn import(model_dir: &Path, out_dir: &Path, state: &RunState, refine: usize) -> Result<()> {
    let ckpt = out_dir.join("checkpoint");
    anyhow::ensure!(
        !ckpt.join(STATE).exists(),
        "`{}` already holds a checkpoint; import into an empty folder",
        out_dir.display()
    );
    let mut tensors = HashMap::new();
    for (prefix, rel) in [
        ("unet.", pixelfarm_diffusion::registry::layout::UNET),
        ("text.", pixelfarm_diffusion::registry::layout::TEXT_ENCODER),
    ] {
        let path = model_dir.join(rel);
        for (k, v) in candle_core::safetensors::load(&path, &Device::Cpu)
            .with_context(|| format!("reading {path:?}"))?
        {
            tensors.insert(format!("{prefix}{k}"), v);
        }
    }
    let unet: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("unet.")?.to_string(), v.clone())))
        .collect();
    let mut arch =
        ShapesConfig::of_weights(&VarBuilder::from_tensors(unet, DType::F32, &Device::Cpu))
            .with_context(|| format!("`{}`: the UNet's architecture", model_dir.display()))?;
    if refine > 0 {
        anyhow::ensure!(
            arch.refine == 0 || arch.refine == refine,
            "--refine {refine}: `{}` already has a refinement head of width {}",
            model_dir.display(),
            arch.refine
        );
        arch = arch
            .with_refine(refine)
            .map_err(|e| anyhow::anyhow!("--refine: {e}"))?;
    }
    let model = Model::new(arch, &Device::Cpu)?;
    for (n, v) in model.named_vars() {
        if n.starts_with(REFINER_PREFIX) && !tensors.contains_key(&n) {
            let fresh = if n.starts_with(&format!("{REFINER_PREFIX}conv_out.")) {
                v.as_tensor().zeros_like()?
            } else {
                v.as_tensor().clone()
            };
            tensors.insert(n, fresh);
            continue;
        }
        let w = tensors
            .get(&n)
            .with_context(|| format!("`{}` lacks {n}", model_dir.display()))?;
        anyhow::ensure!(
            w.dims() == v.dims(),
            "`{}`: {n} has shape {:?}, its architecture ({arch:?}) {:?}",
            model_dir.display(),
            w.dims(),
            v.dims()
        );
    }
    save_split(&tensors, &ckpt.join("weights"))?;
    save_split(&tensors, &ckpt.join("ema"))?;
    std::fs::write(ckpt.join(STATE), serde_json::to_vec_pretty(state)?)?;
    Ok(())
}

/// The EMA weights of the checkpoint in `out_dir`, by prefixed name.
///
/// # Errors
/// When there is no checkpoint.
pub fn load_ema(out_dir: &Path) -> Result<HashMap<String, Tensor>> {
    load_split(&out_dir.join("checkpoint").join("ema"), &Device::Cpu)
}

/// Seeded standard normals, for callers that sample outside the engine.
pub fn normals(seed: u64, n: usize) -> Vec<f32> {
    JobRng::new(seed).normals(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(decay_start: Option<usize>) -> TrainConfig {
        TrainConfig {
            out_dir: PathBuf::new(),
            steps: 1000,
            batch: 1,
            lr: 1e-3,
            warmup: 10,
            decay_start,
            lr_min: 1e-5,
            seed: 0,
            ema_decay: 0.99,
            mix: DataMix::default(),
            checkpoint_every: 100,
            max_seconds: None,
            arch: ShapesConfig::DEFAULT,
            reach: Reach::All,
            weighting: LossWeighting::default(),
            device: Device::Cpu,
            data_threads: 1,
        }
    }

    #[test]
    fn min_snr_caps_the_clean_end_and_keeps_the_noisy_end() {
        let plain = LossWeighting::default();
        assert_eq!(plain.timestep_weight(0.01), 1.0);
        let w = LossWeighting {
            min_snr_gamma: Some(5.0),
            ..LossWeighting::default()
        };
        // sigma 0.1: SNR 100, weight 5 / 101.
        assert!((w.timestep_weight(0.1) - 5.0 / 101.0).abs() < 1e-12);
        // sigma 1: SNR 1, weight 1 / 2.
        assert!((w.timestep_weight(1.0) - 0.5).abs() < 1e-12);
        // The peak sits at SNR = gamma.
        assert!(w.timestep_weight(1.0 / 5f64.sqrt()) > w.timestep_weight(0.3));
        assert!(w.timestep_weight(1.0 / 5f64.sqrt()) > w.timestep_weight(1.0));
    }

    #[test]
    fn outline_weights_reach_the_batch() {
        let tok = crate::vocab::tokenizer();
        let sched = schedule();
        let plain_mix = DataMix {
            uncond_prob: 0.0,
            ..DataMix::default()
        };
        let plain = batch(3, 0, 2, &plain_mix, &LossWeighting::default(), &tok, &sched).unwrap();
        let w = LossWeighting {
            outline: 4.0,
            ..LossWeighting::default()
        };
        let weighted = batch(3, 0, 2, &plain_mix, &w, &tok, &sched).unwrap();
        let max = |t: &Tensor| t.max_all().unwrap().to_scalar::<f32>().unwrap();
        let min = |t: &Tensor| t.min_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!((min(&plain.weight), max(&plain.weight)), (1.0, 1.0));
        assert_eq!((min(&weighted.weight), max(&weighted.weight)), (1.0, 5.0));
        // Corners add on top of the outline (seed 3's first examples have vertices: checked by
        // the weight rising above the outline's maximum).
        let corners = LossWeighting { corner: 4.0, ..w };
        let both = batch(3, 0, 8, &plain_mix, &corners, &tok, &sched).unwrap();
        assert!(max(&both.weight) > 5.0, "{}", max(&both.weight));
        // Same data either way.
        let diff = (plain.x0 - weighted.x0).unwrap().abs().unwrap();
        assert_eq!(max(&diff), 0.0);
    }

    #[test]
    fn prefetched_batches_are_the_steps_own_whatever_the_thread_count() {
        let tok = crate::vocab::tokenizer();
        let sched = schedule();
        let c = TrainConfig {
            batch: 2,
            steps: 7,
            data_threads: 3,
            ..cfg(None)
        };
        let mut data = Prefetch::start(&c, 2);
        for step in 2..7 {
            let got = data.take(step).unwrap();
            let want = batch(c.seed, step, 2, &c.mix, &c.weighting, &tok, &sched).unwrap();
            for (a, b) in [
                (&got.x0, &want.x0),
                (&got.noise, &want.noise),
                (&got.t, &want.t),
            ] {
                assert_eq!(
                    a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn warm_up_restarts_with_every_session() {
        let c = cfg(None);
        assert!((learning_rate(&c, 0, 0) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(&c, 0, 9) - 1e-3).abs() < 1e-12);
        assert!((learning_rate(&c, 500, 500) - 1e-4).abs() < 1e-12);
        assert!((learning_rate(&c, 500, 600) - 1e-3).abs() < 1e-12);
    }

    #[test]
    fn cosine_decay_runs_from_lr_to_lr_min() {
        let c = cfg(Some(200));
        assert!((learning_rate(&c, 0, 200) - 1e-3).abs() < 1e-12);
        let mid = learning_rate(&c, 0, 600);
        assert!((mid - (1e-3 + 1e-5) / 2.0).abs() < 1e-9, "{mid}");
        assert!((learning_rate(&c, 0, 1000) - 1e-5).abs() < 1e-12);
        assert!(learning_rate(&c, 0, 400) > learning_rate(&c, 0, 800));
    }
}
