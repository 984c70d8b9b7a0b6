//! Hires fix: render at the job's size, upscale, and refine the larger image with img2img, to
//! deliver images larger than the sizes a model was trained at without its repeated subjects.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use super::init::Strength;
use super::size::{ImageSize, StepCount};
use crate::{Error, Result};

/// An enlargement: finite, more than 1 and at most 4 (`hires.scale`, `output.upscale`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ScaleFactor(f64);

impl ScaleFactor {
    /// Largest factor accepted.
    pub const MAX: f64 = 4.0;

    /// # Errors
    /// `Invalid` when not finite or outside (1, 4].
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || v <= 1.0 || v > Self::MAX {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number above 1 and at most {}",
                Self::MAX
            )));
        }
        Ok(ScaleFactor(v))
    }

    /// The factor.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(ScaleFactor, f64);

/// How the first pass is enlarged before it is refined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Upscaler {
    /// The decoded image, Lanczos-3 resampled, encoded again: sharp, and what the refining pass
    /// changes least.
    #[default]
    Lanczos,
    /// The latents, nearest-neighbour enlarged: no decode and encode in between, but blocky
    /// until refined, so it wants a strength of about 0.5 or more.
    Latent,
}

/// `hires:` of a job: render at its `width x height`, enlarge by `scale` (each side rounded to a
/// multiple of 8), then run `strength` of a `steps`-step schedule on the enlarged image with the
/// same prompt and seed (what img2img of the enlarged image would do).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HiresSpec {
    /// Enlargement, above 1 and at most 4.
    pub scale: ScaleFactor,
    /// Steps of the refining schedule; absent: the job's `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<StepCount>,
    /// How much of the refining schedule runs: 0 keeps the enlarged image, 1 repaints it.
    #[serde(default = "half")]
    pub strength: Strength,
    /// `lanczos` (default) or `latent`.
    #[serde(default)]
    pub upscaler: Upscaler,
}

fn half() -> Strength {
    Strength::parse(0.5).expect("0.5 is in range")
}

impl HiresSpec {
    /// The refined size for a first pass of `width x height`: each side times the scale, rounded
    /// to the nearest multiple of 8.
    ///
    /// # Errors
    /// `Invalid` when a side would pass [`ImageSize::MAX_SIDE`], saying the largest scale that
    /// fits.
    pub fn size(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        let side = |v: u32| ((f64::from(v) * self.scale.get() / 8.0).round() as u32) * 8;
        let (w, h) = (side(width), side(height));
        if w > ImageSize::MAX_SIDE || h > ImageSize::MAX_SIDE {
            let fits = f64::from(ImageSize::MAX_SIDE) / f64::from(width.max(height));
            return Err(Error::invalid(format!(
                "{} makes {width}x{height} {w}x{h}; accepted: at most {} a side (a scale up to {:.2} for this size)",
                self.scale.get(),
                ImageSize::MAX_SIDE,
                fits
            )));
        }
        Ok((w, h))
    }

    /// The refining schedule's steps for a job of `steps`.
    pub fn steps_for(&self, steps: StepCount) -> StepCount {
        self.steps.unwrap_or(steps)
    }

    /// What jobs refined together must share, comparable and hashable.
    pub fn key(&self, steps: StepCount) -> (u64, u32, u64, Upscaler) {
        (
            self.scale.get().to_bits(),
            self.steps_for(steps).get(),
            self.strength.get().to_bits(),
            self.upscaler,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scale: f64) -> HiresSpec {
        HiresSpec {
            scale: ScaleFactor::parse(scale).unwrap(),
            steps: None,
            strength: half(),
            upscaler: Upscaler::Lanczos,
        }
    }

    #[test]
    fn sizes_round_to_multiples_of_eight_and_stay_in_range() {
        assert_eq!(spec(2.0).size(512, 768).unwrap(), (1024, 1536));
        assert_eq!(spec(1.5).size(520, 64).unwrap(), (784, 96));
        assert_eq!(spec(1.3).size(64, 64).unwrap(), (80, 80));
        let e = spec(4.0).size(2048, 512).unwrap_err().to_string();
        assert!(
            e.contains("8192x2048") && e.contains("at most 4096") && e.contains("up to 2.00"),
            "{e}"
        );
        for bad in [1.0, 0.5, 4.01, f64::NAN, f64::INFINITY] {
            let e = ScaleFactor::parse(bad).unwrap_err().to_string();
            assert!(e.contains("above 1 and at most 4"), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_are_half_strength_lanczos_and_the_jobs_steps() {
        let h: HiresSpec = serde_json::from_str(r#"{"scale": 2}"#).unwrap();
        assert_eq!(h.strength.get(), 0.5);
        assert_eq!(h.upscaler, Upscaler::Lanczos);
        let steps = StepCount::parse(30).unwrap();
        assert_eq!(h.steps_for(steps), steps);
        let e = serde_json::from_str::<HiresSpec>(r#"{"scale": 2, "upscaler": "esrgan"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lanczos") && e.contains("latent"), "{e}");
    }
}
