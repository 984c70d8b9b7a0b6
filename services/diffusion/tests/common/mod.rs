//! Helpers shared by the engine's integration tests.

use pixelfarm_core::{
    GuidanceScale, JobParams, ModelName, NegativePrompt, Prompt, Sampler, Seed, StepCount,
};
use pixelfarm_diffusion::{AdapterEntry, DiffusionEngine, ModelEntry, RegistryConfig};
use std::collections::BTreeMap;

/// An engine on the CPU serving `entry` alone as `model` with `loras` (one model loaded,
/// micro-batches of up to 4, unfused, two LoRA sets kept merged).
#[allow(dead_code)] // Not every test binary that includes this module calls each helper.
pub fn engine_serving(
    model: ModelName,
    entry: ModelEntry,
    loras: BTreeMap<ModelName, AdapterEntry>,
) -> DiffusionEngine {
    engine_with_adapters(model, entry, loras, BTreeMap::new())
}

/// A tiny-model job: `prompt` at 64x48, 4 Euler steps at guidance 7.5, negative `blurry`,
/// seed `seed`, nothing else.
pub fn job_at_64x48(prompt: &str, seed: u64) -> JobParams {
    JobParams {
        prompt: Prompt::parse(prompt).unwrap(),
        negative_prompt: NegativePrompt::parse("blurry").unwrap(),
        width: 64,
        height: 48,
        steps: StepCount::parse(4).unwrap(),
        guidance: GuidanceScale::parse(7.5).unwrap(),
        sampler: Sampler::Euler,
        seed: Seed::parse(seed).unwrap(),
        init: None,
        hires: None,
        loras: Default::default(),
        control: Default::default(),
        output: Default::default(),
    }
}

/// [`engine_serving`] with `controlnets` too (two kept loaded).
pub fn engine_with_adapters(
    model: ModelName,
    entry: ModelEntry,
    loras: BTreeMap<ModelName, AdapterEntry>,
    controlnets: BTreeMap<ModelName, AdapterEntry>,
) -> DiffusionEngine {
    DiffusionEngine::new(RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: 4,
        fused_batches: false,
        device: Default::default(),
        models: BTreeMap::from([(model, entry)]),
        loras,
        max_lora_sets: 2,
        controlnets,
        max_controlnets: 2,
    })
    .unwrap()
}
