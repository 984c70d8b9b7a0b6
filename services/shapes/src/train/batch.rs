//! The training batches: each a function of `(seed, step)` alone, made on threads ahead of the
//! trainer.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use pixelfarm_diffusion::Family;
use pixelfarm_diffusion::sampler::NoiseSchedule;
use tokenizers::Tokenizer;

use super::config::{DataMix, LossWeighting, TrainConfig};
use crate::data::{Generator, SIDE, to_model_pixels};
use crate::vocab;

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
    let g = Generator::new(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut g = match mix.new_color {
        Some((color, share)) => g.with_new_color(color, share),
        None => g.with_square_share(mix.square_share),
    };
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

/// The family's training schedule.
pub fn schedule() -> NoiseSchedule {
    let d = Family::Shapes.defaults();
    NoiseSchedule::scaled_linear(d.beta_start, d.beta_end, d.train_timesteps)
}

/// Batches of the coming steps, generated on `cfg.data_threads` threads: thread `i` makes the steps
/// `start + i`, `start + i + threads`, … and stays at most two batches ahead of the trainer.
pub(super) struct Prefetch {
    rx: Vec<std::sync::mpsc::Receiver<(usize, Result<Batch>)>>,
    start: usize,
}

impl Prefetch {
    pub(super) fn start(cfg: &TrainConfig, start: usize) -> Prefetch {
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
    pub(super) fn take(&mut self, step: usize) -> Result<Batch> {
        let threads = self.rx.len();
        let (got, b) = self.rx[(step - self.start) % threads]
            .recv()
            .context("a data thread stopped")?;
        debug_assert_eq!(got, step);
        b
    }
}
