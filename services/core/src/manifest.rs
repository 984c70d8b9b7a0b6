//! Batch manifests: parsing (YAML or JSON) with errors that name the field and line, and expansion
//! into jobs (template × vars × sizes × seeds, plus explicit jobs).

use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};

use crate::keys::derive_seed;
use crate::params::*;
use crate::{Error, Result};

/// Most jobs one batch may expand to: the store writes a batch in one transaction.
pub const MAX_JOBS_PER_BATCH: u64 = 1_000_000;

/// Largest manifest text accepted, in bytes: every other budget below is priced from it, and it
/// matches the HTTP body limit so the gRPC path (whose own limit is larger) is held to the same.
pub const MAX_MANIFEST_BYTES: usize = 2 << 20;

/// Deepest nesting of YAML mappings and lists: a real manifest needs 5 (`jobs[].init.image`).
/// JSON is held to serde_json's own 128 levels, which cost nothing more.
pub const MAX_NESTING_DEPTH: usize = 16;

/// Most `[`/`{` a YAML manifest may leave open at once, counted on the raw text before the YAML
/// parser sees it: both YAML parsers look ahead over a whole flow collection with work that
/// grows with its depth (100 000 nested `[` cost 78 s), so the text is refused before they run.
/// Far above [`MAX_NESTING_DEPTH`], which the parser's events enforce exactly, so that brackets
/// in prompts are not mistaken for nesting.
pub const MAX_OPEN_BRACKETS: usize = 256;

/// Most memory one batch's expanded jobs may take (jobs × bytes per job: prompt, negative prompt,
/// key and the job's fixed fields), computed from the manifest before expanding it; bounds the
/// scheduler's memory per submit (a million jobs of 500 bytes fit).
pub const MAX_EXPANDED_BYTES: u64 = 512 << 20;

/// Most tags on one batch: tags are re-sent with every GET and watch event of the batch.
pub const MAX_TAGS: usize = 64;

/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;

/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;

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

/// Why the YAML budget scan stopped.
enum Scan {
    /// A budget is exceeded (an anchor, an alias, too deep): refuse before deserializing.
    Refused(Error),
    /// The scanner found a syntax error: serde_yaml reports it with its own message, which
    /// names the field; this error is used only if serde_yaml accepts the text.
    Unreadable(Error),
}

/// Refuse a YAML text that leaves more than [`MAX_OPEN_BRACKETS`] `[`/`{` open at once, in one
/// linear pass over the characters, before a YAML parser runs. An upper bound of the flow
/// nesting: every `[` and `{` counts as an opening, wherever it is (a quoted string, a comment,
/// a prompt); a `]` or `}` inside what looks like a quoted string or a comment closes only an
/// opening of that same string or comment, so text can make the count too high (a refusal) but
/// closing brackets hidden in text cannot lower it below the real nesting.
fn open_brackets(text: &str) -> std::result::Result<(), Scan> {
    let (mut open, mut line) = (0usize, 1usize);
    // The quote being read (`#` for a comment), and the openings counted inside it.
    let mut inside: Option<char> = None;
    let mut local = 0usize;
    // The character before the current one; `\n` at the start.
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match (inside, c) {
            (_, '[' | '{') => {
                open += 1;
                if inside.is_some() {
                    local += 1;
                }
            }
            (Some(_), ']' | '}') => {
                if local > 0 {
                    local -= 1;
                    open -= 1;
                }
            }
            (None, ']' | '}') => open = open.saturating_sub(1),
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
            }
            (Some('#'), '\n') => inside = None,
            (Some('#'), _) => {}
            (Some(q), _) if c == q => inside = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if prev.is_whitespace() || "[{,:?-".contains(prev) => {
                inside = Some(c);
                local = 0;
            }
            (None, '#') if prev.is_whitespace() => {
                inside = Some('#');
                local = 0;
            }
            (None, _) => {}
        }
        if open > MAX_OPEN_BRACKETS {
            return Err(Scan::Refused(field_error(
                "",
                Some(line),
                &format!(
                    "nests more than {MAX_OPEN_BRACKETS} `[`/`{{` deep; accepted: at most {MAX_NESTING_DEPTH} levels of mappings and lists"
                ),
            )));
        }
        prev = c;
    }
    Ok(())
}

/// Walk the YAML event stream once, refusing anchors (`&a`), aliases (`*a`) and nesting deeper
/// than [`MAX_NESTING_DEPTH`], naming the field and line. The parser is pulled one event at a
/// time and dropped at the first refusal, so a hostile text costs at most one pass over the
/// part read. Aliases are refused rather than counted: serde_yaml copies the aliased node for
/// every alias, so a 2 MiB manifest could otherwise expand to gigabytes. A `*` or `&` inside a
/// scalar (`"a * b"`, `x & y`) is text, not an alias, and is accepted.
fn scan_yaml(text: &str) -> std::result::Result<(), Scan> {
    use yaml_rust2::parser::{Event, Parser};

    /// Where the next node of an open collection goes.
    enum Frame {
        /// In a mapping: its current key (once read), and whether the next node is a key.
        Map { key: String, at_key: bool },
        /// In a list: the index of the next item.
        Seq { index: usize },
    }
    fn path(frames: &[Frame]) -> String {
        let mut p = String::new();
        for f in frames {
            match f {
                Frame::Map { key, at_key: false } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(key);
                }
                Frame::Map { at_key: true, .. } => {}
                Frame::Seq { index } => p.push_str(&format!("[{index}]")),
            }
        }
        p
    }
    /// A node of the top frame is complete: the next one is the next key or item.
    fn advance(frames: &mut [Frame]) {
        match frames.last_mut() {
            Some(Frame::Map { at_key, .. }) => *at_key = !*at_key,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
    const NO_ANCHORS: &str =
        "YAML anchors and aliases are not accepted (each alias is a copy); write the value out";

    let mut parser = Parser::new_from_str(text);
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(e) => e,
            Err(e) => {
                return Err(Scan::Unreadable(field_error(
                    "",
                    Some(e.marker().line()),
                    &format!("is not YAML this scheduler reads: {}", e.info()),
                )));
            }
        };
        let line = Some(mark.line());
        let refuse =
            |frames: &[Frame], msg: &str| Scan::Refused(field_error(&path(frames), line, msg));
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => {
                return Err(refuse(
                    &frames,
                    &format!("is an alias (`*name`); {NO_ANCHORS}"),
                ));
            }
            Event::Scalar(value, _, anchor, _) => {
                if anchor > 0 {
                    return Err(refuse(
                        &frames,
                        &format!("has an anchor (`&name`); {NO_ANCHORS}"),
                    ));
                }
                if let Some(Frame::Map { key, at_key: true }) = frames.last_mut() {
                    *key = value;
                }
                advance(&mut frames);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor > 0 {
                    return Err(refuse(
                        &frames,
                        &format!("has an anchor (`&name`); {NO_ANCHORS}"),
                    ));
                }
                if frames.len() >= MAX_NESTING_DEPTH {
                    return Err(refuse(
                        &frames,
                        &format!(
                            "nests deeper than {MAX_NESTING_DEPTH} levels; accepted: at most {MAX_NESTING_DEPTH} levels of mappings and lists"
                        ),
                    ));
                }
                frames.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        key: String::new(),
                        at_key: true,
                    }
                } else {
                    Frame::Seq { index: 0 }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                advance(&mut frames);
            }
            _ => {}
        }
    }
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
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "placeholder `{{{name}}}` is not a name of letters, digits and `_`"
            ));
        }
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

/// Memory one job takes besides its text: the job's fixed fields and the collections' slots.
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

/// Bytes one explicit job takes once built: its key (derived from the prompt when not given)
/// twice, as in the template case.
fn explicit_job_bytes(j: &RawJob, d: &Defaults) -> u128 {
    let prompt = j.prompt.as_str().len() as u128;
    let key = j.key.as_ref().map_or(prompt + 24, |k| k.len() as u128);
    let negative = j
        .negative_prompt
        .as_ref()
        .unwrap_or(&d.negative_prompt)
        .as_str()
        .len() as u128;
    prompt + 2 * key + negative + u128::from(JOB_OVERHEAD_BYTES)
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
    check_tags(text, &raw.tags)?;
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
            let pieces = split_template(template).map_err(|m| cross_error(text, "prompt", m))?;
            let var_names: Vec<&String> = raw.vars.keys().collect();
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
            for (i, (name, values)) in raw.vars.iter().enumerate() {
                if !parts.contains(&Piece::Var(i)) {
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
            // Placeholders are replaced in one pass (a value's own `{x}` stays text), so the
            // longest prompt is the template's text plus each placeholder's longest value:
            // checked here, before any prompt is built.
            let chars = |s: &str| s.chars().count() as u64;
            let longest: u64 = parts
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => chars(t),
                    Piece::Var(i) => raw.vars[var_names[*i]]
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
            let variants = raw
                .vars
                .values()
                .try_fold(1u64, |acc, v| acc.checked_mul(v.len() as u64));
            let total = variants
                .and_then(|v| v.checked_mul(per_variant * sizes.len() as u64))
                .filter(|t| *t + raw.jobs.len() as u64 <= MAX_JOBS_PER_BATCH)
                .ok_or_else(|| {
                    cross_error(
                        text,
                        "vars",
                        format!("expand to more than {MAX_JOBS_PER_BATCH} jobs; split the batch"),
                    )
                })?;
            let variants = u128::from(variants.expect("checked above"));
            // Exact bytes of every variant's prompt and key: each value of a variable appears
            // in variants / (its variable's count) variants.
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
                let values = &raw.vars[*name];
                let share = variants / values.len() as u128;
                let sum: u128 = values.iter().map(|v| v.len() as u128).sum();
                let uses = parts.iter().filter(|p| **p == Piece::Var(i)).count() as u128;
                prompt_bytes += uses * share * sum;
                key_bytes += share * (sum + values.len() as u128 * (name.len() as u128 + 2));
            }
            // Each job: its variant's prompt, its key twice (the job's and the duplicate
            // check's) with `@WxH#i`, the negative prompt and the fields.
            let per_variant_jobs = u128::from(per_variant * sizes.len() as u64);
            let bytes = per_variant_jobs * (prompt_bytes + 2 * key_bytes)
                + u128::from(total)
                    * (2 * 20
                        + d.negative_prompt.as_str().len() as u128
                        + u128::from(JOB_OVERHEAD_BYTES));
            let explicit: u128 = raw.jobs.iter().map(|j| explicit_job_bytes(j, &d)).sum();
            check_expanded(
                text,
                "prompt",
                total + raw.jobs.len() as u64,
                bytes + explicit,
            )?;
            jobs.reserve(total as usize + raw.jobs.len());

            let mut choice = vec![0usize; var_names.len()];
            loop {
                let mut prompt = String::new();
                for p in &parts {
                    match p {
                        Piece::Text(t) => prompt.push_str(t),
                        Piece::Var(i) => prompt.push_str(&raw.vars[var_names[*i]][choice[*i]]),
                    }
                }
                let mut variant = String::new();
                for (i, name) in var_names.iter().enumerate() {
                    let value = &raw.vars[*name][choice[i]];
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
            let bytes = raw.jobs.iter().map(|j| explicit_job_bytes(j, &d)).sum();
            check_expanded(text, "jobs", raw.jobs.len() as u64, bytes)?;
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
    fn anchors_and_aliases_are_refused_naming_the_field_and_line() {
        let e =
            err("name: n\nmodel: m\nseeds: [1]\nprompt: \"{p}\"\nvars:\n  p: [&a xxx, *a, *a]\n");
        assert!(
            e.contains("`vars.p[0]` (line 6)")
                && e.contains("anchor")
                && e.contains("not accepted"),
            "{e}"
        );
        let e = err("name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n  a: &v x\n  b: *v\n");
        assert!(
            e.contains("`tags.a` (line 6)") && e.contains("anchor"),
            "{e}"
        );
        let e = err("name: n\nmodel: m\ndefaults: &d {steps: 3}\njobs: [{prompt: a}]\n");
        assert!(
            e.contains("`defaults` (line 3)") && e.contains("anchor"),
            "{e}"
        );
    }

    #[test]
    fn a_star_or_ampersand_inside_text_is_not_an_alias() {
        let b = parse_manifest(
            "name: \"*stars* & co\"\nmodel: m\ntags: {t: \"&x\", u: a*b}\njobs:\n  - prompt: a * b & c\n  - prompt: '*bold* &amp'\n  - {prompt: \"x *y &z\", key: \"*k\"}\n",
        )
        .unwrap();
        assert_eq!(b.name, "*stars* & co");
        assert_eq!(b.jobs[0].params.prompt.as_str(), "a * b & c");
        assert_eq!(b.jobs[1].params.prompt.as_str(), "*bold* &amp");
        assert_eq!(b.jobs[2].key, "*k");
        assert_eq!(b.tags["u"], "a*b");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut block = "name: n\nmodel: m\ntags:\n".to_string();
        for i in 0..40 {
            block.push_str(&format!("{}k:\n", " ".repeat(i + 1)));
        }
        let e = err(&block);
        assert!(
            e.contains("`tags.k.k.k") && e.contains("deeper than 16"),
            "{e}"
        );
        let flow = format!(
            "name: n\nmodel: m\ntags: {}{}\n",
            "[".repeat(20),
            "]".repeat(20)
        );
        let e = err(&flow);
        assert!(
            e.contains("`tags") && e.contains("(line 3)") && e.contains("deeper than 16"),
            "{e}"
        );
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_the_yaml_parser_runs() {
        let deep = |n: usize| {
            format!(
                "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {}{}\n",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let t0 = std::time::Instant::now();
        let e = err(&deep(100_000));
        assert!(e.contains("(line 5)") && e.contains("more than 256"), "{e}");
        assert!(t0.elapsed().as_secs() < 5, "took {:?}", t0.elapsed());
        // Closing brackets inside quoted strings or comments do not hide openings.
        let hidden = format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {}\n",
            "[\"]]\", 'it''s ]]', # x # ]]\n".repeat(300)
        );
        assert!(err(&hidden).contains("more than 256"));
        // Balanced brackets in prompts are text, however many.
        let prompts: String = (0..400)
            .map(|i| format!("  - prompt: \"[[a]] {{b}} {i}\"\n  - prompt: x [c] {i}\n"))
            .collect();
        let b = parse_manifest(&format!("name: n\nmodel: m\njobs:\n{prompts}")).unwrap();
        assert_eq!(b.jobs.len(), 800);
    }

    #[test]
    fn a_value_placeholder_stays_text_and_long_expansions_are_refused_before_building() {
        // One pass: `{b}` inside a value of `a` is not replaced again.
        let b = parse_manifest(
            "name: n\nmodel: m\nprompt: \"{a} {b}\"\nseeds: [1]\nvars:\n  a: [\"x{b}\"]\n  b: [y]\n",
        )
        .unwrap();
        assert_eq!(b.jobs[0].params.prompt.as_str(), "x{b} y");
        // Each value made of the next placeholder: refused from the parts' sizes.
        let text = format!(
            "name: n\nmodel: m\nprompt: \"{{a}}{{b}}{{c}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\", short]\n",
            "{b}".repeat(300),
            "{c}".repeat(300),
            "z".repeat(1200)
        );
        let e = err(&text);
        assert!(
            e.contains("`prompt` (line 3)")
                && e.contains("3000 characters long")
                && e.contains("at most 2000"),
            "{e}"
        );
    }

    #[test]
    fn the_expanded_size_budget_is_checked_before_expanding() {
        let vals = |p: &str| {
            (0..100)
                .map(|i| format!("{p}{i:02}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            "name: n\nmodel: m\ndefaults: {{negative_prompt: \"{}\"}}\nprompt: \"{{a}} {{b}} {}\"\nseeds: {{base: 1, count: 100}}\nvars:\n  a: [{}]\n  b: [{}]\n",
            "n".repeat(2000),
            "p".repeat(1990),
            vals("a"),
            vals("b")
        );
        let e = err(&text);
        assert!(
            e.contains("`prompt` (line 4)")
                && e.contains("1000000 jobs taking")
                && e.contains(&format!("at most {MAX_EXPANDED_BYTES} bytes per batch"))
                && e.contains("expanded-size budget"),
            "{e}"
        );
        // The same shape with short prompts fits.
        let small = text
            .replace(&"n".repeat(2000), "n")
            .replace(&"p".repeat(1990), "p");
        assert_eq!(parse_manifest(&small).unwrap().jobs.len(), 1_000_000);
    }

    #[test]
    fn tags_are_bounded() {
        let many: String = (0..65).map(|i| format!("  t{i}: x\n")).collect();
        let e = err(&format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n{many}"
        ));
        assert!(
            e.contains("`tags` (line 5)") && e.contains("65 tags; accepted: at most 64"),
            "{e}"
        );
        let e = err(&format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n  big: {}\n",
            "v".repeat(257)
        ));
        assert!(
            e.contains("`tags.big` (line 6)") && e.contains("257 bytes; accepted: at most 256"),
            "{e}"
        );
        let e = err(&format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {{{}: v}}\n",
            "k".repeat(65)
        ));
        assert!(e.contains("`tags`") && e.contains("1 to 64 bytes"), "{e}");
    }

    #[test]
    fn an_oversized_manifest_is_refused_before_parsing() {
        let text = format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\n#{}\n",
            " ".repeat(MAX_MANIFEST_BYTES)
        );
        let e = err(&text);
        assert!(
            e.contains(&format!("at most {MAX_MANIFEST_BYTES} bytes")),
            "{e}"
        );
    }

    #[test]
    fn every_example_manifest_passes_the_budgets() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = parse_manifest(&text) {
                    panic!("{}: {e}", path.display());
                }
            }
        }
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
