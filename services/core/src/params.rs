//! Parse, don't validate: every job parameter is a newtype that can only hold an accepted value.//!
//! Here: the text, sampling and routing parameters and [`JobParams`]; `size` holds the render's
//! [`ImageSize`] and [`StepCount`], `init` the img2img / inpainting input ([`InitSpec`]), `hires`
//! the hires fix ([`HiresSpec`]), `lora` the adapters ([`Loras`]), `output` the post-processing and file format ([`OutputSpec`]).

mod control;
mod deserialize;
mod hires;
mod init;
mod lora;
mod name;
mod output;
mod size;

pub use control::{ControlSpec, ControlWeight, Controls, Preprocess, StepFraction};
pub use hires::{HiresSpec, ScaleFactor, Upscaler};
pub use init::{BlobImage, InitSpec, Strength};
pub use lora::{LoraSpec, LoraWeight, Loras};
pub use name::ModelName;
pub use output::{Fit, ImageFormat, Level, OutputSide, OutputSpec, Quality, Resize};
pub use size::{ImageSize, StepCount};

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

use crate::text::TextKind;
use crate::{Error, Result};
use deserialize::deserialize_via_parse;

/// A non-empty prompt of at most [`Prompt::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Prompt(String);

impl Prompt {
    /// Longest accepted prompt, in characters.
    pub const MAX_CHARS: usize = 2000;

    /// # Errors
    /// `Invalid` when empty (after trimming), longer than [`Prompt::MAX_CHARS`], or holding a
    /// character the text policy refuses ([`crate::text::check`], [`TextKind::Prose`]).
    pub fn parse(s: impl Into<String>) -> Result<Self> {
        let s: String = s.into();
        if s.trim().is_empty() {
            return Err(Error::invalid("must be a non-empty string"));
        }
        Self::check_text(&s)?;
        Ok(Prompt(s))
    }

    /// A prompt whose text [`Prompt::parse`] accepted before (a manifest template's variant,
    /// built again when its jobs are read).
    pub(crate) fn checked(s: String) -> Self {
        Prompt(s)
    }

    fn check_text(s: &str) -> Result<()> {
        Self::check_len(s)?;
        crate::text::check(s, TextKind::Prose)
    }

    fn check_len(s: &str) -> Result<()> {
        let n = s.chars().count();
        if n > Self::MAX_CHARS {
            return Err(Error::invalid(format!(
                "is {n} characters long; at most {} are accepted",
                Self::MAX_CHARS
            )));
        }
        Ok(())
    }

    /// The prompt text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(Prompt, String);

/// A negative prompt: like [`Prompt`] but may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct NegativePrompt(String);

impl NegativePrompt {
    /// # Errors
    /// `Invalid` when longer than [`Prompt::MAX_CHARS`] or holding a character the text policy
    /// refuses.
    pub fn parse(s: impl Into<String>) -> Result<Self> {
        let s: String = s.into();
        Prompt::check_text(&s)?;
        Ok(NegativePrompt(s))
    }

    /// The text (possibly empty).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(NegativePrompt, String);

/// A generation seed. Limited to 53 bits so it survives JSON numbers in every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Seed(u64);

impl Seed {
    /// Largest accepted seed (2^53 - 1).
    pub const MAX: u64 = (1 << 53) - 1;

    /// # Errors
    /// `Invalid` above [`Seed::MAX`].
    pub fn parse(v: u64) -> Result<Self> {
        if v > Self::MAX {
            return Err(Error::invalid(format!(
                "is {v}; seeds must be between 0 and {} (2^53 - 1)",
                Self::MAX
            )));
        }
        Ok(Seed(v))
    }

    /// The seed's value.
    pub fn get(self) -> u64 {
        self.0
    }
}
deserialize_via_parse!(Seed, u64);

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Classifier-free guidance scale, finite, 0 to 50 (no guidance at 1 or less: [`Self::guides`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct GuidanceScale(f64);

impl GuidanceScale {
    /// # Errors
    /// `Invalid` when not finite or outside 0..=50.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=50.0).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number from 0 to 50"
            )));
        }
        Ok(GuidanceScale(v))
    }

    /// The scale.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether guidance applies: above 1. At 1 the guided prediction is the conditional one, so
    /// the unconditional pass would be wasted; below 1 counts as no guidance too.
    pub fn guides(self) -> bool {
        self.0 > 1.0
    }
}
deserialize_via_parse!(GuidanceScale, f64);

/// The sampler (scheduler, in diffusers' words) used for denoising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampler {
    /// DDIM, deterministic (eta = 0).
    Ddim,
    /// Euler (Karras et al. discretisation of the probability-flow ODE).
    Euler,
    /// Euler ancestral (adds fresh noise each step from the job's own generator).
    EulerA,
    /// DPM-Solver++(2M) with Karras sigmas.
    Dpmpp2m,
    /// DPM-Solver++(2M) SDE with Karras sigmas: second order, with fresh noise each step from the
    /// job's own generator (k-diffusion's `dpmpp_2m_sde`, eta 1, midpoint).
    Dpmpp2mSde,
}

impl Sampler {
    /// Every accepted sampler, in the order shown in error messages.
    pub const ALL: [Sampler; 5] = [
        Sampler::Ddim,
        Sampler::Euler,
        Sampler::EulerA,
        Sampler::Dpmpp2m,
        Sampler::Dpmpp2mSde,
    ];

    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Sampler::Ddim => "ddim",
            Sampler::Euler => "euler",
            Sampler::EulerA => "euler_a",
            Sampler::Dpmpp2m => "dpmpp_2m",
            Sampler::Dpmpp2mSde => "dpmpp_2m_sde",
        }
    }

    /// # Errors
    /// `Invalid` naming the accepted samplers.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|x| x.as_str()).collect();
                Error::invalid(format!("is `{s}`; accepted: {}", names.join(", ")))
            })
    }
}

impl Serialize for Sampler {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sampler {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Sampler::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// In the API's JSON schema: one of the names of [`Sampler::ALL`], as serialized.
impl utoipa::PartialSchema for Sampler {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(Sampler::ALL.map(Sampler::as_str)))
            .into()
    }
}

impl ToSchema for Sampler {}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Batch priority, 0 (lowest) to 9; higher is dispatched first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema,
)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// # Errors
    /// `Invalid` above 9.
    pub fn parse(v: u8) -> Result<Self> {
        if v > 9 {
            return Err(Error::invalid(format!(
                "is {v}; accepted: 0 (lowest) to 9 (highest)"
            )));
        }
        Ok(Priority(v))
    }

    /// The value.
    pub fn get(self) -> u8 {
        self.0
    }
}
deserialize_via_parse!(Priority, u8);

/// Everything that decides a job's pixels (with the model identity and the renderer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobParams {
    /// The expanded prompt.
    pub prompt: Prompt,
    /// What to steer away from; empty for none.
    #[serde(default)]
    pub negative_prompt: NegativePrompt,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Denoising steps.
    pub steps: StepCount,
    /// Guidance scale.
    pub guidance: GuidanceScale,
    /// Sampler.
    pub sampler: Sampler,
    /// The job's own seed.
    pub seed: Seed,
    /// img2img / inpainting input; absent for txt2img.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<InitSpec>,
    /// Hires fix: the render enlarged and refined; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hires: Option<HiresSpec>,
    /// LoRA adapters applied to the model, each at its weight; absent for none.
    #[serde(default, skip_serializing_if = "Loras::is_empty")]
    pub loras: Loras,
    /// ControlNets steering the render, each with its control image; absent for none.
    #[serde(default, skip_serializing_if = "Controls::is_empty")]
    pub control: Controls,
    /// Post-processing and file format; absent for the default (PNG of the rendered pixels).
    #[serde(default, skip_serializing_if = "OutputSpec::is_default")]
    pub output: OutputSpec,
}

impl JobParams {
    /// The validated size.
    ///
    /// # Errors
    /// `Invalid` if the stored width/height are not an accepted size (only for rows written by hand).
    pub fn size(&self) -> Result<ImageSize> {
        ImageSize::new(self.width, self.height)
    }

    /// The size the renderer delivers: `width x height`, or what the hires fix enlarges it to.
    ///
    /// # Errors
    /// As [`HiresSpec::size`] (only for rows written by hand: manifests are checked).
    pub fn render_size(&self) -> Result<(u32, u32)> {
        match &self.hires {
            Some(h) => h.size(self.width, self.height),
            None => Ok((self.width, self.height)),
        }
    }

    /// The size of the stored image: `output.resize`, or the rendered size times
    /// `output.upscale`, or the rendered size.
    ///
    /// # Errors
    /// As [`Self::render_size`] and [`OutputSpec::delivered`] (only for rows written by hand:
    /// manifests are checked).
    pub fn delivered_size(&self) -> Result<(u32, u32)> {
        let (w, h) = self.render_size()?;
        self.output.delivered(w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_multiples_of_eight() {
        assert!(ImageSize::new(64, 64).is_ok());
        let e = ImageSize::new(65, 64).unwrap_err();
        assert!(e.to_string().contains("width is 65"), "{e}");
        assert!(
            ImageSize::new(64, 0)
                .unwrap_err()
                .to_string()
                .contains("height")
        );
        assert!(ImageSize::new(8192, 8).is_err());
    }

    #[test]
    fn prompt_rejects_blank_and_huge() {
        assert!(Prompt::parse("  ").is_err());
        assert!(Prompt::parse("x".repeat(2001)).is_err());
        assert_eq!(Prompt::parse("a cat").unwrap().as_str(), "a cat");
    }

    #[test]
    fn sampler_names_round_trip_and_errors_list_choices() {
        for s in Sampler::ALL {
            assert_eq!(Sampler::parse(s.as_str()).unwrap(), s);
        }
        let e = Sampler::parse("plms").unwrap_err().to_string();
        assert!(
            e.contains("ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_sde"),
            "{e}"
        );
    }

    #[test]
    fn model_names_are_routing_safe() {
        assert!(ModelName::parse("sd15").is_ok());
        assert!(ModelName::parse("sdxl-turbo.v1").is_ok());
        assert!(ModelName::parse("SD15").is_err());
        assert!(ModelName::parse("a/b").is_err());
        assert!(ModelName::parse("").is_err());
    }

    #[test]
    fn bounded_numbers() {
        assert!(Seed::parse(Seed::MAX).is_ok());
        assert!(Seed::parse(Seed::MAX + 1).is_err());
        assert!(StepCount::parse(0).is_err());
        assert!(GuidanceScale::parse(f64::NAN).is_err());
        assert!(Priority::parse(10).is_err());
    }
}
