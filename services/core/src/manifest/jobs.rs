//! A batch's jobs: a manifest's explicit jobs, and its template's cartesian product made job by
//! job when read, so a million-job batch never sits expanded in memory (the scheduler's memory per
//! submit stays the size of the manifest, whatever the job count).

use super::vars::is_var_name;
use crate::keys::derive_seed;
use crate::params::*;

/// One job of a batch.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique within the batch and stable across edits of the rest of the manifest.
    pub key: String,
    /// Everything that decides the pixels.
    pub params: JobParams,
}

/// A part of a template's prompt: literal text or the index of a variable.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Part {
    /// Literal text.
    Text(String),
    /// The value of the variable at this index of [`Template::vars`].
    Var(usize),
}

/// The seeds of each variant and size.
#[derive(Debug, Clone)]
pub(super) enum Seeds {
    /// The same list for every variant.
    Explicit(Vec<Seed>),
    /// `count` seeds derived from `base` and the variant's key ([`derive_seed`]).
    Derived {
        /// The manifest's `seeds.base`.
        base: u64,
        /// The manifest's `seeds.count`.
        count: u32,
    },
}

impl Seeds {
    fn len(&self) -> usize {
        match self {
            Seeds::Explicit(v) => v.len(),
            Seeds::Derived { count, .. } => *count as usize,
        }
    }

    /// The `i`-th seed of the variant and size whose key is `vkey`.
    fn get(&self, vkey: &str, i: usize) -> Seed {
        match self {
            Seeds::Explicit(v) => v[i],
            Seeds::Derived { base, .. } => derive_seed(*base, vkey, i as u32),
        }
    }
}

/// A prompt template's product: every combination of the variables' values (a variant), at
/// every size, with every seed. Job order: variants in odometer order (the last variable
/// fastest), then sizes, then seeds.
#[derive(Debug, Clone)]
pub(super) struct Template {
    /// The prompt, in parts.
    pub(super) parts: Vec<Part>,
    /// The variables by name (sorted) with their values.
    pub(super) vars: Vec<(String, Vec<String>)>,
    /// `(width, height)` of each size.
    pub(super) sizes: Vec<(u32, u32)>,
    /// The seeds of each variant and size.
    pub(super) seeds: Seeds,
    /// What every job shares.
    pub(super) shared: Shared,
}

/// The parameters every job of a template shares: all but prompt, size and seed.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) negative_prompt: NegativePrompt,
    pub(super) steps: StepCount,
    pub(super) guidance: GuidanceScale,
    pub(super) sampler: Sampler,
    pub(super) init: Option<InitSpec>,
    pub(super) hires: Option<HiresSpec>,
    pub(super) loras: super::loras::LoraPlan,
    pub(super) control: Controls,
    pub(super) output: OutputSpec,
}

impl Template {
    /// Jobs of the product (checked against [`super::MAX_JOBS_PER_BATCH`] before one is built).
    pub(super) fn len(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.len()).product::<usize>()
            * self.sizes.len()
            * self.seeds.len()
    }

    /// Seeds per variant and size.
    pub(super) fn seeds_len(&self) -> usize {
        self.seeds.len()
    }

    /// The prompt and the key stem (`name=value,…`) of the variant choosing value `choice[i]`
    /// of each variable `i`.
    pub(super) fn variant(&self, choice: &[usize]) -> (String, String) {
        let mut prompt = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => prompt.push_str(t),
                Part::Var(i) => prompt.push_str(&self.vars[*i].1[choice[*i]]),
            }
        }
        let mut stem = String::new();
        for (i, (name, values)) in self.vars.iter().enumerate() {
            if i > 0 {
                stem.push(',');
            }
            stem.push_str(name);
            stem.push('=');
            stem.push_str(&values[choice[i]]);
        }
        (prompt, stem)
    }

    /// Every variant's choice of values, in job order.
    pub(super) fn choices(&self) -> Choices {
        Choices {
            counts: self.vars.iter().map(|(_, v)| v.len()).collect(),
            next: Some(vec![0; self.vars.len()]),
        }
    }
}

/// The odometer over a template's variants.
pub(super) struct Choices {
    counts: Vec<usize>,
    next: Option<Vec<usize>>,
}

impl Iterator for Choices {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let now = self.next.take()?;
        let mut after = now.clone();
        for i in (0..after.len()).rev() {
            after[i] += 1;
            if after[i] < self.counts[i] {
                self.next = Some(after);
                return Some(now);
            }
            after[i] = 0;
        }
        Some(now)
    }
}

/// The jobs of a batch. Reading them ([`Jobs::iter`]) builds each job as it goes.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    /// The template's product, whose prompts [`super::parse_manifest`] checked.
    template: Option<Template>,
    /// The explicit jobs, after the template's.
    explicit: Vec<JobSpec>,
}

impl Jobs {
    /// A template's product (its every variant's prompt checked by the caller) and explicit jobs.
    pub(super) fn new(template: Option<Template>, explicit: Vec<JobSpec>) -> Self {
        Jobs { template, explicit }
    }

    /// How many jobs there are.
    pub fn len(&self) -> usize {
        self.template.as_ref().map_or(0, Template::len) + self.explicit.len()
    }

    /// No jobs at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every job, in manifest order (the template's product first), each built when reached.
    pub fn iter(&self) -> impl Iterator<Item = JobSpec> + '_ {
        let template = self.template.iter().flat_map(|t| {
            t.choices().flat_map(move |choice| {
                let (prompt, stem) = t.variant(&choice);
                // Checked for every variant by the manifest's expansion, which built this template.
                let prompt = Prompt::checked(prompt);
                let loras = t.shared.loras.checked(&choice);
                t.sizes.iter().flat_map(move |&(width, height)| {
                    let vkey = format!("{stem}@{width}x{height}");
                    let prompt = prompt.clone();
                    let loras = loras.clone();
                    (0..t.seeds.len()).map(move |i| JobSpec {
                        key: format!("{vkey}#{i}"),
                        params: JobParams {
                            prompt: prompt.clone(),
                            negative_prompt: t.shared.negative_prompt.clone(),
                            width,
                            height,
                            steps: t.shared.steps,
                            guidance: t.shared.guidance,
                            sampler: t.shared.sampler,
                            seed: t.seeds.get(&vkey, i),
                            init: t.shared.init.clone(),
                            hires: t.shared.hires,
                            loras: loras.clone(),
                            control: t.shared.control.clone(),
                            output: t.shared.output,
                        },
                    })
                })
            })
        });
        template.chain(self.explicit.iter().cloned())
    }

    /// The template's axes, when the manifest has a prompt template: each variable with its
    /// values (by name), the sizes and the seeds per variant and size.
    pub fn product(&self) -> Option<Product<'_>> {
        self.template.as_ref().map(|t| Product {
            vars: t
                .vars
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
            sizes: &t.sizes,
            seeds: t.seeds.len(),
        })
    }

    /// Jobs listed one by one (`jobs:`), after the template's.
    pub fn explicit(&self) -> usize {
        self.explicit.len()
    }

    /// Every init section of the jobs, once per section (the template's jobs share one), to
    /// change (e.g. to pin the sha256 of an input on every job using it).
    pub fn inits_mut(&mut self) -> impl Iterator<Item = &mut InitSpec> {
        self.template
            .iter_mut()
            .filter_map(|t| t.shared.init.as_mut())
            .chain(
                self.explicit
                    .iter_mut()
                    .filter_map(|j| j.params.init.as_mut()),
            )
    }

    /// Every control section of the jobs, once per section (the template's jobs share one), to
    /// change (e.g. to pin the sha256 of each control image).
    pub fn controls_mut(&mut self) -> impl Iterator<Item = &mut Controls> {
        self.template
            .iter_mut()
            .map(|t| &mut t.shared.control)
            .chain(self.explicit.iter_mut().map(|j| &mut j.params.control))
    }

    /// Every input image of the jobs — init images, masks, control images — once per section
    /// that names it, with the manifest field it is under.
    pub fn input_images(&self) -> impl Iterator<Item = (&'static str, &BlobImage)> {
        let shared = self
            .template
            .iter()
            .map(|t| (&t.shared.init, &t.shared.control));
        let explicit = self
            .explicit
            .iter()
            .map(|j| (&j.params.init, &j.params.control));
        shared.chain(explicit).flat_map(|(init, control)| {
            let init = init.iter().flat_map(|i| {
                std::iter::once(("init.image", &i.image))
                    .chain(i.mask.as_ref().map(|m| ("init.mask", m)))
            });
            init.chain(control.iter().map(|c| ("control.image", &c.image)))
        })
    }

    /// [`Jobs::input_images`], to change (e.g. to replace the embedded mode's file names by the
    /// keys of their uploads).
    pub fn input_images_mut(&mut self) -> impl Iterator<Item = &mut BlobImage> {
        let shared = self
            .template
            .iter_mut()
            .map(|t| (&mut t.shared.init, &mut t.shared.control));
        let explicit = self
            .explicit
            .iter_mut()
            .map(|j| (&mut j.params.init, &mut j.params.control));
        shared.chain(explicit).flat_map(|(init, control)| {
            init.iter_mut()
                .flat_map(InitSpec::images_mut)
                .chain(control.iter_mut().map(|c| &mut c.image))
        })
    }

    /// Every output section of the jobs, once per section (the template's jobs share one), to
    /// change (e.g. to apply the tenant's content-credentials setting).
    pub fn outputs_mut(&mut self) -> impl Iterator<Item = &mut OutputSpec> {
        self.template
            .iter_mut()
            .map(|t| &mut t.shared.output)
            .chain(self.explicit.iter_mut().map(|j| &mut j.params.output))
    }
}

impl From<Vec<JobSpec>> for Jobs {
    /// Jobs given one by one (tools and tests).
    fn from(explicit: Vec<JobSpec>) -> Self {
        Jobs {
            template: None,
            explicit,
        }
    }
}

/// A template's product as [`Jobs::product`] gives it: jobs = the product of the variables'
/// value counts × sizes × seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product<'a> {
    /// Each variable by name (sorted) with its values.
    pub vars: Vec<(&'a str, &'a [String])>,
    /// `(width, height)` of each size.
    pub sizes: &'a [(u32, u32)],
    /// Seeds per variant and size.
    pub seeds: usize,
}

/// The variables of a template job, from its key `name=value,…@WxH#i` (names in sorted order)
/// and its size; `None` for a key of another form (an explicit job's). A value that holds
/// `,name=` with a later variable's name is read as that variable's start.
pub fn key_vars(key: &str, width: u32, height: u32) -> Option<Vec<(&str, &str)>> {
    let (rest, index) = key.rsplit_once('#')?;
    let (stem, size) = rest.rsplit_once('@')?;
    let size_matches = size
        .split_once('x')
        .is_some_and(|(w, h)| w == width.to_string() && h == height.to_string());
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || !size_matches {
        return None;
    }
    let (mut name, mut rest) = stem.split_once('=').filter(|(n, _)| is_var_name(n))?;
    let mut vars = Vec::new();
    loop {
        let next = rest.match_indices(',').find_map(|(i, _)| {
            let (n, value) = rest[i + 1..].split_once('=')?;
            (is_var_name(n) && n > name).then_some((i, n, value))
        });
        match next {
            Some((i, n, after)) => {
                vars.push((name, &rest[..i]));
                (name, rest) = (n, after);
            }
            None => {
                vars.push((name, rest));
                return Some(vars);
            }
        }
    }
}
