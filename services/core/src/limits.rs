//! What a model accepts: the bounds of a job, checked before its render starts.

use serde::{Deserialize, Serialize};

use crate::{Error, JobParams, ModelName, Result};

/// Bounds of the jobs one model renders (the worker registry's `limits`, defaults from the
/// model's family). Each bounds the memory or the time one job may take from the jobs beside it
/// on its worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLimits {
    /// Widest render in pixels.
    pub max_width: u32,
    /// Tallest render in pixels.
    pub max_height: u32,
    /// Most denoising steps.
    pub max_steps: u32,
    /// Longest side of the delivered image (`output.resize`): the post-processing holds it as
    /// floats (an 8192² sharpened output took about 2 GB).
    pub max_output_side: u32,
    /// Most jobs of this model in one renderer call (the worker's micro-batch).
    pub max_batch: usize,
    /// The LoRAs its jobs may name: those of its family in the worker registry. `None` when the
    /// worker did not say (a renderer without LoRAs, an older worker): nothing is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loras: Option<Vec<ModelName>>,
    /// The ControlNets its jobs may name: those of its family in the worker registry. `None`
    /// when the worker did not say: nothing is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlnets: Option<Vec<ModelName>>,
}

impl ModelLimits {
    /// Whether `params` are within the limits of `model`.
    ///
    /// # Errors
    /// `Invalid` naming the first parameter over its limit, the limit and where it is set.
    pub fn check(&self, model: &ModelName, params: &JobParams) -> Result<()> {
        let over = |field: &str, value: u32, max: u32| {
            Error::invalid(format!(
                "`{field}` is {value}; accepted for model `{model}`: at most {max} (the worker registry's `limits`)"
            ))
        };
        if params.width > self.max_width {
            return Err(over("width", params.width, self.max_width));
        }
        if params.height > self.max_height {
            return Err(over("height", params.height, self.max_height));
        }
        if params.steps.get() > self.max_steps {
            return Err(over("steps", params.steps.get(), self.max_steps));
        }
        if let Some(h) = &params.hires {
            let (w, hh) = h.size(params.width, params.height)?;
            if w > self.max_width {
                return Err(over("hires.scale: the refined width", w, self.max_width));
            }
            if hh > self.max_height {
                return Err(over("hires.scale: the refined height", hh, self.max_height));
            }
            let steps = h.steps_for(params.steps).get();
            if steps > self.max_steps {
                return Err(over("hires.steps", steps, self.max_steps));
            }
        }
        let delivery = match (params.output.resize, params.output.upscale) {
            (Some(_), _) => Some("output.resize"),
            (None, Some(_)) => Some("output.upscale: the delivered side"),
            (None, None) => None,
        };
        if let Some(field) = delivery {
            let (w, h) = params.delivered_size()?;
            if w.max(h) > self.max_output_side {
                return Err(over(field, w.max(h), self.max_output_side));
            }
        }
        let loras = params.loras.iter().map(|l| &l.name);
        registered(
            model,
            "loras[{i}].name",
            "loras",
            self.loras.as_deref(),
            loras,
        )?;
        let controls = params.control.iter().map(|c| &c.model);
        let known = self.controlnets.as_deref();
        registered(model, "control[{i}].model", "controlnets", known, controls)?;
        Ok(())
    }
}

/// Whether each of `names` (the job's field `field`, `{i}` standing for its index) is one of
/// `known`, the worker registry's `registry` entries of `model`'s family; `None` checks nothing.
fn registered<'a>(
    model: &ModelName,
    field: &str,
    registry: &str,
    known: Option<&[ModelName]>,
    names: impl Iterator<Item = &'a ModelName>,
) -> Result<()> {
    let Some(known) = known else { return Ok(()) };
    for (i, name) in names.enumerate() {
        if !known.contains(name) {
            let names: Vec<&str> = known.iter().map(ModelName::as_str).collect();
            let field = field.replace("{i}", &i.to_string());
            return Err(Error::invalid(format!(
                "`{field}` is `{name}`; accepted for model `{model}`: {} (the worker registry's `{registry}` of its family)",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::*;

    /// A hires fix doubling each side, refined in `steps` (the job's when `None`).
    fn doubled(steps: Option<u32>) -> Option<HiresSpec> {
        Some(HiresSpec {
            scale: ScaleFactor::parse(2.0).unwrap(),
            steps: steps.map(|s| StepCount::parse(s).unwrap()),
            strength: Strength::parse(0.5).unwrap(),
            upscaler: Upscaler::Lanczos,
        })
    }

    #[test]
    fn each_bound_is_named_when_exceeded() {
        let limits = ModelLimits {
            max_width: 512,
            max_height: 256,
            max_steps: 50,
            max_output_side: 1024,
            max_batch: 4,
            loras: Some(vec![ModelName::parse("brand").unwrap()]),
            controlnets: Some(vec![ModelName::parse("canny").unwrap()]),
        };
        let model = ModelName::parse("sd15").unwrap();
        let base = JobParams {
            prompt: Prompt::parse("a red circle").unwrap(),
            negative_prompt: NegativePrompt::default(),
            width: 512,
            height: 256,
            steps: StepCount::parse(50).unwrap(),
            guidance: GuidanceScale::parse(7.5).unwrap(),
            sampler: Sampler::Euler,
            seed: Seed::parse(1).unwrap(),
            init: None,
            hires: None,
            loras: Default::default(),
            control: Default::default(),
            output: OutputSpec {
                resize: Some(Resize {
                    width: OutputSide::parse(1024).unwrap(),
                    height: OutputSide::parse(16).unwrap(),
                    fit: Fit::Cover,
                }),
                ..Default::default()
            },
        };
        limits.check(&model, &base).unwrap();
        type Change = fn(&mut JobParams);
        let mut small = base.clone();
        (small.width, small.height, small.hires) = (256, 128, doubled(Some(50)));
        limits.check(&model, &small).unwrap();
        let cases: [(&str, Change); 10] = [
            ("`width` is 520", |p| p.width = 520),
            ("`height` is 264", |p| p.height = 264),
            ("`steps` is 51", |p| p.steps = StepCount::parse(51).unwrap()),
            ("`hires.scale: the refined width` is 768", |p| {
                (p.width, p.height, p.hires) = (384, 128, doubled(None));
            }),
            ("`hires.scale: the refined height` is 384", |p| {
                (p.width, p.height, p.hires) = (128, 192, doubled(None));
            }),
            ("`hires.steps` is 51", |p| {
                (p.width, p.height, p.hires) = (128, 64, doubled(Some(51)));
            }),
            ("`output.resize` is 1025", |p| {
                p.output.resize.as_mut().unwrap().height = OutputSide::parse(1025).unwrap()
            }),
            ("`output.upscale: the delivered side` is 1280", |p| {
                p.output.resize = None;
                p.output.upscale = Some(ScaleFactor::parse(2.5).unwrap());
            }),
            (
                "`loras[1].name` is `other`; accepted for model `sd15`: brand",
                |p| {
                    let spec = |n: &str| LoraSpec {
                        name: ModelName::parse(n).unwrap(),
                        weight: LoraWeight::parse(1.0).unwrap(),
                    };
                    p.loras = Loras::new(vec![spec("brand"), spec("other")]).unwrap();
                },
            ),
            (
                "`control[0].model` is `depth`; accepted for model `sd15`: canny (the worker registry's `controlnets` of its family)",
                |p| {
                    let yaml = "[{model: depth, image: {key: k}}]";
                    p.control = serde_yaml::from_str(yaml).unwrap();
                },
            ),
        ];
        for (want, change) in cases {
            let mut p = base.clone();
            change(&mut p);
            let e = limits.check(&model, &p).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid);
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.to_string().contains("model `sd15`"), "{e}");
        }
    }
}
