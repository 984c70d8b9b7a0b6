//! The manifest as written: what serde reads, before defaults and templates are applied.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

use crate::params::*;

/// A side length in a manifest: a multiple of 8 from 8 to 4096.
#[derive(Debug, Clone, Copy)]
pub(super) struct Side(pub(super) u32);

impl<'de> Deserialize<'de> for Side {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        ImageSize::new(v, v).map(|_| Side(v)).map_err(|_| {
            serde::de::Error::custom(format!(
                "is {v}; accepted: a multiple of 8 between 8 and {}",
                ImageSize::MAX_SIDE
            ))
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) width: Option<Side>,
    pub(super) height: Option<Side>,
    pub(super) steps: Option<StepCount>,
    pub(super) guidance: Option<GuidanceScale>,
    pub(super) sampler: Option<Sampler>,
    pub(super) negative_prompt: Option<NegativePrompt>,
    pub(super) init: Option<InitSpec>,
    pub(super) hires: Option<HiresSpec>,
    pub(super) loras: Option<Vec<super::loras::RawLora>>,
    pub(super) control: Option<Controls>,
    pub(super) output: Option<OutputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawSeeds {
    Explicit(Vec<Seed>),
    Derived { base: Seed, count: u32 },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    pub(super) key: Option<String>,
    pub(super) prompt: Prompt,
    pub(super) negative_prompt: Option<NegativePrompt>,
    pub(super) width: Option<Side>,
    pub(super) height: Option<Side>,
    pub(super) steps: Option<StepCount>,
    pub(super) guidance: Option<GuidanceScale>,
    pub(super) sampler: Option<Sampler>,
    pub(super) seed: Option<Seed>,
    pub(super) init: Option<InitSpec>,
    pub(super) hires: Option<HiresSpec>,
    pub(super) loras: Option<Loras>,
    pub(super) control: Option<Controls>,
    pub(super) output: Option<OutputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    pub(super) name: String,
    pub(super) model: ModelName,
    #[serde(default)]
    pub(super) priority: Priority,
    pub(super) idempotency_key: Option<String>,
    #[serde(default)]
    pub(super) tags: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    pub(super) prompt: Option<String>,
    #[serde(default)]
    pub(super) vars: BTreeMap<String, Vec<String>>,
    pub(super) sizes: Option<Vec<[Side; 2]>>,
    pub(super) seeds: Option<RawSeeds>,
    #[serde(default)]
    pub(super) jobs: Vec<RawJob>,
    pub(super) webhook: Option<crate::webhooks::WebhookSpec>,
}
