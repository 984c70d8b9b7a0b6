//! Helpers shared by the engine's integration tests.

use pixelfarm_core::ModelName;
use pixelfarm_diffusion::{DiffusionEngine, LoraEntry, ModelEntry, RegistryConfig};
use std::collections::BTreeMap;

/// An engine on the CPU serving `entry` alone as `model` with `loras` (one model loaded,
/// micro-batches of up to 4, unfused, two LoRA sets kept merged).
pub fn engine_serving(
    model: ModelName,
    entry: ModelEntry,
    loras: BTreeMap<ModelName, LoraEntry>,
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
    })
    .unwrap()
}
