//! Expansion of a manifest into jobs: defaults, the prompt template × vars × sizes × seeds, the
//! explicit jobs, and the budgets that are priced from the sizes of the parts.

use std::collections::{BTreeMap, HashSet};

use super::budget::{
    MAX_EXPANDED_BYTES, MAX_JOBS_PER_BATCH, MAX_NAME_BYTES, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES,
    MAX_TAGS,
};
use super::errors::cross_error;
use super::jobs::{JobSpec, Jobs, Part, Seeds, Shared, Template};
use super::loras::LoraPlan;
use super::raw::{RawDefaults, RawJob, RawManifest, RawSeeds};
use super::spec::BatchSpec;
use super::variants::check_variants;
use super::vars::placeholder;
use crate::Result;
use crate::keys::derive_seed;
use crate::params::*;

struct Defaults {
    width: u32,
    height: u32,
    steps: StepCount,
    guidance: GuidanceScale,
    sampler: Sampler,
    negative_prompt: NegativePrompt,
    init: Option<InitSpec>,
    hires: Option<HiresSpec>,
    loras: LoraPlan,
    control: Controls,
    output: OutputSpec,
}

impl Defaults {
    /// The defaults of the manifest `text`, whose `loras` may use `vars`.
    fn from_raw(text: &str, d: RawDefaults, vars: &BTreeMap<String, Vec<String>>) -> Result<Self> {
        Ok(Defaults {
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
            hires: d.hires,
            loras: LoraPlan::new(text, d.loras, vars)?,
            control: d.control.unwrap_or_default(),
            output: d.output.unwrap_or_default(),
        })
    }
}

/// The cross-field checks of an `output` section at `path`.
fn check_output(text: &str, path: &str, output: &OutputSpec) -> Result<()> {
    output
        .check()
        .map_err(|(field, msg)| cross_error(text, &format!("{path}.{field}"), msg))
}

/// The hires fix at `hires.0` must fit a render of `width x height`, and the upscale of the
/// output at `output.0` must fit what the renderer delivers.
fn check_sizes(
    text: &str,
    hires: (&str, Option<&HiresSpec>),
    output: (&str, &OutputSpec),
    size: (u32, u32),
) -> Result<()> {
    let (w, h) = match hires.1 {
        Some(spec) => spec
            .size(size.0, size.1)
            .map_err(|e| cross_error(text, &format!("{}.scale", hires.0), e.to_string()))?,
        None => size,
    };
    output
        .1
        .delivered(w, h)
        .map(|_| ())
        .map_err(|e| cross_error(text, &format!("{}.upscale", output.0), e.to_string()))
}

/// A part of a prompt template: literal text or a placeholder, by name (`{name}`) as written,
/// by index into the sorted variable names once resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece<'a, V = &'a str> {
    /// Literal text.
    Text(&'a str),
    /// A placeholder.
    Var(V),
}

/// A template split into text and `{name}` placeholders, in order of appearance.
fn split_template(template: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a `{` without a closing `}`")?;
        let name = placeholder(&after[..close])?;
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        out.push(Piece::Var(name));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Bytes one job takes besides its text: its fixed fields and their framing.
const JOB_OVERHEAD_BYTES: u64 = std::mem::size_of::<JobSpec>() as u64 + 64;

/// The expanded-size budget check: `what` (e.g. `1000 jobs`) takes `bytes`.
fn check_expanded(text: &str, field: &str, jobs: u64, bytes: u128) -> Result<()> {
    if bytes > u128::from(MAX_EXPANDED_BYTES) {
        return Err(cross_error(
            text,
            field,
            format!(
                "the batch expands to {jobs} jobs taking {bytes} bytes (prompt, negative prompt, key and fields of each job); accepted: at most {MAX_EXPANDED_BYTES} bytes per batch (the expanded-size budget); split the batch or shorten the prompts"
            ),
        ));
    }
    Ok(())
}

/// Tags within [`MAX_TAGS`], [`MAX_TAG_KEY_BYTES`] and [`MAX_TAG_VALUE_BYTES`].
fn check_tags(text: &str, tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(cross_error(
            text,
            "tags",
            format!("has {} tags; accepted: at most {MAX_TAGS}", tags.len()),
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > MAX_TAG_KEY_BYTES {
            return Err(cross_error(
                text,
                "tags",
                format!(
                    "has a key of {} bytes; accepted: keys of 1 to {MAX_TAG_KEY_BYTES} bytes",
                    k.len()
                ),
            ));
        }
        if v.len() > MAX_TAG_VALUE_BYTES {
            let short: String = k.chars().take(40).collect();
            return Err(cross_error(
                text,
                &format!("tags.{short}"),
                format!(
                    "is {} bytes; accepted: at most {MAX_TAG_VALUE_BYTES} bytes",
                    v.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes one explicit job takes as stored: its key is derived from the prompt when not given.
fn explicit_job_bytes(j: &RawJob, d: &Defaults) -> u128 {
    let prompt = j.prompt.as_str().len() as u128;
    let key = j.key.as_ref().map_or(prompt + 24, |k| k.len() as u128);
    let negative = j
        .negative_prompt
        .as_ref()
        .unwrap_or(&d.negative_prompt)
        .as_str()
        .len() as u128;
    prompt + key + negative + u128::from(JOB_OVERHEAD_BYTES)
}

pub(super) fn expand(raw: RawManifest, text: &str) -> Result<BatchSpec> {
    if raw.name.trim().is_empty() || raw.name.len() > MAX_NAME_BYTES {
        return Err(cross_error(
            text,
            "name",
            format!("must be 1 to {MAX_NAME_BYTES} characters"),
        ));
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
    check_tags(text, &raw.tags)?;
    let d = Defaults::from_raw(text, raw.defaults, &raw.vars)?;
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
    if raw.prompt.is_some() {
        for &size in &sizes {
            check_sizes(
                text,
                ("defaults.hires", d.hires.as_ref()),
                ("defaults.output", &d.output),
                size,
            )?;
        }
    }

    let template = match &raw.prompt {
        Some(prompt) => Some(template(
            text,
            prompt,
            &raw.vars,
            raw.seeds.as_ref(),
            &raw.jobs,
            sizes,
            &d,
        )?),
        None => {
            if !raw.vars.is_empty() {
                return Err(cross_error(
                    text,
                    "vars",
                    "is given but there is no `prompt` template to use it",
                ));
            }
            let bytes = raw.jobs.iter().map(|j| explicit_job_bytes(j, &d)).sum();
            check_expanded(text, "jobs", raw.jobs.len() as u64, bytes)?;
            None
        }
    };
    let base = match &raw.seeds {
        Some(RawSeeds::Derived { base, .. }) => base.get(),
        _ => 0,
    };
    let explicit = explicit_jobs(text, raw.jobs, &d, base)?;
    if let Some(t) = &template {
        check_variants(text, t, &explicit)?;
    }
    let jobs = Jobs::new(template, explicit);
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
        webhook: raw.webhook,
    })
}

/// The prompt template's product, its budgets checked from the sizes of its parts (no job is
/// built here).
fn template(
    text: &str,
    template: &str,
    vars: &BTreeMap<String, Vec<String>>,
    seeds: Option<&RawSeeds>,
    explicit: &[RawJob],
    sizes: Vec<(u32, u32)>,
    d: &Defaults,
) -> Result<Template> {
    let pieces = split_template(template).map_err(|m| cross_error(text, "prompt", m))?;
    let var_names: Vec<&String> = vars.keys().collect();
    let mut parts: Vec<Piece<usize>> = Vec::with_capacity(pieces.len());
    for piece in &pieces {
        parts.push(match *piece {
            Piece::Text(t) => Piece::Text(t),
            Piece::Var(n) => match var_names.iter().position(|v| v.as_str() == n) {
                Some(i) => Piece::Var(i),
                None => {
                    return Err(cross_error(
                        text,
                        "prompt",
                        format!("placeholder `{{{n}}}` has no entry in `vars`; accepted: one of the names under `vars`"),
                    ));
                }
            },
        });
    }
    for (i, (name, values)) in vars.iter().enumerate() {
        if !parts.contains(&Piece::Var(i)) && !d.loras.uses(i) {
            return Err(cross_error(
                text,
                &format!("vars.{name}"),
                "is not used by any `{placeholder}` in `prompt` or `defaults.loras`",
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
    let seeds = seeds.ok_or_else(|| {
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
    // Placeholders are replaced in one pass (a value's own `{x}` stays text), so the longest
    // prompt is the template's text plus each placeholder's longest value: checked here, before
    // any prompt is built.
    let chars = |s: &str| s.chars().count() as u64;
    let longest: u64 = parts
        .iter()
        .map(|p| match p {
            Piece::Text(t) => chars(t),
            Piece::Var(i) => vars[var_names[*i]]
                .iter()
                .map(|v| chars(v))
                .max()
                .unwrap_or(0),
        })
        .sum();
    if longest > Prompt::MAX_CHARS as u64 {
        return Err(cross_error(
            text,
            "prompt",
            format!(
                "expands to a prompt that is {longest} characters long (each variable at its longest value); at most {} are accepted",
                Prompt::MAX_CHARS
            ),
        ));
    }
    let variants = vars
        .values()
        .try_fold(1u64, |acc, v| acc.checked_mul(v.len() as u64));
    let total = variants
        .and_then(|v| v.checked_mul(per_variant * sizes.len() as u64))
        .filter(|t| *t + explicit.len() as u64 <= MAX_JOBS_PER_BATCH)
        .ok_or_else(|| {
            cross_error(
                text,
                "vars",
                format!("expand to more than {MAX_JOBS_PER_BATCH} jobs; split the batch"),
            )
        })?;
    let variants = u128::from(variants.expect("checked above"));
    // Exact bytes of every variant's prompt and key: each value of a variable appears in
    // variants / (its variable's count) variants.
    let mut prompt_bytes = variants
        * parts
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t),
                Piece::Var(_) => None,
            })
            .map(|t| t.len() as u128)
            .sum::<u128>();
    let mut key_bytes = 0u128;
    for (i, name) in var_names.iter().enumerate() {
        let values = &vars[*name];
        let share = variants / values.len() as u128;
        let sum: u128 = values.iter().map(|v| v.len() as u128).sum();
        let uses = parts.iter().filter(|p| **p == Piece::Var(i)).count() as u128;
        prompt_bytes += uses * share * sum;
        key_bytes += share * (sum + values.len() as u128 * (name.len() as u128 + 2));
    }
    // Each job as stored: its variant's prompt, its key with `@WxH#i`, the negative prompt and
    // the fields.
    let per_variant_jobs = u128::from(per_variant * sizes.len() as u64);
    let bytes = per_variant_jobs * (prompt_bytes + key_bytes)
        + u128::from(total)
            * (20 + d.negative_prompt.as_str().len() as u128 + u128::from(JOB_OVERHEAD_BYTES));
    let explicit_bytes: u128 = explicit.iter().map(|j| explicit_job_bytes(j, d)).sum();
    check_expanded(
        text,
        "prompt",
        total + explicit.len() as u64,
        bytes + explicit_bytes,
    )?;
    Ok(Template {
        parts: parts
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => Part::Text(t.to_string()),
                Piece::Var(i) => Part::Var(i),
            })
            .collect(),
        vars: vars.clone().into_iter().collect(),
        sizes,
        seeds: match seeds {
            RawSeeds::Explicit(v) => Seeds::Explicit(v.clone()),
            RawSeeds::Derived { base, count } => Seeds::Derived {
                base: base.get(),
                count: *count,
            },
        },
        shared: Shared {
            negative_prompt: d.negative_prompt.clone(),
            steps: d.steps,
            guidance: d.guidance,
            sampler: d.sampler,
            init: d.init.clone(),
            hires: d.hires,
            loras: d.loras.clone(),
            control: d.control.clone(),
            output: d.output,
        },
    })
}

/// The explicit jobs, each with its defaults, key and seed; their keys distinct.
fn explicit_jobs(text: &str, raw: Vec<RawJob>, d: &Defaults, base: u64) -> Result<Vec<JobSpec>> {
    let mut keys = HashSet::new();
    let mut jobs = Vec::with_capacity(raw.len());
    for (i, j) in raw.into_iter().enumerate() {
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
        let (output, output_path) = match j.output {
            Some(o) => (o, field("output")),
            None => (d.output, "defaults.output".to_string()),
        };
        check_output(text, &output_path, &output)?;
        let (hires, hires_path) = match j.hires {
            Some(h) => (Some(h), field("hires")),
            None => (d.hires, "defaults.hires".to_string()),
        };
        check_sizes(
            text,
            (&hires_path, hires.as_ref()),
            (&output_path, &output),
            (width, height),
        )?;
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
                hires,
                loras: match (j.loras, d.loras.fixed()) {
                    (Some(l), _) => l,
                    (None, Some(l)) => l.clone(),
                    (None, None) => {
                        return Err(cross_error(
                            text,
                            &field("loras"),
                            "is not given, and `defaults.loras` uses `vars`, which only the `prompt` template's jobs have; give this job its own `loras`",
                        ));
                    }
                },
                control: j.control.unwrap_or_else(|| d.control.clone()),
                output,
            },
        });
    }
    Ok(jobs)
}
