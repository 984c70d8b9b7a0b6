//! `pixelfarm-train-shapes`: train, resume and export pixelfarm's shapes model (see
//! `models/shapes/MODEL_CARD.md` for the recipe).

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use pixelfarm_core::{ModelName, Sampler};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_diffusion::registry::DeviceChoice;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig};
use pixelfarm_shapes::data::{Color, Shape};
use pixelfarm_shapes::eval::{Prompts, RenderSettings};
use pixelfarm_shapes::train::{
    DataMix, LoraConfig, LossWeighting, RunState, TrainConfig, load_ema, train, train_lora,
};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "train pixelfarm's shapes model")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train, or resume from `<out>/checkpoint`.
    Train(TrainArgs),
    /// Start `<out>/checkpoint` from a model folder's weights (e.g. the shipped `models/shapes`),
    /// recording it as `--step` steps and `--minutes` of training already done.
    Import {
        #[arg(long, default_value = "models/shapes")]
        model_dir: PathBuf,
        #[arg(long, default_value = "shapes-run")]
        out: PathBuf,
        #[arg(long)]
        step: usize,
        #[arg(long)]
        minutes: f64,
        /// Add a full-resolution refinement head of this width (a multiple of 8) to a model
        /// without one; it starts as a no-op (0: none).
        #[arg(long, default_value_t = 0)]
        refine: usize,
    },
    /// Write the EMA weights of `<out>/checkpoint` as the model folder `<model_dir>` (with its
    /// `registry.yaml`).
    Export {
        #[arg(long, default_value = "shapes-run")]
        out: PathBuf,
        #[arg(long, default_value = "models/shapes")]
        model_dir: PathBuf,
    },
    /// Train a LoRA on the frozen model in `--model-dir` that teaches it a colour it never saw
    /// (its word is in the vocabulary), and write it in kohya's layout to `--out`.
    Lora(LoraArgs),
    /// Grade the model in `<models>/shapes` through the engine: the gate prompts, or every
    /// combination with `--all`, or every combination of a new colour with `--color`; prints the
    /// accuracy table and writes a contact sheet.
    Eval {
        #[arg(long, default_value = "models")]
        models: PathBuf,
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// First seed (seeds are consecutive).
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        #[arg(long)]
        all: bool,
        /// Grade every combination with this new colour (`purple`) instead.
        #[arg(long, conflicts_with = "all")]
        color: Option<String>,
        /// Apply the shipped LoRA (`purple`) at this weight to every job.
        #[arg(long)]
        lora: Option<f64>,
        #[arg(long)]
        steps: Option<u32>,
        #[arg(long)]
        guidance: Option<f64>,
        #[arg(long)]
        sampler: Option<String>,
        #[arg(long, default_value = "shapes-eval.png")]
        sheet: PathBuf,
        /// Render on `cpu` or `cuda` (a build with the `cuda` feature).
        #[arg(long, value_enum, default_value = "cpu")]
        device: EvalDevice,
    },
    /// Noise the generator's own clean images of every seen combination of `--shape` to each
    /// `--strengths` (img2img) and grade what the model makes of them: the low-noise end of
    /// sampling alone.
    Renoise {
        #[arg(long, default_value = "models")]
        models: PathBuf,
        #[arg(long, default_value = "square")]
        shape: String,
        /// Random placements per combination.
        #[arg(long, default_value_t = 2)]
        per_combination: usize,
        #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.2, 0.3, 0.4, 0.5])]
        strengths: Vec<f64>,
    },
}

/// Where `eval` renders.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EvalDevice {
    Cpu,
    Cuda,
}

/// The settings of `train`; see [`TrainConfig`].
#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long, default_value = "shapes-run")]
    out: PathBuf,
    #[arg(long, default_value_t = 6000)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warm-up steps at the start of this session.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Start a cosine decay of the learning rate at this step, down to `--lr-min` at `--steps`.
    #[arg(long)]
    decay_start: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    lr_min: f64,
    #[arg(long, default_value_t = 4)]
    seed: u64,
    #[arg(long, default_value_t = 0.998)]
    ema_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    uncond_prob: f64,
    /// Share of examples that are squares (default: every training combination equally often).
    #[arg(long)]
    square_share: Option<f64>,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Stop (after a checkpoint) once this many minutes have passed in this session.
    #[arg(long)]
    minutes: Option<f64>,
    /// Extra loss weight of the shape's outline pixels (0: plain mean).
    #[arg(long, default_value_t = 0.0)]
    outline_weight: f64,
    /// Extra loss weight near the shape's vertices (squares' and triangles' corners), on top of
    /// the outline's (0: none).
    #[arg(long, default_value_t = 0.0)]
    corner_weight: f64,
    /// Min-SNR-γ loss weighting (off when absent).
    #[arg(long)]
    min_snr_gamma: Option<f64>,
    /// `cpu`, or `cuda` / `cuda:N` (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Channels of the UNet's three levels (multiples of 8); a resumed run keeps its own.
    #[arg(long, value_delimiter = ',', default_values_t = ShapesConfig::DEFAULT.widths)]
    widths: Vec<usize>,
    /// Width of the UNet's time + text conditioning vector.
    #[arg(long, default_value_t = ShapesConfig::DEFAULT.emb)]
    emb: usize,
    /// Width of the full-resolution refinement head (a multiple of 8; 0: none); a resumed run
    /// keeps its own.
    #[arg(long, default_value_t = ShapesConfig::DEFAULT.refine)]
    refine: usize,
    /// Train only the refinement head; the UNet's weights stay as they are.
    #[arg(long)]
    only_refiner: bool,
    /// Threads generating the coming batches.
    #[arg(long, default_value_t = 1)]
    data_threads: usize,
}

/// The settings of `lora`; see [`LoraConfig`].
#[derive(clap::Args)]
struct LoraArgs {
    #[arg(long, default_value = "models/shapes")]
    model_dir: PathBuf,
    #[arg(long, default_value = "models/shapes/loras/purple.safetensors")]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// The new colour.
    #[arg(long, default_value = "purple")]
    color: String,
    /// Share of examples showing the new colour (the rest: the base model's training data).
    #[arg(long, default_value_t = 0.6)]
    share: f64,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    #[arg(long, default_value_t = 21)]
    seed: u64,
    #[arg(long, default_value_t = 0.1)]
    uncond_prob: f64,
    /// Extra loss weight of the shape's outline pixels (0: plain mean).
    #[arg(long, default_value_t = 4.0)]
    outline_weight: f64,
    /// `cpu`, or `cuda` / `cuda:N` (a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

impl TryFrom<LoraArgs> for LoraConfig {
    type Error = anyhow::Error;

    fn try_from(a: LoraArgs) -> Result<Self> {
        Ok(LoraConfig {
            model_dir: a.model_dir,
            out: a.out,
            rank: a.rank,
            color: new_color(&a.color)?,
            share: a.share,
            steps: a.steps,
            batch: a.batch,
            lr: a.lr,
            warmup: a.warmup,
            seed: a.seed,
            uncond_prob: a.uncond_prob,
            weighting: LossWeighting {
                outline: a.outline_weight,
                ..LossWeighting::default()
            },
            device: device(&a.device)?,
        })
    }
}

/// The new colour named `name`.
fn new_color(name: &str) -> Result<Color> {
    Color::NEW
        .into_iter()
        .find(|c| c.word() == name)
        .with_context(|| {
            let known: Vec<_> = Color::NEW.iter().map(|c| c.word()).collect();
            format!("--color `{name}`: accepted: {}", known.join(", "))
        })
}

/// The device named by `--device`.
fn device(name: &str) -> Result<Device> {
    let ordinal = match name.split_once(':') {
        None if name == "cpu" => return Ok(Device::Cpu),
        None if name == "cuda" => 0,
        Some(("cuda", n)) => n.parse().ok().with_context(|| {
            format!(
                "--device `{name}`: the ordinal `{n}` is not a number; accepted: cpu, cuda, cuda:N"
            )
        })?,
        _ => anyhow::bail!("--device `{name}`: accepted: cpu, cuda, cuda:N"),
    };
    Device::new_cuda(ordinal).with_context(|| format!("--device `{name}`"))
}

impl TryFrom<TrainArgs> for TrainConfig {
    type Error = anyhow::Error;

    fn try_from(a: TrainArgs) -> Result<Self> {
        if let Some(p) = a.square_share
            && !(0.0..=1.0).contains(&p)
        {
            anyhow::bail!("--square-share {p}: a share from 0 to 1 is accepted");
        }
        Ok(TrainConfig {
            device: device(&a.device)?,
            data_threads: a.data_threads,
            out_dir: a.out,
            steps: a.steps,
            batch: a.batch,
            lr: a.lr,
            warmup: a.warmup,
            decay_start: a.decay_start,
            lr_min: a.lr_min,
            seed: a.seed,
            ema_decay: a.ema_decay,
            mix: DataMix {
                uncond_prob: a.uncond_prob,
                square_share: a.square_share,
                new_color: None,
            },
            checkpoint_every: a.checkpoint_every,
            max_seconds: a.minutes.map(|m| m * 60.0),
            arch: ShapesConfig::new(
                a.widths
                    .try_into()
                    .map_err(|w| anyhow::anyhow!("--widths {w:?}: three widths are accepted"))?,
                a.emb,
            )
            .map_err(|e| anyhow::anyhow!("--widths / --emb: {e}"))?
            .with_refine(a.refine)
            .map_err(|e| anyhow::anyhow!("--refine: {e}"))?,
            reach: if a.only_refiner {
                Reach::Refiner
            } else {
                Reach::All
            },
            weighting: LossWeighting {
                outline: a.outline_weight,
                corner: a.corner_weight,
                min_snr_gamma: a.min_snr_gamma,
            },
        })
    }
}

fn main() -> Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    match Cli::parse().cmd {
        Cmd::Train(args) => {
            let s = train(&args.try_into()?)?;
            println!(
                "done: step {} after {:.0} s, loss ema {:.4}",
                s.step, s.seconds, s.loss_ema
            );
        }
        Cmd::Import {
            model_dir,
            out,
            step,
            minutes,
            refine,
        } => {
            let state = RunState {
                step,
                seconds: minutes * 60.0,
                loss_ema: 0.0,
            };
            pixelfarm_shapes::train::import(&model_dir, &out, &state, refine)?;
            println!("{} starts at step {step}", out.display());
        }
        Cmd::Export { out, model_dir } => {
            pixelfarm_shapes::export::write_model(&load_ema(&out)?, &model_dir)?;
            let snippet = pixelfarm_shapes::export::registry_snippet(&model_dir)?;
            std::fs::write(model_dir.join("registry.yaml"), snippet)?;
            println!("wrote {}", model_dir.display());
        }
        Cmd::Lora(args) => {
            let cfg: LoraConfig = args.try_into()?;
            let run = train_lora(&cfg)?;
            let out = &cfg.out;
            println!(
                "wrote {} ({} bytes, sha256 {}): {} parameters, {} steps in {:.0} s, final loss {:.4}",
                out.display(),
                std::fs::metadata(out)?.len(),
                pixelfarm_diffusion::registry::sha256_file(out)?,
                run.params,
                cfg.steps,
                run.seconds,
                run.final_loss
            );
        }
        Cmd::Eval {
            models,
            seeds,
            first_seed,
            all,
            color,
            lora,
            steps,
            guidance,
            sampler,
            sheet,
            device,
        } => {
            let mut s = RenderSettings::default();
            s.lora = lora;
            s.steps = steps.unwrap_or(s.steps);
            s.guidance = guidance.unwrap_or(s.guidance);
            if let Some(name) = sampler {
                s.sampler = Sampler::parse(&name)?;
            }
            let report = pixelfarm_shapes::eval::report(
                &models,
                &(first_seed..first_seed + seeds).collect::<Vec<_>>(),
                match (color, all) {
                    (Some(c), _) => Prompts::Color(new_color(&c)?),
                    (None, true) => Prompts::All,
                    (None, false) => Prompts::Gate,
                },
                s,
                match device {
                    EvalDevice::Cpu => DeviceChoice::Cpu,
                    EvalDevice::Cuda => DeviceChoice::Cuda,
                },
            )?;
            println!("{}", report.table);
            std::fs::write(&sheet, pixelfarm_shapes::sheet_png(&report.sheet)?)?;
            println!("contact sheet: {}", sheet.display());
        }
        Cmd::Renoise {
            models,
            shape,
            per_combination,
            strengths,
        } => {
            let shape = Shape::ALL
                .into_iter()
                .find(|s| s.word() == shape)
                .with_context(|| {
                    format!("--shape `{shape}`: accepted: circle, square, triangle")
                })?;
            if let Some(s) = strengths.iter().find(|s| !(0.0..=1.0).contains(*s)) {
                anyhow::bail!("--strengths {s}: strengths from 0 to 1 are accepted");
            }
            let engine = DiffusionEngine::new(pixelfarm_shapes::shipped_registry(&models)?)?;
            let model = ModelName::parse(pixelfarm_shapes::MODEL_NAME)?;
            let rows = pixelfarm_shapes::eval::renoise(
                &engine,
                &model,
                shape,
                per_combination,
                &strengths,
                RenderSettings::default(),
            )?;
            println!(
                "| strength | still a {} | mean fill |\n|---|---|---|",
                shape.word()
            );
            for r in rows {
                println!(
                    "| {} | {}/{} | {:.3} |",
                    r.strength, r.matched, r.total, r.mean_fill
                );
            }
        }
    }
    Ok(())
}
