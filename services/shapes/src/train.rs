//! Training the `shapes` model with candle: v-prediction on the family's own noise schedule, AdamW,
//! an EMA of the weights (what ships), caption dropout for classifier-free guidance, checkpoints to
//! resume from.
//!
//! Every batch is a function of `(seed, step)` alone, so a resumed run sees the same data as an
//! uninterrupted one (the optimizer's moments restart, a short disturbance).
//!
//! Here: the learning rate and the loop. `objective` holds the loss, `config` a run's settings,
//! `model` the networks and their variables, `batch` the batches (and the threads that make them
//! ahead of the trainer), `checkpoint` what a run writes and resumes from, `lora` the training of
//! a LoRA on a frozen model.

mod batch;
mod checkpoint;
mod config;
mod lora;
mod model;
mod objective;

pub use batch::{Batch, batch, schedule};
pub use checkpoint::{RunState, import, load_ema, save_split};
pub use config::{DataMix, LossWeighting, TrainConfig};
pub use lora::{LoraConfig, LoraRun, train_lora};
pub use model::Model;
pub use objective::loss;

use anyhow::{Context, Result};
use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use pixelfarm_diffusion::JobRng;
use std::collections::HashMap;
use std::time::Instant;

use batch::Prefetch;
use checkpoint::{STATE, load_split};

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
        let l = loss(&model.unet, &model.text, &b, cfg.reach)?;
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

/// Seeded standard normals, for callers that sample outside the engine.
pub fn normals(seed: u64, n: usize) -> Vec<f32> {
    JobRng::new(seed).normals(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig};
    use std::path::PathBuf;

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
