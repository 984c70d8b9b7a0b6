//! Batch manifests: parsing (YAML or JSON) with errors that name the field and line, and expansion
//! into jobs (template × vars × sizes × seeds, plus explicit jobs).

use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};

use crate::keys::derive_seed;
use crate::params::*;
use crate::{Error, Result};

/// Most jobs one batch may expand to.
pub const MAX_JOBS_PER_BATCH: u64 = 1_000_000;

/// A parsed, expanded, valid batch: what the store writes in one transaction.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Human name shown in listings.
    pub name: String,
    /// The model every job of the batch renders with (routing key).
    pub model: ModelName,
    /// Dispatch priority.
    pub priority: Priority,
    /// Re-submitting with the same key returns the same batch instead of a new one.
    pub idempotency_key: Option<String>,
    /// Free-form labels, kept for the audit trail.
    pub tags: BTreeMap<String, String>,
    /// The manifest as submitted, kept for the audit trail.
    pub source: String,
    /// Every job, in manifest order.
    pub jobs: Vec<JobSpec>,
}

/// One job of a batch.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique within the batch and stable across edits of the rest of the manifest.
    pub key: String,
    /// Everything that decides the pixels.
    pub params: JobParams,
}

/// A side length in a manifest: a multiple of 8 from 8 to 4096.
#[derive(Debug, Clone, Copy)]
struct Side(u32);

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
struct RawDefaults {
    width: Option<Side>,
    height: Option<Side>,
    steps: Option<StepCount>,
    guidance: Option<GuidanceScale>,
    sampler: Option<Sampler>,
    negative_prompt: Option<NegativePrompt>,
    init: Option<InitSpec>,
    output: Option<OutputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSeeds {
    Explicit(Vec<Seed>),
    Derived { base: Seed, count: u32 },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    key: Option<String>,
    prompt: Prompt,
    negative_prompt: Option<NegativePrompt>,
    width: Option<Side>,
    height: Option<Side>,
    steps: Option<StepCount>,
    guidance: Option<GuidanceScale>,
    sampler: Option<Sampler>,
    seed: Option<Seed>,
    init: Option<InitSpec>,
    output: Option<OutputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    model: ModelName,
    #[serde(default)]
    priority: Priority,
    idempotency_key: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    defaults: RawDefaults,
    prompt: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, Vec<String>>,
    sizes: Option<Vec<[Side; 2]>>,
    seeds: Option<RawSeeds>,
    #[serde(default)]
    jobs: Vec<RawJob>,
}

/// Parse and expand a manifest. JSON when the text starts with `{`, YAML otherwise.
///
/// # Errors
/// `Invalid`, with a message of the form ``manifest field `defaults.width` (line 5): is 65; accepted: …``.
/// Nothing is written by this function, so a bad manifest leaves nothing behind.
pub fn parse_manifest(text: &str) -> Result<BatchSpec> {
    let raw: RawManifest = if text.trim_start().starts_with('{') {
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
    expand(raw, text)
}

fn strip_json_location(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn strip_yaml_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    // serde_yaml prefixes errors with the path it knows; the path is printed by us already.
    match s.split_once(": ") {
        Some((head, tail)) if !head.contains(' ') => tail.to_string(),
        _ => s,
    }
}

/// An `Invalid` error about the field at `path` of the manifest `text`, naming its line when it is
/// written there: ``manifest field `model` (line 2): `x` is served by no worker; accepted: …``. For
/// checks made after parsing (the scheduler's served models).
pub fn field_error_in(text: &str, path: &str, msg: &str) -> Error {
    field_error(path, locate(text, path), msg)
}

fn field_error(path: &str, line: Option<usize>, msg: &str) -> Error {
    let path = if path == "." || path.is_empty() {
        "(top level)"
    } else {
        path
    };
    match line {
        Some(l) if l > 0 => Error::invalid(format!("manifest field `{path}` (line {l}): {msg}")),
        _ => Error::invalid(format!("manifest field `{path}`: {msg}")),
    }
}

/// The line (1-based) of the manifest field at `path` (`defaults.width`, `jobs[2].key`) in YAML or
/// JSON text. Scans forward segment by segment, so it finds block and flow style alike; `None` when
/// the field is not written in the text (a missing field).
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut found = None;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !key.is_empty() {
            let pats = [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("\"{key}\" :"),
            ];
            let hit = (start..lines.len()).find(|&i| {
                let t = lines[i]
                    .trim_start()
                    .trim_start_matches(['-', ' ', '{', ',']);
                pats.iter().any(|p| t.starts_with(p.as_str()))
                    || pats.iter().any(|p| {
                        lines[i].contains(&format!("{{{p}")) || lines[i].contains(&format!(", {p}"))
                    })
            })?;
            found = Some(hit + 1);
            start = hit;
        }
        if let Some(n) = index {
            let items: Vec<usize> = (start + 1..lines.len())
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            let indent = items
                .first()
                .map(|&i| lines[i].len() - lines[i].trim_start().len());
            let hit = *items
                .iter()
                .filter(|&&i| Some(lines[i].len() - lines[i].trim_start().len()) == indent)
                .nth(n)?;
            found = Some(hit + 1);
            start = hit;
        }
    }
    found
}

fn cross_error(text: &str, field: &str, msg: impl AsRef<str>) -> Error {
    field_error(field, locate(text, field), msg.as_ref())
}

struct Defaults {
    width: u32,
    height: u32,
    steps: StepCount,
    guidance: GuidanceScale,
    sampler: Sampler,
    negative_prompt: NegativePrompt,
    init: Option<InitSpec>,
    output: OutputSpec,
}

impl Defaults {
    fn from_raw(d: RawDefaults) -> Self {
        Defaults {
            width: d.width.map_or(512, |s| s.0),
            height: d.height.map_or(512, |s| s.0),
            steps: d
                .steps
                .unwrap_or(StepCount::parse(25).expect("25 is in range")),
            guidance: d
                .guidance
                .unwrap_or(GuidanceScale::parse(7.5).expect("7.5 is in range")),
            sampler: d.sampler.unwrap_or(Sampler::EulerA),
            negative_prompt: d.negative_prompt.unwrap_or_default(),
            init: d.init,
            output: d.output.unwrap_or_default(),
        }
    }
}

/// The cross-field checks of an `output` section at `path`.
fn check_output(text: &str, path: &str, output: &OutputSpec) -> Result<()> {
    output
        .check()
        .map_err(|(field, msg)| cross_error(text, &format!("{path}.{field}"), msg))
}

/// Placeholders `{name}` in a template, in order of appearance.
fn placeholders(template: &str) -> std::result::Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a `{` without a closing `}`")?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "placeholder `{{{name}}}` is not a name of letters, digits and `_`"
            ));
        }
        out.push(name);
        rest = &after[close + 1..];
    }
    Ok(out)
}

fn expand(raw: RawManifest, text: &str) -> Result<BatchSpec> {
    if raw.name.trim().is_empty() || raw.name.len() > 200 {
        return Err(cross_error(text, "name", "must be 1 to 200 characters"));
    }
    if raw
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(cross_error(
            text,
            "idempotency_key",
            "must be 1 to 200 characters",
        ));
    }
    let d = Defaults::from_raw(raw.defaults);
    check_output(text, "defaults.output", &d.output)?;
    let sizes: Vec<(u32, u32)> = match &raw.sizes {
        Some(s) if s.is_empty() => {
            return Err(cross_error(
                text,
                "sizes",
                "is empty; give at least one [width, height] or leave it out",
            ));
        }
        Some(s) => s.iter().map(|[w, h]| (w.0, h.0)).collect(),
        None => vec![(d.width, d.height)],
    };

    let mut jobs = Vec::new();
    let mut keys = HashSet::new();

    match &raw.prompt {
        Some(template) => {
            let names = placeholders(template).map_err(|m| cross_error(text, "prompt", m))?;
            for n in &names {
                if !raw.vars.contains_key(*n) {
                    return Err(cross_error(
                        text,
                        "prompt",
                        format!(
                            "placeholder `{{{n}}}` has no entry in `vars`; accepted: one of the names under `vars`"
                        ),
                    ));
                }
            }
            for (name, values) in &raw.vars {
                if !names.contains(&name.as_str()) {
                    return Err(cross_error(
                        text,
                        &format!("vars.{name}"),
                        "is not used by any `{placeholder}` in `prompt`",
                    ));
                }
                if values.is_empty() {
                    return Err(cross_error(
                        text,
                        &format!("vars.{name}"),
                        "is empty; give at least one value",
                    ));
                }
            }
            let seeds = raw.seeds.as_ref().ok_or_else(|| {
                cross_error(
                    text,
                    "seeds",
                    "is missing; accepted: {base: N, count: N} or a list of seeds",
                )
            })?;
            let per_variant = match seeds {
                RawSeeds::Explicit(v) if v.is_empty() => {
                    return Err(cross_error(text, "seeds", "is an empty list"));
                }
                RawSeeds::Explicit(v) => v.len() as u64,
                RawSeeds::Derived { count: 0, .. } => {
                    return Err(cross_error(
                        text,
                        "seeds.count",
                        "is 0; accepted: at least 1",
                    ));
                }
                RawSeeds::Derived { count, .. } => u64::from(*count),
            };
            let total = raw
                .vars
                .values()
                .try_fold(per_variant * sizes.len() as u64, |acc, v| {
                    acc.checked_mul(v.len() as u64)
                })
                .filter(|t| *t + raw.jobs.len() as u64 <= MAX_JOBS_PER_BATCH)
                .ok_or_else(|| {
                    cross_error(
                        text,
                        "vars",
                        format!("expand to more than {MAX_JOBS_PER_BATCH} jobs; split the batch"),
                    )
                })?;
            jobs.reserve(total as usize + raw.jobs.len());

            let var_names: Vec<&String> = raw.vars.keys().collect();
            let mut choice = vec![0usize; var_names.len()];
            loop {
                let mut prompt = template.clone();
                let mut variant = String::new();
                for (i, name) in var_names.iter().enumerate() {
                    let value = &raw.vars[*name][choice[i]];
                    prompt = prompt.replace(&format!("{{{name}}}"), value);
                    if !variant.is_empty() {
                        variant.push(',');
                    }
                    variant.push_str(&format!("{name}={value}"));
                }
                let prompt = Prompt::parse(prompt).map_err(|e| {
                    cross_error(text, "prompt", format!("expands to a prompt that {e}"))
                })?;
                for &(w, h) in &sizes {
                    let vkey = format!("{variant}@{w}x{h}");
                    let seed_list: Vec<Seed> = match seeds {
                        RawSeeds::Explicit(v) => v.clone(),
                        RawSeeds::Derived { base, count } => (0..*count)
                            .map(|i| derive_seed(base.get(), &vkey, i))
                            .collect(),
                    };
                    for (i, seed) in seed_list.into_iter().enumerate() {
                        let key = format!("{vkey}#{i}");
                        if !keys.insert(key.clone()) {
                            return Err(cross_error(
                                text,
                                "vars",
                                format!("produce the job `{key}` twice; values must be unique"),
                            ));
                        }
                        jobs.push(JobSpec {
                            key,
                            params: JobParams {
                                prompt: prompt.clone(),
                                negative_prompt: d.negative_prompt.clone(),
                                width: w,
                                height: h,
                                steps: d.steps,
                                guidance: d.guidance,
                                sampler: d.sampler,
                                seed,
                                init: d.init.clone(),
                                output: d.output,
                            },
                        });
                    }
                }
                // Advance the odometer over the cartesian product.
                let mut i = var_names.len();
                loop {
                    if i == 0 {
                        break;
                    }
                    i -= 1;
                    choice[i] += 1;
                    if choice[i] < raw.vars[var_names[i]].len() {
                        break;
                    }
                    choice[i] = 0;
                }
                if choice.iter().all(|c| *c == 0) {
                    break;
                }
            }
        }
        None => {
            if !raw.vars.is_empty() {
                return Err(cross_error(
                    text,
                    "vars",
                    "is given but there is no `prompt` template to use it",
                ));
            }
        }
    }

    let base = match &raw.seeds {
        Some(RawSeeds::Derived { base, .. }) => base.get(),
        _ => 0,
    };
    for (i, j) in raw.jobs.into_iter().enumerate() {
        let field = |f: &str| format!("jobs[{i}].{f}");
        let width = j.width.map_or(d.width, |s| s.0);
        let height = j.height.map_or(d.height, |s| s.0);
        let key = match j.key {
            Some(k) if k.is_empty() || k.len() > 200 => {
                return Err(cross_error(
                    text,
                    &field("key"),
                    "must be 1 to 200 characters",
                ));
            }
            Some(k) => k,
            None => format!("prompt={}@{width}x{height}", j.prompt.as_str()),
        };
        let seed = j.seed.unwrap_or_else(|| derive_seed(base, &key, 0));
        let output = j.output.unwrap_or(d.output);
        check_output(text, &field("output"), &output)?;
        if !keys.insert(key.clone()) {
            return Err(cross_error(
                text,
                &field("key"),
                format!("`{key}` is used by another job; give each job a distinct `key`"),
            ));
        }
        jobs.push(JobSpec {
            key,
            params: JobParams {
                prompt: j.prompt,
                negative_prompt: j
                    .negative_prompt
                    .unwrap_or_else(|| d.negative_prompt.clone()),
                width,
                height,
                steps: j.steps.unwrap_or(d.steps),
                guidance: j.guidance.unwrap_or(d.guidance),
                sampler: j.sampler.unwrap_or(d.sampler),
                seed,
                init: j.init.or_else(|| d.init.clone()),
                output,
            },
        });
    }
    if jobs.is_empty() {
        return Err(cross_error(
            text,
            "prompt",
            "is missing and `jobs` is empty; the batch would have no jobs",
        ));
    }
    if jobs.len() as u64 > MAX_JOBS_PER_BATCH {
        return Err(cross_error(
            text,
            "jobs",
            format!("the batch has more than {MAX_JOBS_PER_BATCH} jobs; split it"),
        ));
    }
    Ok(BatchSpec {
        name: raw.name,
        model: raw.model,
        priority: raw.priority,
        idempotency_key: raw.idempotency_key,
        tags: raw.tags,
        source: text.to_string(),
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = "\
name: campaign
model: sd15
priority: 3
defaults:
  width: 64
  height: 64
  steps: 4
prompt: a {color} {shape}
vars:
  color: [red, blue, green]
  shape: [circle, square]
sizes: [[64, 64], [128, 64]]
seeds: {base: 42, count: 2}
";

    #[test]
    fn expands_the_cartesian_product() {
        let b = parse_manifest(BASIC).unwrap();
        assert_eq!(b.jobs.len(), 3 * 2 * 2 * 2);
        assert_eq!(b.jobs[0].params.prompt.as_str(), "a red circle");
        assert_eq!(b.jobs[0].key, "color=red,shape=circle@64x64#0");
        let keys: HashSet<_> = b.jobs.iter().map(|j| &j.key).collect();
        assert_eq!(keys.len(), b.jobs.len());
        assert_eq!(b.priority.get(), 3);
    }

    #[test]
    fn a_jobs_seed_does_not_depend_on_the_rest_of_the_batch() {
        let small = parse_manifest(&BASIC.replace("[red, blue, green]", "[red]")).unwrap();
        let big = parse_manifest(BASIC).unwrap();
        let find = |b: &BatchSpec, k: &str| b.jobs.iter().find(|j| j.key == k).unwrap().params.seed;
        let k = "color=red,shape=square@128x64#1";
        assert_eq!(find(&small, k), find(&big, k));
    }

    #[test]
    fn json_is_accepted() {
        let b = parse_manifest(r#"{"name":"j","model":"m","prompt":"x","seeds":[1,2]}"#).unwrap();
        assert_eq!(b.jobs.len(), 2);
        assert_eq!(b.jobs[1].params.seed.get(), 2);
    }

    #[test]
    fn explicit_jobs_override_defaults() {
        let b = parse_manifest(
            "name: n\nmodel: m\ndefaults: {steps: 3}\njobs:\n  - prompt: one\n    steps: 9\n  - prompt: two\n    seed: 5\n",
        )
        .unwrap();
        assert_eq!(b.jobs[0].params.steps.get(), 9);
        assert_eq!(b.jobs[1].params.steps.get(), 3);
        assert_eq!(b.jobs[1].params.seed.get(), 5);
    }

    fn err(text: &str) -> String {
        let e = parse_manifest(text).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        e.to_string()
    }

    #[test]
    fn later_checks_name_the_field_and_line_too() {
        let e = field_error_in(BASIC, "model", "`sd15` is served by no worker").to_string();
        assert_eq!(
            e,
            "manifest field `model` (line 2): `sd15` is served by no worker"
        );
        let e = field_error_in("{\"name\": \"x\"}", "model", "is missing").to_string();
        assert_eq!(e, "manifest field `model`: is missing");
    }

    #[test]
    fn errors_name_the_field_and_line() {
        let e = err(&BASIC.replace("width: 64", "width: 65"));
        assert!(
            e.contains("`defaults.width` (line 5)") && e.contains("multiple of 8"),
            "{e}"
        );
        let e = err(&BASIC.replace("steps: 4", "steps: 0"));
        assert!(
            e.contains("`defaults.steps` (line 7)") && e.contains("1 to 200"),
            "{e}"
        );
        let e = err(&BASIC.replace("model: sd15", "model: SD 15"));
        assert!(e.contains("`model` (line 2)"), "{e}");
        let e = err(&BASIC.replace("priority: 3", "priorty: 3"));
        assert!(e.contains("unknown field `priorty`"), "{e}");
        let e = err(&BASIC.replace("steps: 4", "steps: 4\n  foo: 1"));
        assert!(e.contains("`defaults.foo` (line 8)"), "{e}");
        let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n  - prompt: b\n    width: 7\n");
        assert!(e.contains("`jobs[1].width` (line 6)"), "{e}");
        let e = err(
            r#"{"name": "n", "model": "m", "defaults": {"width": 9}, "prompt": "x", "seeds": [1]}"#,
        );
        assert!(e.contains("`defaults.width` (line 1)"), "{e}");
        let e = err(&BASIC.replace("defaults:\n", "defaults:\n  sampler: plms\n"));
        assert!(
            e.contains("`defaults.sampler`") && e.contains("euler_a"),
            "{e}"
        );
    }

    #[test]
    fn cross_field_errors_name_the_field() {
        let e = err(&BASIC.replace("a {color} {shape}", "a {colour} {shape}"));
        assert!(
            e.contains("`prompt` (line 8)") && e.contains("{colour}"),
            "{e}"
        );
        let e = err(&BASIC.replace("seeds: {base: 42, count: 2}\n", ""));
        assert!(e.contains("`seeds`"), "{e}");
        let e = err(&BASIC.replace("count: 2", "count: 0"));
        assert!(e.contains("`seeds.count`"), "{e}");
        let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n  - prompt: a\n");
        assert!(e.contains("`jobs[1].key`"), "{e}");
        let e = err("name: n\nmodel: m\n");
        assert!(e.contains("no jobs"), "{e}");
    }

    #[test]
    fn output_settings_reach_every_job_and_jobs_may_override_them() {
        let text = "name: n\nmodel: m\ndefaults:\n  output: {format: jpeg, quality: 80, resize: {width: 300, height: 250}}\njobs:\n  - prompt: a\n  - prompt: b\n    output: {format: webp, sharpen: 0.5, saturation: 1.2}\n";
        let b = parse_manifest(text).unwrap();
        let o = &b.jobs[0].params.output;
        assert_eq!(o.format, ImageFormat::Jpeg);
        assert_eq!(o.quality.map(Quality::get), Some(80));
        let r = o.resize.unwrap();
        assert_eq!(
            (r.width.get(), r.height.get(), r.fit),
            (300, 250, Fit::Cover)
        );
        let o = &b.jobs[1].params.output;
        assert_eq!(
            (o.format, o.quality, o.resize),
            (ImageFormat::Webp, None, None)
        );
        assert_eq!(
            (o.sharpen.get(), o.saturation.get(), o.contrast.get()),
            (0.5, 1.2, 1.0)
        );
        // Without `output`, params serialize as before (output keys of old jobs do not move).
        let plain = parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").unwrap();
        let json = serde_json::to_string(&plain.jobs[0].params).unwrap();
        assert!(!json.contains("output"), "{json}");
    }

    #[test]
    fn the_readme_manifest_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```yaml\nname: spring-campaign")
            .expect("README manifest")
            + 8;
        let text = &readme[start..start + readme[start..].find("```").unwrap()];
        let b = parse_manifest(text).unwrap();
        assert_eq!(b.jobs.len(), 2 * 2 * 2 * 2 * 4 + 2);
        assert_eq!(
            b.jobs.last().unwrap().params.output.format,
            ImageFormat::Jpeg
        );
    }

    #[test]
    fn bad_output_settings_name_the_field() {
        let base = "name: n\nmodel: m\nprompt: p\nseeds: [1]\ndefaults:\n  output:\n";
        let e = err(&format!("{base}    format: gif\n"));
        assert!(
            e.contains("`defaults.output.format` (line 7)") && e.contains("jpeg"),
            "{e}"
        );
        let e = err(&format!("{base}    format: jpeg\n    quality: 101\n"));
        assert!(
            e.contains("`defaults.output.quality` (line 8)") && e.contains("1 to 100"),
            "{e}"
        );
        let e = err(&format!("{base}    quality: 80\n"));
        assert!(
            e.contains("`defaults.output.quality` (line 7)") && e.contains("png"),
            "{e}"
        );
        let e = err(&format!("{base}    sharpen: -1\n"));
        assert!(
            e.contains("`defaults.output.sharpen`") && e.contains("0 to 4"),
            "{e}"
        );
        let e = err(&format!("{base}    resize: {{width: 0, height: 5}}\n"));
        assert!(
            e.contains("`defaults.output.resize.width`") && e.contains("1 to 8192"),
            "{e}"
        );
        let e = err(&format!(
            "{base}    resize: {{width: 5, height: 5, fit: squash}}\n"
        ));
        assert!(
            e.contains("`defaults.output.resize.fit`") && e.contains("cover"),
            "{e}"
        );
        let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n    output: {quality: 5}\n");
        assert!(e.contains("`jobs[0].output.quality` (line 5)"), "{e}");
    }

    #[test]
    fn huge_expansions_are_refused_before_allocating() {
        let vals: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let list = format!("[{}]", vals.join(","));
        let text = format!(
            "name: n\nmodel: m\nprompt: \"{{a}} {{b}}\"\nvars:\n  a: {list}\n  b: {list}\nseeds: {{base: 1, count: 2}}\n"
        );
        assert!(err(&text).contains("more than 1000000 jobs"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for t in [
            "",
            "[]",
            "{",
            "name: [",
            "\u{0}",
            "name: n\nmodel: m\nprompt: a {\nseeds: [1]\n",
        ] {
            assert!(parse_manifest(t).is_err(), "{t:?}");
        }
    }
}
