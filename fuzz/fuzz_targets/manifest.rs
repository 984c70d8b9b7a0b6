//! The manifest parser and expander on arbitrary text: it never panics, and every manifest it
//! accepts is within the documented budgets (docs/security.md, "Budgets").

#![no_main]

use libfuzzer_sys::fuzz_target;
use pixelfarm_core::manifest::{
    MAX_EXPANDED_BYTES, MAX_JOBS_PER_BATCH, MAX_MANIFEST_BYTES, MAX_TAG_KEY_BYTES,
    MAX_TAG_VALUE_BYTES, MAX_TAGS,
};
use pixelfarm_core::{ImageSize, Prompt, parse_manifest, text};
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse_manifest(manifest) else {
        return;
    };
    let checked = text::check_batch(manifest, &spec);

    assert!(manifest.len() <= MAX_MANIFEST_BYTES);
    assert!(
        !spec.name.trim().is_empty() && spec.name.len() <= 200,
        "name {:?}",
        spec.name
    );
    assert!(!spec.jobs.is_empty(), "a batch without jobs was accepted");
    assert!(spec.jobs.len() as u64 <= MAX_JOBS_PER_BATCH);
    assert!(spec.tags.len() <= MAX_TAGS);
    for (k, v) in &spec.tags {
        assert!(
            !k.is_empty() && k.len() <= MAX_TAG_KEY_BYTES,
            "tag key {k:?}"
        );
        assert!(v.len() <= MAX_TAG_VALUE_BYTES, "tag value {v:?}");
    }
    let mut keys = HashSet::new();
    let mut expanded = 0u64;
    for job in spec.jobs.iter() {
        let prompt = job.params.prompt.as_str();
        assert!(
            prompt.chars().count() <= Prompt::MAX_CHARS,
            "prompt {prompt:?}"
        );
        assert!(ImageSize::new(job.params.width, job.params.height).is_ok());
        expanded +=
            (prompt.len() + job.params.negative_prompt.as_str().len() + job.key.len()) as u64;
        assert!(
            keys.insert(job.key.clone()),
            "duplicate job key {:?}",
            job.key
        );
    }
    assert!(expanded <= MAX_EXPANDED_BYTES);
    if checked.is_ok() {
        assert!(
            !manifest.contains('\0'),
            "a manifest holding NUL passed the text policy"
        );
    }
});
