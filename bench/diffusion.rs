//! `bench-diffusion`: images per second of pixelfarm's candle engine on a tiny random-weight model of
//! the SD architecture, with the time per phase. `bench/diffusion.sh` runs it beside diffusers on
//! the same weights and prints the ratio.
//!
//! ```sh
//! bench-diffusion write DIR [--xl]                           # the tiny model (diffusers layout)
//! bench-diffusion run DIR --size 64 --steps 20 --batch 4 --images 32 [--per-job]
//! bench-diffusion parity DIR --seed 5 --steps 4 --guidance 5 --prompt P --negative N
//! ```
//!
//! `parity` renders one 64x64 Euler image and prints its initial noise and pixels as JSON, for
//! `bench/xl_parity.py` to redo with diffusers' reference modules.
//!
//! A batch runs as one fused UNet call per step, as diffusers does; `--per-job` runs it as the
//! worker's default does (`fused_batches: false`: the jobs step together, one UNet call each).
//!
//! Prints one JSON object: images/s and seconds per image of each phase (text_encode, denoise,
//! vae_decode, png_encode). Renders through the production registry, sampler and PNG encoder.

use pixelfarm_core::{
    GuidanceScale, JobParams, ModelName, NegativePrompt, Prompt, RenderControl, Renderer, Sampler,
    Seed, StepCount,
};
use pixelfarm_diffusion::{DiffusionEngine, RegistryConfig, tiny};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: bench-diffusion write DIR [--xl] | run DIR [--size N] [--steps N] [--batch N] \
         [--images N] [--per-job] | parity DIR [--seed N] [--steps N] [--guidance G] [--prompt P] [--negative N]"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_diffusion::threads::settle();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let entry = if args.iter().any(|a| a == "--xl") {
                tiny::write_tiny_xl_model(&dir)
            } else {
                tiny::write_tiny_model(&dir, 4)
            }
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
            std::fs::write(
                dir.join("registry-entry.yaml"),
                serde_yaml::to_string(&entry)?,
            )?;
            println!("wrote {}", dir.display());
            Ok(())
        }
        Some("run") => run(&args[1..]),
        Some("parity") => parity(&args[1..]),
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

/// The engine over the model `write` left in `dir`, served as `tiny`.
fn engine_for(
    dir: &std::path::Path,
    batch: usize,
    fused: bool,
) -> anyhow::Result<(DiffusionEngine, ModelName)> {
    let entry = serde_yaml::from_str(&std::fs::read_to_string(dir.join("registry-entry.yaml"))?)?;
    let model = ModelName::parse("tiny")?;
    let engine = DiffusionEngine::new(RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: batch,
        fused_batches: fused,
        device: Default::default(),
        models: BTreeMap::from([(model.clone(), entry)]),
    })
    .map_err(|e| anyhow::anyhow!(e.chain()))?;
    Ok((engine, model))
}

fn parity(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let seed = flag(args, "--seed", 5)?;
    let (engine, model) = engine_for(&dir, 1, false)?;
    let job = JobParams {
        prompt: Prompt::parse(text_flag(args, "--prompt", "a photo of a red house"))?,
        negative_prompt: NegativePrompt::parse(text_flag(args, "--negative", ""))?,
        width: 64,
        height: 64,
        steps: StepCount::parse(flag(args, "--steps", 4)?)?,
        guidance: GuidanceScale::parse(text_flag(args, "--guidance", "5").parse::<f64>()?)?,
        sampler: Sampler::Euler,
        seed: Seed::parse(u64::from(seed))?,
        init: None,
        output: Default::default(),
    };
    let img = engine
        .render(&model, &job)
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    // The engine's initial noise: the job's generator, 4 latent channels at 1/8 of the size.
    let noise = pixelfarm_diffusion::JobRng::new(u64::from(seed)).normals(4 * 8 * 8);
    println!(
        "{}",
        serde_json::json!({"noise": noise, "rgb": img.rgb, "width": 64, "height": 64})
    );
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let dir = PathBuf::from(args.first().unwrap_or_else(|| usage()));
    let size = flag(args, "--size", 64)?;
    let steps = flag(args, "--steps", 20)?;
    let batch = flag(args, "--batch", 1)? as usize;
    let images = flag(args, "--images", 16)? as usize;
    let fused = batch > 1 && !args.iter().any(|a| a == "--per-job");
    let (engine, model) = engine_for(&dir, batch, fused)?;
    engine
        .preload(&model)
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let job = |i: usize| -> anyhow::Result<JobParams> {
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
            output: Default::default(),
        })
    };
    // Warm-up: one batch, not counted.
    let warm: Vec<JobParams> = (0..batch).map(job).collect::<anyhow::Result<_>>()?;
    for r in engine.render_batch(&model, &warm, &controls(warm.len())) {
        r.map_err(|e| anyhow::anyhow!(e.chain()))?;
    }
    let meta = pixelfarm_render::PngMetadata {
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
            let img = r.map_err(|e| anyhow::anyhow!(e.chain()))?;
            for (k, v) in &img.phases {
                if k != "model_load" {
                    *phases.entry(k.clone()).or_default() += v;
                }
            }
            let t = Instant::now();
            pixelfarm_render::encode_png(&img, &meta).map_err(|e| anyhow::anyhow!(e.chain()))?;
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
            "size": size, "steps": steps, "batch": batch, "images": images, "fused": fused,
            "seconds": secs,
            "images_per_s": images as f64 / secs,
            "seconds_per_image": per_image,
        })
    );
    Ok(())
}

fn controls(n: usize) -> Vec<RenderControl> {
    (0..n).map(|_| RenderControl::new()).collect()
}
