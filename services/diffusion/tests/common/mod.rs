//! Helpers shared by the engine's integration tests.

use pixelfarm_core::ModelName;
use pixelfarm_diffusion::{DiffusionEngine, ModelEntry, RegistryConfig};
use std::collections::BTreeMap;

/// An engine on the CPU serving `entry` alone as `model` (one model loaded, micro-batches of up
/// to 4, unfused).
pub fn engine_serving(model: ModelName, entry: ModelEntry) -> DiffusionEngine {
    DiffusionEngine::new(RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: 4,
        fused_batches: false,
        device: Default::default(),
        models: BTreeMap::from([(model, entry)]),
        loras: Default::default(),
        max_lora_sets: pixelfarm_diffusion::registry::DEFAULT_MAX_LORA_SETS,
    })
    .unwrap()
}
