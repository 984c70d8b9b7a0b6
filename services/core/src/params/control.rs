//! ControlNet inputs of a job: which registered ControlNets steer its render, each with a control
//! image of the tenant's, a weight and the part of the schedule it acts on.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use super::init::BlobImage;
use super::name::ModelName;
use crate::{Error, Result};

/// How strongly a ControlNet steers (diffusers' `controlnet_conditioning_scale`,
/// AUTOMATIC1111's "Control Weight"): finite, 0 (no effect) to 2; 1 is what it was trained at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ControlWeight(f64);

impl ControlWeight {
    /// Largest weight accepted.
    pub const MAX: f64 = 2.0;

    /// # Errors
    /// `Invalid` when not finite or outside 0..=2.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=Self::MAX).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number from 0 to {}",
                Self::MAX
            )));
        }
        Ok(ControlWeight(v))
    }

    /// The weight.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(ControlWeight, f64);

impl Default for ControlWeight {
    fn default() -> Self {
        ControlWeight(1.0)
    }
}

/// A point of the denoising schedule as a fraction of its steps: finite, 0 (the first step) to 1
/// (after the last).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct StepFraction(f64);

impl StepFraction {
    /// The whole schedule's start.
    pub const START: StepFraction = StepFraction(0.0);
    /// The whole schedule's end.
    pub const END: StepFraction = StepFraction(1.0);

    /// # Errors
    /// `Invalid` when not finite or outside 0..=1.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a fraction of the steps from 0 to 1"
            )));
        }
        Ok(StepFraction(v))
    }

    /// The fraction.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(StepFraction, f64);

impl fmt::Display for StepFraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the worker makes of a control image before the ControlNet reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    /// The image as given: a map the user made (depth, pose, segmentation, edges, a layout).
    #[default]
    None,
    /// Canny edges of the image (thresholds 100 and 200 on the Sobel gradient of its luma, as
    /// AUTOMATIC1111's canny preprocessor): white edges on black, what canny ControlNets read.
    Canny,
}

impl Preprocess {
    /// Its name, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Preprocess::None => "none",
            Preprocess::Canny => "canny",
        }
    }

    fn is_none(&self) -> bool {
        *self == Preprocess::None
    }
}

/// One ControlNet of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlSpec {
    /// The ControlNet's name in the registry (`diffusion.controlnets`, same rules as a model
    /// name), of the job's model's family.
    pub model: ModelName,
    /// The control image: an upload of the batch's tenant, resized to the job's size (as init
    /// images are), its sha256 pinned at submit.
    pub image: BlobImage,
    /// Its weight, 0 to 2; 1 when absent.
    #[serde(default)]
    pub weight: ControlWeight,
    /// Where in the schedule it starts acting, 0 to 1; 0 when absent.
    #[serde(default = "start")]
    pub start: StepFraction,
    /// Where it stops, above `start`, to 1; 1 when absent.
    #[serde(default = "end")]
    pub end: StepFraction,
    /// What the worker makes of the image first: `none` (the default) or `canny`.
    #[serde(default, skip_serializing_if = "Preprocess::is_none")]
    pub preprocess: Preprocess,
}

fn start() -> StepFraction {
    StepFraction::START
}

fn end() -> StepFraction {
    StepFraction::END
}

impl ControlSpec {
    /// Whether it acts on step `i` of `n` (diffusers' `control_guidance_start` / `_end`): from
    /// the step where `i / n` reaches `start` to the last one whose end `(i + 1) / n` is within
    /// `end`.
    pub fn acts_on(&self, i: usize, n: usize) -> bool {
        let n = n.max(1) as f64;
        !((i as f64) / n < self.start.get() || (i as f64 + 1.0) / n > self.end.get())
    }
}

/// The ControlNets of a job, at most [`Controls::MAX`]: their residuals add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Controls(Vec<ControlSpec>);

impl Controls {
    /// Most ControlNets on one job (each is a UNet encoder's pass per step).
    pub const MAX: usize = 4;

    /// # Errors
    /// `Invalid` for more than [`Self::MAX`] entries, or an entry whose `end` is not above its
    /// `start`.
    pub fn new(controls: Vec<ControlSpec>) -> Result<Self> {
        if controls.len() > Self::MAX {
            return Err(Error::invalid(format!(
                "has {} entries; accepted: at most {}",
                controls.len(),
                Self::MAX
            )));
        }
        for (i, c) in controls.iter().enumerate() {
            if c.end.get() <= c.start.get() {
                return Err(Error::invalid(format!(
                    "has entry {i} ending at {} and starting at {}; accepted: `end` above `start`",
                    c.end, c.start
                )));
            }
        }
        Ok(Controls(controls))
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each ControlNet, in the order written.
    pub fn iter(&self) -> std::slice::Iter<'_, ControlSpec> {
        self.0.iter()
    }

    /// [`Self::iter`], to change (e.g. to pin the sha256 of each image).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, ControlSpec> {
        self.0.iter_mut()
    }
}

impl<'de> Deserialize<'de> for Controls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Vec::<ControlSpec>::deserialize(d)?;
        Controls::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Controls> {
        serde_yaml::from_str(yaml).map_err(|e| Error::invalid(e.to_string()))
    }

    #[test]
    fn defaults_are_the_whole_schedule_at_weight_one() {
        let c = spec("[{model: canny, image: {key: inputs/t/a.png}}]").unwrap();
        let c = c.iter().next().unwrap();
        assert_eq!(c.weight.get(), 1.0);
        assert_eq!((c.start.get(), c.end.get()), (0.0, 1.0));
        assert_eq!(c.preprocess, Preprocess::None);
        assert!((0..10).all(|i| c.acts_on(i, 10)));
    }

    #[test]
    fn the_window_is_diffusers_control_guidance_start_and_end() {
        let c = spec("[{model: m, image: {key: k}, start: 0.2, end: 0.6}]").unwrap();
        let c = c.iter().next().unwrap();
        // 10 steps: 0.2 <= i/10 and (i+1)/10 <= 0.6, so steps 2, 3, 4, 5.
        let on: Vec<usize> = (0..10).filter(|&i| c.acts_on(i, 10)).collect();
        assert_eq!(on, vec![2, 3, 4, 5]);
    }

    #[test]
    fn refuses_what_it_cannot_render_naming_what_is_accepted() {
        for (yaml, want) in [
            (
                "[{model: m, image: {key: k}, weight: 2.5}]",
                "accepted: a number from 0 to 2",
            ),
            (
                "[{model: m, image: {key: k}, weight: .nan}]",
                "accepted: a number from 0 to 2",
            ),
            (
                "[{model: m, image: {key: k}, start: -0.1}]",
                "accepted: a fraction of the steps from 0 to 1",
            ),
            (
                "[{model: m, image: {key: k}, start: 0.5, end: 0.5}]",
                "accepted: `end` above `start`",
            ),
            (
                "[{model: m, image: {key: k}, preprocess: depth}]",
                "unknown variant `depth`",
            ),
            (
                "[{model: m, image: {key: k}, strength: 1}]",
                "unknown field",
            ),
        ] {
            let e = spec(yaml).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let five = format!("[{}]", ["{model: m, image: {key: k}}"; 5].join(","));
        let e = spec(&five).unwrap_err().to_string();
        assert!(e.contains("accepted: at most 4"), "{e}");
    }
}
