//! `bench-diffusion`: images per second of pixelfarm's candle engine on a random-weight model of an
//! SD architecture, with the time per phase. `bench/diffusion.sh` runs it beside diffusers on the
//! tiny model's weights on the CPU, `bench/gpu.sh` on the full-size SD 1.5 and SDXL on a GPU.
//!
//! ```sh
//! bench-diffusion write DIR [--family tiny|tiny-xl|sd15|sd21|sdxl]   # random weights, diffusers layout
//! bench-diffusion run DIR --size 64 --steps 20 --batch 4 --images 32 [--per-job] [--device cuda]
//!     [--warmup-steps N] [--lora FILE:WEIGHT ...]
//! bench-diffusion parity DIR --seed 5 --steps 4 --guidance 5 --prompt P --negative N [--size 64]
//!     [--sampler euler] [--device cuda]
//! bench-diffusion components DIR --latent 16 --out FILE --prompt P --negative N [--t 500]
//!     [--lora FILE:WEIGHT ...] [--controlnet FILE:WEIGHT]
//! bench-diffusion write-lora DIR --out FILE [--layout kohya|peft] [--rank 4] [--seed 7]
//! bench-diffusion write-controlnet DIR --out FILE [--seed 5]
//! ```
//!
//! `write` prints the registry entry (every file's sha256) and leaves it in `DIR/registry-entry.yaml`.
//! `parity` renders one image and prints its generator's draws (the initial noise, then one per
//! step) and pixels as JSON, for `bench/xl_parity.py` (diffusers' reference modules) or
//! `bench/diffusers_bench.py --parity` (the diffusers pipeline) to redo from the same noise.
//! `components` writes each stage's inputs and outputs on its own (text encoders, one UNet call on
//! fixed latents, one VAE decode) as safetensors, on the CPU in f32, for `bench/parity.py`; with
//! `--lora`, each LoRA file merged at its weight first, as a job's LoRAs are; with `--controlnet`,
//! the UNet call adds that ControlNet's residuals at its weight for a fixed random control image
//! (`control.image`, in 0..1). `write-lora` writes a random LoRA for the model in DIR
//! (`tiny_lora`), `write-controlnet` a random ControlNet for its family (`tiny`); each prints
//! its registry entry.
//!
//! A batch runs as one fused UNet call per step, as diffusers does; `--per-job` runs it as the
//! worker's default does (`fused_batches: false`: the jobs step together, one UNet call each).
//!
//! Prints one JSON object: images/s and seconds per image of each phase (text_encode, denoise,
//! vae_decode, png_encode). Renders through the production registry, sampler and PNG encoder.

use candle_core::{DType, Device, Tensor};
use pixelfarm_core::{
    ChainResult, GuidanceScale, JobParams, LoraSpec, LoraWeight, Loras, ModelName, NegativePrompt,
    Prompt, RenderControl, Renderer, Sampler, Seed, StepCount,
};
use pixelfarm_diffusion::tiny_lora::{LoraLayout, write_random_lora};
use pixelfarm_diffusion::{
    AdapterEntry, DeviceChoice, DiffusionEngine, Family, ModelEntry, RegistryConfig, tiny,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: bench-diffusion write DIR [--family F] | run DIR [--size N] [--steps N] [--batch N] \
         [--images N] [--per-job] [--device cpu|cuda] [--warmup-steps N] [--lora FILE:WEIGHT]... | parity DIR [--seed N] \
         [--steps N] [--guidance G] [--prompt P] [--negative N] [--size N] [--sampler S] \
         [--device cpu|cuda] | components DIR [--latent N] --out FILE [--prompt P] [--negative N] [--t T] \
         [--lora FILE:WEIGHT]... [--controlnet FILE:WEIGHT] | write-lora DIR --out FILE \
         [--layout kohya|peft] [--rank N] [--seed N] | write-controlnet DIR --out FILE [--seed N]"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let family: Family = serde_yaml::from_str(&text_flag(&args, "--family", "tiny"))
                .map_err(|e| anyhow::anyhow!("--family: {e}"))?;
            let entry = tiny::write_random_model(&dir, family, 4).chained()?;
            let yaml = serde_yaml::to_string(&entry)?;
            std::fs::write(dir.join("registry-entry.yaml"), &yaml)?;
            print!("{yaml}");
            Ok(())
        }
        Some("run") => run(&args[1..]),
        Some("parity") => parity(&args[1..]),
        Some("components") => components(&args[1..]),
        Some("write-lora") => write_lora(&args[1..]),
        Some("write-controlnet") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let out = PathBuf::from(text_flag(&args, "--out", ""));
            anyhow::ensure!(!out.as_os_str().is_empty(), "--out FILE is needed");
            let family = written_entry(&dir)?.family;
            let seed = u64::from(flag(&args, "--seed", 5)?);
            let entry = tiny::write_random_controlnet(&out, family, seed).chained()?;
            print!("{}", serde_yaml::to_string(&entry)?);
            Ok(())
        }
        _ => usage(),
    }
}

fn flag(args: &[String], name: &str, default: u32) -> anyhow::Result<u32> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

fn text_flag(args: &[String], name: &str, default: &str) -> String {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => default.to_string(),
    }
}

fn device_flag(args: &[String]) -> anyhow::Result<DeviceChoice> {
    serde_yaml::from_str(&text_flag(args, "--device", "cpu"))
        .map_err(|e| anyhow::anyhow!("--device: {e} (accepted: cpu, cuda)"))
}

/// The registry entry `write` left in `dir`.
fn written_entry(dir: &std::path::Path) -> anyhow::Result<ModelEntry> {
    Ok(serde_yaml::from_str(&std::fs::read_to_string(
        dir.join("registry-entry.yaml"),
    )?)?)
}

/// The engine over the model `write` left in `dir`, served as `bench`.
fn engine_for(
    dir: &std::path::Path,
    batch: usize,
    fused: bool,
    device: DeviceChoice,
) -> anyhow::Result<(DiffusionEngine, ModelName)> {
    engine_with_loras(dir, batch, fused, device, BTreeMap::new())
}

/// [`engine_for`], with `loras` in the registry.
fn engine_with_loras(
    dir: &std::path::Path,
    batch: usize,
    fused: bool,
    device: DeviceChoice,
    loras: BTreeMap<ModelName, AdapterEntry>,
) -> anyhow::Result<(DiffusionEngine, ModelName)> {
    let entry = written_entry(dir)?;
    let model = ModelName::parse("bench")?;
    let engine = DiffusionEngine::new(RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: batch,
        fused_batches: fused,
        device,
        models: BTreeMap::from([(model.clone(), entry)]),
        loras,
        max_lora_sets: pixelfarm_diffusion::registry::DEFAULT_MAX_LORA_SETS,
        controlnets: Default::default(),
        max_controlnets: pixelfarm_diffusion::registry::DEFAULT_MAX_CONTROLNETS,
    })
    .chained()?;
    Ok((engine, model))
}

fn write_lora(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let out = PathBuf::from(text_flag(args, "--out", ""));
    anyhow::ensure!(!out.as_os_str().is_empty(), "--out FILE is needed");
    let layout = match text_flag(args, "--layout", "kohya").as_str() {
        "kohya" => LoraLayout::Kohya,
        "peft" => LoraLayout::Peft,
        other => anyhow::bail!("--layout is `{other}`; accepted: kohya, peft"),
    };
    let family = written_entry(&dir)?.family;
    let rank = flag(args, "--rank", 4)? as usize;
    let seed = u64::from(flag(args, "--seed", 7)?);
    let entry = write_random_lora(&dir, family, &out, layout, rank, seed).chained()?;
    print!("{}", serde_yaml::to_string(&entry)?);
    Ok(())
}

/// Every `--lora FILE:WEIGHT` of `args`, registered as `lora0`, `lora1`, … for the family of the
/// model in `dir`, and the job's LoRA list naming them.
fn lora_flags(
    args: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<(BTreeMap<ModelName, AdapterEntry>, Loras)> {
    let family = written_entry(dir)?.family;
    let mut registry = BTreeMap::new();
    let mut specs = Vec::new();
    for (i, pair) in args.windows(2).filter(|w| w[0] == "--lora").enumerate() {
        let (file, weight) = pair[1]
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("--lora is `{}`; accepted: FILE:WEIGHT", pair[1]))?;
        let path = std::path::absolute(file)?;
        let name = ModelName::parse(format!("lora{i}"))?;
        registry.insert(
            name.clone(),
            AdapterEntry {
                family,
                sha256: pixelfarm_diffusion::registry::sha256_file(&path).chained()?,
                source: pixelfarm_diffusion::Source::File(path),
            },
        );
        specs.push(LoraSpec {
            name,
            weight: LoraWeight::parse(weight.parse()?)?,
        });
    }
    Ok((registry, Loras::new(specs)?))
}

fn parity(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let seed = flag(args, "--seed", 5)?;
    let size = flag(args, "--size", 64)?;
    let (engine, model) = engine_for(&dir, 1, false, device_flag(args)?)?;
    let job = JobParams {
        prompt: Prompt::parse(text_flag(args, "--prompt", "a photo of a red house"))?,
        negative_prompt: NegativePrompt::parse(text_flag(args, "--negative", ""))?,
        width: size,
        height: size,
        steps: StepCount::parse(flag(args, "--steps", 4)?)?,
        guidance: GuidanceScale::parse(text_flag(args, "--guidance", "5").parse::<f64>()?)?,
        sampler: serde_yaml::from_str(&text_flag(args, "--sampler", "euler"))
            .map_err(|e| anyhow::anyhow!("--sampler: {e}"))?,
        seed: Seed::parse(u64::from(seed))?,
        init: None,
        hires: None,
        loras: Default::default(),
        control: Default::default(),
        output: Default::default(),
    };
    let img = engine.render(&model, &job).chained()?;
    // The job generator's draws: the initial noise (4 latent channels at 1/8 of the size), then
    // one draw of the same size per step, which the stochastic samplers take in order.
    let latent = (size / 8) as usize;
    let noise = pixelfarm_diffusion::JobRng::new(u64::from(seed))
        .normals(4 * latent * latent * (job.steps.get() as usize + 1));
    println!(
        "{}",
        serde_json::json!({"noise": noise, "rgb": img.image.rgb, "width": size, "height": size})
    );
    Ok(())
}

fn components(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let out = PathBuf::from(text_flag(args, "--out", ""));
    anyhow::ensure!(!out.as_os_str().is_empty(), "--out FILE is needed");
    let latent = flag(args, "--latent", 16)? as usize;
    let t: f64 = text_flag(args, "--t", "500").parse()?;
    let (registry, loras) = lora_flags(args, &dir)?;
    let (engine, model) = engine_with_loras(&dir, 1, false, DeviceChoice::Cpu, registry)?;
    let m = engine.loaded_model_with(&model, &loras).chained()?;
    let job = JobParams {
        prompt: Prompt::parse(text_flag(args, "--prompt", "a photo of a red house"))?,
        negative_prompt: NegativePrompt::parse(text_flag(args, "--negative", "blurry"))?,
        width: latent as u32 * 8,
        height: latent as u32 * 8,
        steps: StepCount::parse(1)?,
        guidance: GuidanceScale::parse(7.5)?,
        sampler: Sampler::Euler,
        seed: Seed::parse(0)?,
        init: None,
        hires: None,
        loras: Default::default(),
        control: Default::default(),
        output: Default::default(),
    };
    let (ctx, text_time) = m.text_conditioning(&job).chained()?;
    let rows = ctx.dim(0)?;
    let normals = |seed: u64, shape: (usize, usize, usize, usize)| {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        Tensor::from_vec(
            pixelfarm_diffusion::JobRng::new(seed).normals(n),
            shape,
            &Device::Cpu,
        )
    };
    let x = normals(11, (rows, 4, latent, latent))?;
    let control = match text_flag(args, "--controlnet", "").rsplit_once(':') {
        Some((file, weight)) => {
            let family = written_entry(&dir)?.family;
            let net = m
                .load_controlnet("controlnet", family, &std::fs::read(file)?)
                .chained()?;
            let side = latent * 8;
            let image = pixelfarm_diffusion::JobRng::new(13)
                .normals(rows * 3 * side * side)
                .iter()
                .map(|v| (v * 0.25 + 0.5).clamp(0.0, 1.0))
                .collect();
            let image = Tensor::from_vec(image, (rows, 3, side, side), &Device::Cpu)?;
            Some((net, image, weight.parse::<f64>()?))
        }
        None => None,
    };
    let unet = m
        .denoiser_output(&x, t, &job, control.as_ref().map(|(n, i, w)| (n, i, *w)))
        .chained()?;
    let z = normals(12, (1, 4, latent, latent))?;
    let pixels = m.decode_to_pixels(&z).chained()?;
    let mut tensors = std::collections::HashMap::from([
        ("text.ctx".to_string(), ctx.to_dtype(DType::F32)?),
        ("unet.x".to_string(), x),
        (
            "unet.t".to_string(),
            Tensor::new(&[t as f32], &Device::Cpu)?,
        ),
        ("unet.out".to_string(), unet),
        ("vae.z".to_string(), z),
        ("vae.out".to_string(), pixels),
    ]);
    if let Some((_, image, weight)) = control {
        tensors.insert("control.image".into(), image);
        tensors.insert(
            "control.weight".into(),
            Tensor::new(&[weight as f32], &Device::Cpu)?,
        );
    }
    if let Some((pooled, time_ids)) = text_time {
        tensors.insert("text.pooled".into(), pooled.to_dtype(DType::F32)?);
        tensors.insert("text.time_ids".into(), time_ids);
    }
    candle_core::safetensors::save(&tensors, &out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let size = flag(args, "--size", 64)?;
    let steps = flag(args, "--steps", 20)?;
    let batch = flag(args, "--batch", 1)? as usize;
    let images = flag(args, "--images", 16)? as usize;
    let warmup_steps = flag(args, "--warmup-steps", steps)?;
    let fused = batch > 1 && !args.iter().any(|a| a == "--per-job");
    let device = device_flag(args)?;
    let (registry, loras) = lora_flags(args, &dir)?;
    let (engine, model) = engine_with_loras(&dir, batch, fused, device, registry)?;
    let family = engine.config().entry(&model)?.family;
    engine.preload(&model).chained()?;
    // The LoRA set's merge, once, as the first job with it pays it (not in the timed loop).
    let t = Instant::now();
    engine.loaded_model_with(&model, &loras).chained()?;
    let merge_secs = t.elapsed().as_secs_f64();
    let job_of = |i: usize, steps: u32| -> anyhow::Result<JobParams> {
        Ok(JobParams {
            prompt: Prompt::parse(format!("a photo of a red fox number {i}"))?,
            negative_prompt: NegativePrompt::default(),
            width: size,
            height: size,
            steps: StepCount::parse(steps)?,
            guidance: GuidanceScale::parse(7.5)?,
            sampler: Sampler::Euler,
            seed: Seed::parse(i as u64)?,
            init: None,
            hires: None,
            loras: loras.clone(),
            control: Default::default(),
            output: Default::default(),
        })
    };
    let job = |i: usize| job_of(i, steps);
    // Warm-up: one batch of the same shapes, not counted (on a GPU: kernel compilation, cuBLAS's
    // choices, the allocator's pool).
    let warm: Vec<JobParams> = (0..batch)
        .map(|i| job_of(i, warmup_steps))
        .collect::<anyhow::Result<_>>()?;
    for r in engine.render_batch(&model, &warm, &controls(warm.len())) {
        r.chained()?;
    }
    let meta = pixelfarm_image::PngMetadata {
        parameters: String::new(),
        provenance_json: String::new(),
    };
    let mut phases: BTreeMap<String, f64> = BTreeMap::new();
    let start = Instant::now();
    for first in (0..images).step_by(batch) {
        let jobs: Vec<JobParams> = (first..(first + batch).min(images))
            .map(job)
            .collect::<anyhow::Result<_>>()?;
        for r in engine.render_batch(&model, &jobs, &controls(jobs.len())) {
            let img = r.chained()?;
            for (k, v) in &img.phases {
                if k != "model_load" {
                    *phases.entry(k.clone()).or_default() += v;
                }
            }
            let t = Instant::now();
            pixelfarm_image::encode_png(&img.image, &meta).chained()?;
            *phases.entry("png_encode".into()).or_default() += t.elapsed().as_secs_f64();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let per_image: BTreeMap<String, f64> = phases
        .into_iter()
        .map(|(k, v)| (k, v / images as f64))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "engine": "pixelfarm",
            "family": family,
            "device": device,
            "size": size, "steps": steps, "batch": batch, "images": images, "fused": fused,
            "seconds": secs,
            "images_per_s": images as f64 / secs,
            "seconds_per_image": per_image,
            "loras": loras.iter().count(),
            "lora_merge_seconds": merge_secs,
        })
    );
    Ok(())
}

fn controls(n: usize) -> Vec<RenderControl> {
    (0..n).map(|_| RenderControl::new()).collect()
}
