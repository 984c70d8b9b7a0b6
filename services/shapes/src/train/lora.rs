//! Training a LoRA for a shapes model: low-rank updates `W + up · down` of the UNet's convolutions
//! and linear layers and of the text encoder's token embedding, the base weights frozen, written
//! in kohya's layout (`lora_unet_…`, `lora_te_…`, `alpha`) — a file the engine merges like any
//! user's LoRA.
//!
//! Each step builds the networks from the base tensors plus the current low-rank products, so the
//! backward reaches `up` and `down` alone; the rebuild costs a few small matmuls next to the
//! UNet's forward and backward.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use pixelfarm_diffusion::registry::layout;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig, ShapesText, ShapesUnet};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::batch::{batch, schedule};
use super::checkpoint::model_file;
use super::config::{DataMix, LossWeighting};
use super::objective::loss;
use crate::data::Color;

/// Settings of a LoRA run.
#[derive(Debug, Clone)]
pub struct LoraConfig {
    /// The base model's folder (`models/shapes`).
    pub model_dir: PathBuf,
    /// The LoRA file to write.
    pub out: PathBuf,
    /// Rank of every low-rank update.
    pub rank: usize,
    /// The colour the LoRA teaches.
    pub color: Color,
    /// Share of examples of the new colour; the rest are the base model's training combinations.
    pub share: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate: linear warm-up over `warmup` steps, then a cosine down to 1 % of it at
    /// `steps`.
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Seed of the data, noise and initial `down` matrices.
    pub seed: u64,
    /// Share of captions replaced by the empty prompt (for guidance).
    pub uncond_prob: f64,
    /// How the per-pixel errors are weighted.
    pub weighting: LossWeighting,
    /// Where it trains.
    pub device: Device,
}

/// What a LoRA run did.
#[derive(Debug, Clone, Copy)]
pub struct LoraRun {
    /// Trained parameters (every `up` and `down`).
    pub params: usize,
    /// Wall time.
    pub seconds: f64,
    /// Mean loss over the last 50 steps.
    pub final_loss: f64,
}

/// Which network a tensor belongs to, with its kohya prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    Unet,
    Text,
}

impl Net {
    fn prefix(self) -> &'static str {
        match self {
            Net::Unet => "lora_unet_",
            Net::Text => "lora_te_",
        }
    }
}

/// One low-rank update of the base tensor `tensor`.
struct Adapter {
    net: Net,
    tensor: String,
    dims: Vec<usize>,
    /// `(out, rank)`, zero at the start, so the LoRA starts as a no-op.
    up: Var,
    /// `(rank, in · kernel)`.
    down: Var,
}

/// The tensors a shapes LoRA adapts: every UNet convolution and linear layer except the
/// colour-blind refinement head's (it reads one channel at a time and no text), and the token
/// embedding, whose spare rows hold the new words.
fn adapted(net: Net, name: &str, t: &Tensor) -> bool {
    match net {
        Net::Unet => {
            name.ends_with(".weight") && !name.starts_with("refine.") && matches!(t.rank(), 2 | 4)
        }
        Net::Text => name == "token_embedding.weight",
    }
}

/// Train a LoRA per `cfg` and write it to `cfg.out`; logs one line per 25 steps to stdout.
///
/// # Errors
/// For I/O and candle errors, and settings out of range.
pub fn train_lora(cfg: &LoraConfig) -> Result<LoraRun> {
    anyhow::ensure!(cfg.rank > 0, "--rank must be positive");
    anyhow::ensure!((0.0..=1.0).contains(&cfg.share), "--share must be in 0..=1");
    let dev = &cfg.device;
    let base = [
        (Net::Unet, model_file(&cfg.model_dir, layout::UNET, dev)?),
        (
            Net::Text,
            model_file(&cfg.model_dir, layout::TEXT_ENCODER, dev)?,
        ),
    ];
    let arch = ShapesConfig::of_weights(&VarBuilder::from_tensors(
        base[0].1.clone(),
        DType::F32,
        dev,
    ))?;
    let mut rng = pixelfarm_diffusion::JobRng::new(cfg.seed ^ 0x4c6f_5241);
    let mut adapters = Vec::new();
    for (net, map) in &base {
        let mut names: Vec<&String> = map.keys().filter(|n| adapted(*net, n, &map[*n])).collect();
        names.sort();
        for name in names {
            let dims = map[name].dims().to_vec();
            let (out, inner) = (dims[0], dims[1..].iter().product::<usize>());
            let std = 1.0 / (inner as f32).sqrt();
            let down: Vec<f32> = rng
                .normals(cfg.rank * inner)
                .into_iter()
                .map(|x| x * std)
                .collect();
            adapters.push(Adapter {
                net: *net,
                tensor: name.clone(),
                dims,
                up: Var::zeros((out, cfg.rank), DType::F32, dev)?,
                down: Var::from_tensor(&Tensor::from_vec(down, (cfg.rank, inner), dev)?)?,
            });
        }
    }
    let vars: Vec<Var> = adapters
        .iter()
        .flat_map(|a| [a.up.clone(), a.down.clone()])
        .collect();
    let params = vars.iter().map(|v| v.elem_count()).sum();
    println!(
        "LoRA of rank {} on {} tensors: {params} parameters, batch {}, lr {}, {} steps, {} share {}",
        cfg.rank,
        adapters.len(),
        cfg.batch,
        cfg.lr,
        cfg.steps,
        cfg.color.word(),
        cfg.share
    );
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mix = DataMix {
        uncond_prob: cfg.uncond_prob,
        square_share: None,
        new_color: Some((cfg.color, cfg.share)),
    };
    let tok = crate::vocab::tokenizer();
    let sched = schedule();
    let start = Instant::now();
    let mut recent = std::collections::VecDeque::new();
    for step in 0..cfg.steps {
        let t0 = Instant::now();
        let lr = lora_learning_rate(cfg, step);
        opt.set_learning_rate(lr);
        let [unet_map, text_map] = merged(&base, &adapters)?;
        let unet = ShapesUnet::new(arch, VarBuilder::from_tensors(unet_map, DType::F32, dev))?;
        let text = ShapesText::new(VarBuilder::from_tensors(text_map, DType::F32, dev))?;
        let b = batch(
            cfg.seed,
            step,
            cfg.batch,
            &mix,
            &cfg.weighting,
            &tok,
            &sched,
        )?
        .to_device(dev)?;
        let l = loss(&unet, &text, &b, Reach::All)?;
        opt.backward_step(&l)?;
        let lv = f64::from(l.to_scalar::<f32>()?);
        recent.push_back(lv);
        if recent.len() > 50 {
            recent.pop_front();
        }
        if (step + 1).is_multiple_of(25) || step == 0 {
            println!(
                "step {} loss {lv:.4} (last 50: {:.4}) lr {lr:.2e} {:.3} s/step",
                step + 1,
                recent.iter().sum::<f64>() / recent.len() as f64,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    save_kohya(&adapters, &cfg.out)?;
    Ok(LoraRun {
        params,
        seconds: start.elapsed().as_secs_f64(),
        final_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
    })
}

/// Warm-up, then a cosine from `lr` to 1 % of it at the last step.
fn lora_learning_rate(cfg: &LoraConfig, step: usize) -> f64 {
    let warm = ((step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
    let done = step as f64 / cfg.steps.max(1) as f64;
    let floor = 0.01 * cfg.lr;
    warm * (floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()))
}

/// The base tensors of each network with every adapter's `up · down` added (recorded for the
/// backward).
fn merged(
    base: &[(Net, HashMap<String, Tensor>); 2],
    adapters: &[Adapter],
) -> Result<[HashMap<String, Tensor>; 2]> {
    let mut out = [base[0].1.clone(), base[1].1.clone()];
    for a in adapters {
        let i = usize::from(a.net == Net::Text);
        let delta =
            a.up.as_tensor()
                .matmul(a.down.as_tensor())?
                .reshape(a.dims.as_slice())?;
        let changed = (&base[i].1[&a.tensor] + delta)?;
        out[i].insert(a.tensor.clone(), changed);
    }
    Ok(out)
}

/// Write the adapters in kohya's layout: a convolution's `down` as `(rank, in, k, k)` and its
/// `up` as `(out, rank, 1, 1)`, `alpha` = rank (scale 1, as trained).
fn save_kohya(adapters: &[Adapter], path: &Path) -> Result<()> {
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for a in adapters {
        let rank = a.down.dims()[0];
        let module = a.tensor.strip_suffix(".weight").unwrap_or(&a.tensor);
        let key = format!("{}{}", a.net.prefix(), module.replace('.', "_"));
        let conv = a.dims.len() == 4;
        let (down, up) = (a.down.as_tensor(), a.up.as_tensor());
        let (down, up) = if conv {
            (
                down.reshape((rank, a.dims[1], a.dims[2], a.dims[3]))?,
                up.reshape((a.dims[0], rank, 1, 1))?,
            )
        } else {
            (down.clone(), up.clone())
        };
        out.insert(
            format!("{key}.lora_down.weight"),
            down.to_device(&Device::Cpu)?,
        );
        out.insert(format!("{key}.lora_up.weight"), up.to_device(&Device::Cpu)?);
        out.insert(
            format!("{key}.alpha"),
            Tensor::new(rank as f32, &Device::Cpu)?,
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    candle_core::safetensors::save(&out, path)?;
    Ok(())
}
