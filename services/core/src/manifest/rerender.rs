//! A one-job manifest that renders a job again, for a user to change before submitting.

use serde::Serialize;
use std::collections::BTreeMap;

use super::budget::MAX_NAME_BYTES;
use crate::params::{JobParams, ModelName};

/// Suffix of the re-render's batch name.
const SUFFIX: &str = " (re-render)";

#[derive(Serialize)]
struct Rerender<'a> {
    name: String,
    model: &'a ModelName,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
    jobs: [&'a JobParams; 1],
}

/// The YAML manifest of one explicit job with exactly `params` (seed, size, sampler, LoRAs,
/// input images with their pinned sha256, output settings), named after `batch` with ` (re-render)`
/// and carrying its `tags`: submitted unchanged, it renders the same image again.
pub fn rerender_manifest(
    batch: &str,
    model: &ModelName,
    tags: &BTreeMap<String, String>,
    params: &JobParams,
) -> String {
    let mut name = batch.to_string();
    while name.len() + SUFFIX.len() > MAX_NAME_BYTES {
        name.pop();
    }
    let manifest = Rerender {
        name: name + SUFFIX,
        model,
        tags,
        jobs: [params],
    };
    serde_yaml::to_string(&manifest).expect("a manifest serializes")
}
