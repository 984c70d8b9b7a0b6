//! Batch manifests: parsing (YAML or JSON) with errors that name the field and line, and expansion
//! into jobs (template × vars × sizes × seeds, plus explicit jobs).
//!
//! The parts, each a module: `budget` (what a manifest may cost, and the scan of YAML text that
//! enforces it before a parser runs), `raw` (the manifest as written), `expand` (defaults,
//! templates and seeds into jobs), `loras` (`defaults.loras`, whose names and weights may be
//! variables), `variants` (the checks over every variant of a template), `vars` (variables'
//! names), `spec` (the result, [`BatchSpec`]), `errors` (errors that name the field and its
//! line) and `rerender` (a job written back as a manifest).

mod budget;
#[cfg(test)]
mod control_tests;
mod errors;
mod expand;
mod jobs;
mod loras;
#[cfg(test)]
mod loras_tests;
#[cfg(test)]
mod output_tests;
mod raw;
mod rerender;
mod spec;
#[cfg(test)]
mod tests;
mod variants;
mod vars;

pub use budget::{
    MAX_EXPANDED_BYTES, MAX_JOBS_PER_BATCH, MAX_MANIFEST_BYTES, MAX_NAME_BYTES, MAX_NESTING_DEPTH,
    MAX_OPEN_BRACKETS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES, MAX_TAGS,
};
pub use errors::field_error_in;
pub use jobs::{JobSpec, Jobs, Product, key_vars};
pub use rerender::rerender_manifest;
pub use spec::BatchSpec;

use crate::Result;
use budget::{Scan, open_brackets, scan_yaml};
use errors::{field_error, locate, strip_json_location, strip_yaml_location};
use expand::expand;
use raw::RawManifest;

/// Parse and expand a manifest. JSON when the text starts with `{`, YAML otherwise.
///
/// # Errors
/// `Invalid`, with a message of the form ``manifest field `defaults.width` (line 5): is 65; accepted: …``.
/// Nothing is written by this function, so a bad manifest leaves nothing behind.
///
/// Every budget is checked before the work it bounds: the text's size ([`MAX_MANIFEST_BYTES`]),
/// then (YAML) the open brackets on the raw text ([`MAX_OPEN_BRACKETS`]), anchors, aliases and
/// nesting depth ([`MAX_NESTING_DEPTH`]) on the parser's event stream before anything is built, then tags, the longest expanded prompt, the job
/// count and the expanded size ([`MAX_EXPANDED_BYTES`]) from the sizes of the parts.
pub fn parse_manifest(text: &str) -> Result<BatchSpec> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(field_error(
            "",
            None,
            &format!(
                "the manifest is {} bytes; accepted: at most {MAX_MANIFEST_BYTES} bytes (split the batch)",
                text.len()
            ),
        ));
    }
    let is_json = text.trim_start().starts_with('{');
    // JSON has no aliases, and serde_json stops at 128 levels before doing more work.
    let scan = if is_json {
        Ok(())
    } else {
        open_brackets(text).and_then(|()| scan_yaml(text))
    };
    if let Err(Scan::Refused(e)) = scan {
        return Err(e);
    }
    let raw: RawManifest = if is_json {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner();
            field_error(
                &e.path().to_string(),
                Some(inner.line()),
                &strip_json_location(inner),
            )
        })?
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let path = e.path().to_string();
            let line = locate(text, &path).or_else(|| inner.location().map(|l| l.line()));
            field_error(&path, line, &strip_yaml_location(inner))
        })?
    };
    if let Err(Scan::Unreadable(e)) = scan {
        // The budget scan could not read what serde_yaml did: refuse rather than trust it.
        return Err(e);
    }
    expand(raw, text)
}

#[cfg(test)]
mod rerender_tests {
    use super::*;

    #[test]
    fn a_rerender_parses_back_to_the_same_job() {
        let text = "name: spring\nmodel: sd15\ntags: {team: ads}\n\
                    defaults: {steps: 12, sampler: ddim, negative_prompt: blurry}\n\
                    jobs:\n  - prompt: \"a red \\\"sneaker\\\"\\non: snow\"\n    seed: 7\n    width: 512\n    height: 288\n\
                    \x20   hires: {scale: 2, steps: 5, strength: 0.4}\n\
                    \x20   loras: [{name: brand, weight: 0.8}]\n\
                    \x20   output: {format: jpeg, quality: 80, sharpen: 0.5}\n";
        let spec = parse_manifest(text).unwrap();
        let job = spec.jobs.iter().next().unwrap();
        let again = rerender_manifest(&spec.name, &spec.model, &spec.tags, &job.params);
        let back = parse_manifest(&again).unwrap_or_else(|e| panic!("{e}\n{again}"));
        assert_eq!(back.name, "spring (re-render)");
        assert_eq!(back.tags, spec.tags);
        assert_eq!(back.jobs.len(), 1);
        let rejob = back.jobs.iter().next().unwrap();
        assert_eq!(
            serde_json::to_value(&rejob.params).unwrap(),
            serde_json::to_value(&job.params).unwrap()
        );
        let long = rerender_manifest(&"n".repeat(300), &spec.model, &spec.tags, &job.params);
        assert!(parse_manifest(&long).is_ok(), "a long name is cut to fit");
    }
}
