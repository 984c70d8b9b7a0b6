//! Grading a model through the production engine: render prompts × seeds with the registry, the
//! samplers, guidance and job seeds every worker uses, and grade each image with the [`checker`].
//!
//! [`checker`]: crate::checker

use pixelfarm_core::{
    GuidanceScale, JobParams, LoraSpec, LoraWeight, Loras, ModelName, NegativePrompt, Prompt,
    RenderControl, Renderer, Result, RgbImage, Sampler, Seed, StepCount,
};

use crate::checker::{Verdict, check};
use crate::data::{Attributes, Color, SIDE};

/// How the gate renders: the shipped defaults.
#[derive(Debug, Clone, Copy)]
pub struct RenderSettings {
    /// Denoising steps.
    pub steps: u32,
    /// Guidance scale.
    pub guidance: f64,
    /// Sampler.
    pub sampler: Sampler,
    /// The weight of the shipped LoRA ([`crate::export::LORA_NAME`]) on every job; `None`: the
    /// base model alone.
    pub lora: Option<f64>,
}

impl Default for RenderSettings {
    /// The `shapes` family's defaults with the sampler of the example manifest.
    fn default() -> Self {
        let d = pixelfarm_diffusion::Family::Shapes.defaults();
        RenderSettings {
            steps: d.steps,
            guidance: d.guidance,
            sampler: DEFAULT_SAMPLER,
            lora: None,
        }
    }
}

/// The sampler the example manifest and the quality gate use. Euler ancestral: on validation seeds
/// it drew more squares than the deterministic samplers, at some cost in held-out pairs
/// (models/shapes/MODEL_CARD.md, "Defaults").
pub const DEFAULT_SAMPLER: Sampler = Sampler::EulerA;

/// The job for `attrs` with `seed`.
///
/// # Errors
/// `Invalid` only for settings out of the accepted ranges.
pub fn job(attrs: &Attributes, seed: u64, s: RenderSettings) -> Result<JobParams> {
    Ok(JobParams {
        prompt: Prompt::parse(attrs.caption())?,
        negative_prompt: NegativePrompt::parse("")?,
        width: SIDE as u32,
        height: SIDE as u32,
        steps: StepCount::parse(s.steps)?,
        guidance: GuidanceScale::parse(s.guidance)?,
        sampler: s.sampler,
        seed: Seed::parse(seed)?,
        init: None,
        hires: None,
        loras: match s.lora {
            None => Loras::default(),
            Some(w) => Loras::new(vec![LoraSpec {
                name: ModelName::parse(crate::export::LORA_NAME)?,
                weight: LoraWeight::parse(w)?,
            }])?,
        },
        control: Default::default(),
        output: Default::default(),
    })
}

/// One graded image.
#[derive(Debug, Clone)]
pub struct Graded {
    #[allow(missing_docs)]
    pub attrs: Attributes,
    #[allow(missing_docs)]
    pub seed: u64,
    #[allow(missing_docs)]
    pub verdict: Verdict,
    #[allow(missing_docs)]
    pub image: RgbImage,
}

/// Render every prompt with every seed through `renderer` and grade it.
///
/// # Errors
/// What the renderer returns.
pub fn grade(
    renderer: &dyn Renderer,
    model: &ModelName,
    prompts: &[Attributes],
    seeds: &[u64],
    s: RenderSettings,
) -> Result<Vec<Graded>> {
    let mut jobs = Vec::new();
    let mut keys = Vec::new();
    for a in prompts {
        for &seed in seeds {
            jobs.push(job(a, seed, s)?);
            keys.push((*a, seed));
        }
    }
    let controls: Vec<RenderControl> = jobs.iter().map(|_| RenderControl::new()).collect();
    let images = renderer.render_batch(model, &jobs, &controls);
    keys.into_iter()
        .zip(images)
        .map(|((attrs, seed), img)| {
            let image = img?.image;
            Ok(Graded {
                attrs,
                seed,
                verdict: check(&image.rgb, &attrs),
                image,
            })
        })
        .collect()
}

/// Share of images matching, for seen and held-out combinations: `(matched, total)` each.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accuracy {
    /// Combinations shown in training.
    pub seen: (usize, usize),
    /// Held-out combinations.
    pub held_out: (usize, usize),
}

impl Accuracy {
    /// Tally `graded` with `pass` deciding a match.
    pub fn of(graded: &[Graded], pass: impl Fn(&Verdict) -> bool) -> Self {
        let mut acc = Accuracy::default();
        for g in graded {
            let slot = if g.attrs.held_out() {
                &mut acc.held_out
            } else {
                &mut acc.seen
            };
            slot.1 += 1;
            slot.0 += usize::from(pass(&g.verdict));
        }
        acc
    }

    /// Seen accuracy in 0..=1.
    pub fn seen_rate(&self) -> f64 {
        self.seen.0 as f64 / self.seen.1.max(1) as f64
    }

    /// Held-out accuracy in 0..=1.
    pub fn held_out_rate(&self) -> f64 {
        self.held_out.0 as f64 / self.held_out.1.max(1) as f64
    }
}

/// The quality gate's fixed prompts: `(seen, held_out)`, every shape, colour and size on both sides.
pub fn gate_prompts() -> (Vec<Attributes>, Vec<Attributes>) {
    let p = |s: &str| Attributes::parse(s).expect("a gate caption");
    let seen = [
        "a large red circle on a blue background",
        "a small green triangle on a white background",
        "a large blue square on a yellow background",
        "a small yellow circle on a black background",
        "a large white triangle on a green background",
        "a small black square on a red background",
        "a small red square on a white background",
        "a large green circle on a black background",
        "a small blue triangle on a yellow background",
        "a large yellow square on a blue background",
        "a small white square on a black background",
        "a large black triangle on a white background",
    ];
    let held_out = [
        "a large red triangle on a blue background",
        "a small red triangle on a white background",
        "a large green square on a black background",
        "a small green square on a yellow background",
        "a large blue circle on a white background",
        "a small blue circle on a yellow background",
        "a large white circle on a red background",
        "a small white circle on a black background",
    ];
    (
        seen.iter().map(|s| p(s)).collect(),
        held_out.iter().map(|s| p(s)).collect(),
    )
}

/// The quality gate's seeds.
pub const GATE_SEEDS: [u64; 3] = [1, 2, 3];

/// Which prompts a [`report`] grades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompts {
    /// The quality gate's ([`gate_prompts`]).
    Gate,
    /// Every combination of the base model's colours.
    All,
    /// Every combination with a new colour ([`Attributes::with_color`]).
    Color(Color),
}

impl Prompts {
    /// The prompts.
    pub fn list(self) -> Vec<Attributes> {
        match self {
            Prompts::Gate => {
                let (a, b) = gate_prompts();
                a.into_iter().chain(b).collect()
            }
            Prompts::All => Attributes::all(),
            Prompts::Color(c) => Attributes::with_color(c),
        }
    }
}

/// An accuracy table in Markdown and a contact sheet of the graded images.
pub struct Report {
    /// Markdown: overall seen / held-out, then per shape, colour and size, then every miss with
    /// what the checker found (shape, fill of the bounding box, area).
    pub table: String,
    /// 64 images with their verdicts, the misses first.
    pub sheet: RgbImage,
}

/// Grade the model in `models/shapes` on `prompts` × `seeds`.
///
/// # Errors
/// What loading and rendering return.
pub fn report(
    models: &std::path::Path,
    seeds: &[u64],
    prompts: Prompts,
    s: RenderSettings,
    device: pixelfarm_diffusion::registry::DeviceChoice,
) -> Result<Report> {
    let mut cfg = crate::shipped_registry(models)?;
    cfg.device = device;
    let engine = pixelfarm_diffusion::DiffusionEngine::new(cfg)?;
    let model = ModelName::parse(crate::MODEL_NAME)?;
    let prompts = prompts.list();
    let start = std::time::Instant::now();
    let graded = grade(&engine, &model, &prompts, seeds, s)?;
    let secs = start.elapsed().as_secs_f64();
    let pct =
        |(m, n): (usize, usize)| format!("{m}/{n} ({:.1} %)", 100.0 * m as f64 / n.max(1) as f64);
    let mut table = format!(
        "{} images, {} steps, guidance {}, sampler {}, LoRA {}, {:.2} s per image\n\n\
         | check | seen | held-out |\n|---|---|---|\n",
        graded.len(),
        s.steps,
        s.guidance,
        s.sampler.as_str(),
        s.lora.map_or("none".to_string(), |w| {
            format!("{} at {w}", crate::export::LORA_NAME)
        }),
        secs / graded.len().max(1) as f64
    );
    type Row = (&'static str, fn(&Verdict) -> bool);
    let rows: [Row; 5] = [
        ("**all of shape, colour, background**", Verdict::matches),
        ("background colour", |v| v.background_ok),
        ("shape colour", |v| v.color_ok),
        ("shape", |v| v.shape_ok),
        ("size (not gated)", |v| v.size_ok),
    ];
    for (name, f) in rows {
        let a = Accuracy::of(&graded, f);
        table.push_str(&format!(
            "| {name} | {} | {} |\n",
            pct(a.seen),
            pct(a.held_out)
        ));
    }
    table.push_str("\n| prompt group | matched |\n|---|---|\n");
    let mut group = |name: String, keep: &dyn Fn(&Attributes) -> bool| {
        let sel: Vec<&Graded> = graded.iter().filter(|g| keep(&g.attrs)).collect();
        if sel.is_empty() {
            return;
        }
        let m = sel.iter().filter(|g| g.verdict.matches()).count();
        table.push_str(&format!("| {name} | {} |\n", pct((m, sel.len()))));
    };
    for sh in crate::data::Shape::ALL {
        group(sh.word().to_string(), &|a| a.shape == sh);
    }
    for c in Color::EVERY {
        group(format!("{} shape", c.word()), &|a| a.color == c);
    }
    for c in Color::EVERY {
        group(format!("{} background", c.word()), &|a| a.background == c);
    }
    for (sh, c) in crate::data::HELD_OUT {
        group(format!("held out: {} {}", c.word(), sh.word()), &|a| {
            a.shape == sh && a.color == c
        });
    }
    let misses: Vec<&Graded> = graded.iter().filter(|g| !g.verdict.matches()).collect();
    if !misses.is_empty() {
        table.push_str("\n| miss | seed | found | fill | area |\n|---|---|---|---|---|\n");
        for g in &misses {
            let v = &g.verdict;
            let found = match (v.background_ok, v.shape) {
                (false, _) => format!(
                    "background {}",
                    v.background.map_or("unclear", |c| c.word())
                ),
                (true, None) => "no region of the colour".to_string(),
                (true, Some(sh)) => sh.word().to_string(),
            };
            table.push_str(&format!(
                "| {} | {} | {found} | {:.3} | {} |\n",
                g.attrs.caption(),
                g.seed,
                v.fill,
                v.area
            ));
        }
    }
    // The misses first, so the sheet shows what went wrong.
    let items: Vec<(RgbImage, String)> = misses
        .iter()
        .copied()
        .chain(graded.iter().filter(|g| g.verdict.matches()))
        .take(64)
        .map(|g| {
            let mark = if g.verdict.matches() { "ok" } else { "miss" };
            (g.image.clone(), format!("{} {}", mark, g.attrs.caption()))
        })
        .collect();
    Ok(Report {
        table,
        sheet: crate::contact_sheet(&items),
    })
}

/// Of the clean shapes that [`renoise`] noised to one strength, how many stayed what they were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Renoised {
    /// The img2img strength: the share of the schedule's steps run.
    pub strength: f64,
    /// Images the checker still matches to their caption.
    pub matched: usize,
    /// Images rendered.
    pub total: usize,
    /// Mean share of its bounding box the shape's region fills.
    pub mean_fill: f64,
}

/// The low-noise end of sampling alone: the generator's own image of every seen combination of
/// `shape` × `per_combination` random placements (seed 77), noised to each of `strengths` and
/// denoised through the engine's img2img at the settings `s` (job seeds 100, 101, …), then graded.
/// A model that blurs what it is given at low noise loses shapes here even though they start
/// perfect.
///
/// # Errors
/// What the renderer returns.
pub fn renoise(
    renderer: &dyn Renderer,
    model: &ModelName,
    shape: crate::data::Shape,
    per_combination: usize,
    strengths: &[f64],
    s: RenderSettings,
) -> Result<Vec<Renoised>> {
    let mut rng = pixelfarm_diffusion::JobRng::new(77);
    let specs: Vec<(Attributes, crate::data::Spec)> = Attributes::all()
        .into_iter()
        .filter(|a| a.shape == shape && !a.held_out())
        .flat_map(|a| std::iter::repeat_n(a, per_combination))
        .map(|a| (a, crate::data::Spec::random(a, &mut rng)))
        .collect();
    strengths
        .iter()
        .map(|&strength| {
            let mut out = Renoised {
                strength,
                matched: 0,
                total: specs.len(),
                mean_fill: 0.0,
            };
            for (i, (a, spec)) in specs.iter().enumerate() {
                let input = pixelfarm_core::ImageInput {
                    init: RgbImage {
                        width: SIDE as u32,
                        height: SIDE as u32,
                        rgb: spec.render(),
                    },
                    strength,
                    mask: None,
                };
                let params = job(a, 100 + i as u64, s)?;
                let rendered =
                    renderer.render_from(model, &params, &input.into(), &RenderControl::new())?;
                let v = check(&rendered.image.rgb, a);
                out.matched += usize::from(v.matches());
                out.mean_fill += v.fill / specs.len() as f64;
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_prompts_are_seen_or_held_out_as_labelled() {
        let (seen, held) = gate_prompts();
        assert!(seen.iter().all(|a| !a.held_out()));
        assert!(held.iter().all(|a| a.held_out()));
        for a in seen.iter().chain(&held) {
            assert_ne!(a.color, a.background);
        }
    }
}
