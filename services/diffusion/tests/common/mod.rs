//! Helpers shared by the engine's integration tests.

use pixelfarm_core::ModelName;
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
