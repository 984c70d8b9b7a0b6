//! The checks over every variant of a template, made without keeping its jobs: prompts, LoRA
//! sets and keys.

use std::collections::HashSet;

use super::errors::cross_error;
use super::jobs::{JobSpec, Template};
use crate::Result;
use crate::params::Prompt;

/// Check every variant of `t` without keeping its jobs: its prompt is one [`Prompt::parse`]
/// accepts, its LoRA set (when `defaults.loras` uses variables) names each LoRA once, and no two
/// jobs of the batch share a key. A template's keys (`stem@WxH#i`) are
/// distinct when its sizes are and each variable's values are, as long as the stems parse back
/// one way: a value holding `,name=` of a later variable could make two stems equal, and only
/// then are the stems themselves remembered. An explicit job's key is compared with the
/// variants it could collide with, found from its `@WxH#i` suffix.
pub(super) fn check_variants(text: &str, t: &Template, explicit: &[JobSpec]) -> Result<()> {
    let twice = |key: String| {
        cross_error(
            text,
            "vars",
            format!("produce the job `{key}` twice; values must be unique"),
        )
    };
    for (i, size) in t.sizes.iter().enumerate() {
        if t.sizes[..i].contains(size) {
            let (_, stem) = t.variant(&vec![0; t.vars.len()]);
            return Err(twice(format!("{stem}@{}x{}#0", size.0, size.1)));
        }
    }
    for (i, (_, values)) in t.vars.iter().enumerate() {
        let mut seen = HashSet::new();
        if let Some(dup) = values.iter().position(|v| !seen.insert(v)) {
            let mut choice = vec![0; t.vars.len()];
            choice[i] = dup;
            let (_, stem) = t.variant(&choice);
            let (w, h) = t.sizes[0];
            return Err(twice(format!("{stem}@{w}x{h}#0")));
        }
    }
    let ambiguous = t.vars.iter().enumerate().any(|(i, (_, values))| {
        t.vars[i + 1..].iter().any(|(later, _)| {
            let marker = format!(",{later}=");
            values.iter().any(|v| v.contains(&marker))
        })
    });
    let mut stems = HashSet::new();
    // Explicit keys that have the form of one of this template's keys, by stem.
    let mut explicit_stems: std::collections::HashMap<&str, &str> = Default::default();
    for j in explicit {
        if let Some(stem) = template_stem(&j.key, &t.sizes, t.seeds_len()) {
            explicit_stems.insert(stem, &j.key);
        }
    }
    let per_variant_loras = t.shared.loras.fixed().is_none();
    for choice in t.choices() {
        let (prompt, stem) = t.variant(&choice);
        Prompt::parse(prompt)
            .map_err(|e| cross_error(text, "prompt", format!("expands to a prompt that {e}")))?;
        if per_variant_loras {
            t.shared.loras.for_variant(&choice).map_err(|e| {
                cross_error(
                    text,
                    "defaults.loras",
                    format!("for the variant `{stem}` {e}"),
                )
            })?;
        }
        if let Some(key) = explicit_stems.get(stem.as_str()) {
            let i = explicit.iter().position(|j| &j.key == key).unwrap_or(0);
            return Err(cross_error(
                text,
                &format!("jobs[{i}].key"),
                format!("`{key}` is used by another job; give each job a distinct `key`"),
            ));
        }
        if ambiguous && !stems.insert(stem.clone()) {
            let (w, h) = t.sizes[0];
            return Err(twice(format!("{stem}@{w}x{h}#0")));
        }
    }
    Ok(())
}

/// The stem of `key` when it ends like a key of the template with these sizes and seeds count
/// (`@WxH#i`, a listed size, `i` below the count).
fn template_stem<'k>(key: &'k str, sizes: &[(u32, u32)], seeds: usize) -> Option<&'k str> {
    let (rest, index) = key.rsplit_once('#')?;
    if !index.bytes().all(|b| b.is_ascii_digit()) || index.parse::<usize>().ok()? >= seeds {
        return None;
    }
    let (stem, size) = rest.rsplit_once('@')?;
    let (w, h) = size.split_once('x')?;
    sizes
        .contains(&(w.parse().ok()?, h.parse().ok()?))
        .then_some(stem)
}
