//! SDXL's pipeline on the tiny SDXL-architecture model (`tiny-xl`), loaded through the registry
//! as production loads SDXL: two text encoders and tokenizers, the UNet's micro-conditioning.
//! Parity with diffusers' `StableDiffusionXLPipeline` on the same weights is `bench/xl_parity.py`.

use pixelfarm_core::{
    ErrorKind, GuidanceScale, JobParams, ModelName, NegativePrompt, RenderControl, Renderer,
    StepCount,
};
use pixelfarm_diffusion::registry::layout;
use pixelfarm_diffusion::{DiffusionEngine, ModelEntry, RegistryConfig, tiny};
use std::collections::BTreeMap;

mod common;

fn model() -> ModelName {
    ModelName::parse("xl").unwrap()
}

fn engine_with(entry: ModelEntry) -> DiffusionEngine {
    common::engine_serving(model(), entry, Default::default())
}

fn job(prompt: &str, negative: &str, seed: u64, guidance: f64) -> JobParams {
    JobParams {
        negative_prompt: NegativePrompt::parse(negative).unwrap(),
        height: 64,
        steps: StepCount::parse(3).unwrap(),
        guidance: GuidanceScale::parse(guidance).unwrap(),
        ..common::job_at_64x48(prompt, seed)
    }
}

/// Rewrite one tensor file of the model in `dir` with `f` applied to the tensor `name`, and
/// return the entry with the file's new sha256.
fn perturb(dir: &std::path::Path, mut entry: ModelEntry, rel: &str, name: &str) -> ModelEntry {
    let path = dir.join(rel);
    let mut ts = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let t = ts
        .get(name)
        .unwrap_or_else(|| panic!("{rel} has no {name}"));
    ts.insert(name.to_string(), (t * 3.0).unwrap());
    candle_core::safetensors::save(&ts, &path).unwrap();
    entry.files.insert(
        rel.to_string(),
        pixelfarm_core::sha256_hex(&std::fs::read(&path).unwrap()),
    );
    entry
}

#[test]
fn tiny_xl_renders_deterministically_and_the_same_alone_or_batched() {
    let dir = tempfile::tempdir().unwrap();
    let entry = tiny::write_tiny_xl_model(dir.path()).unwrap();
    assert!(entry.files.contains_key(layout::TEXT_ENCODER_2));
    assert!(entry.files.contains_key(layout::TOKENIZER_2));
    let e = engine_with(entry);
    let jobs = vec![
        job("a photo of a cat", "", 1, 5.0),
        job("a red house in the snow", "blurry", 2, 5.0),
        job("a photo of a cat", "", 3, 5.0),
    ];
    let controls: Vec<RenderControl> = jobs.iter().map(|_| RenderControl::new()).collect();
    let batch = e.render_batch(&model(), &jobs, &controls);
    for (j, b) in jobs.iter().zip(batch) {
        let alone = e.render(&model(), j).unwrap();
        assert_eq!((alone.image.width, alone.image.height), (64, 64));
        assert!(alone.image.rgb == b.unwrap().image.rgb, "seed {}", j.seed);
    }
    let a = e.render(&model(), &jobs[0]).unwrap().image.rgb;
    assert!(a == e.render(&model(), &jobs[0]).unwrap().image.rgb);
    assert!(
        a != e.render(&model(), &jobs[2]).unwrap().image.rgb,
        "seeds differ"
    );
    // Turbo-style: one step, no guidance.
    let mut turbo = job("a photo of a cat", "", 1, 0.0);
    turbo.steps = StepCount::parse(1).unwrap();
    assert_eq!(
        e.render(&model(), &turbo).unwrap().image.rgb.len(),
        64 * 64 * 3
    );
}

#[test]
fn the_second_encoder_its_projection_and_the_micro_conditioning_weights_are_all_used() {
    let j = job("a photo of a cat", "blurry", 7, 5.0);
    let dir = tempfile::tempdir().unwrap();
    let entry = tiny::write_tiny_xl_model(dir.path()).unwrap();
    let base = engine_with(entry.clone())
        .render(&model(), &j)
        .unwrap()
        .image
        .rgb;
    for (rel, name) in [
        (layout::TEXT_ENCODER_2, "text_projection.weight"),
        (
            layout::TEXT_ENCODER_2,
            "text_model.encoder.layers.0.mlp.fc1.weight",
        ),
        (
            layout::TEXT_ENCODER,
            "text_model.encoder.layers.0.mlp.fc1.weight",
        ),
        (layout::UNET, "add_embedding.linear_1.weight"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let copy = tiny::write_tiny_xl_model(d.path()).unwrap();
        assert_eq!(copy.files, entry.files, "the writer is deterministic");
        let changed = perturb(d.path(), copy, rel, name);
        let img = engine_with(changed).render(&model(), &j).unwrap().image.rgb;
        assert!(img != base, "{rel}: {name} changes nothing");
    }
}

#[test]
fn a_missing_second_text_encoder_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let entry = tiny::write_tiny_xl_model(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(layout::TEXT_ENCODER_2)).unwrap();
    let e = engine_with(entry.clone())
        .render(&model(), &job("a cat", "", 1, 5.0))
        .unwrap_err();
    assert!(e.chain().contains(layout::TEXT_ENCODER_2), "{}", e.chain());
    let mut listed = entry;
    listed.files.remove(layout::TOKENIZER_2);
    let cfg = RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: 1,
        fused_batches: false,
        device: Default::default(),
        models: BTreeMap::from([(model(), listed)]),
        loras: Default::default(),
        max_lora_sets: pixelfarm_diffusion::registry::DEFAULT_MAX_LORA_SETS,
        controlnets: Default::default(),
        max_controlnets: pixelfarm_diffusion::registry::DEFAULT_MAX_CONTROLNETS,
    };
    let e = cfg.validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains(layout::TOKENIZER_2), "{e}");
}
