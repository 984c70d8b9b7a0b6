//! Parse, don't validate: every job parameter is a newtype that can only hold an accepted value.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use utoipa::ToSchema;

use crate::text::TextKind;
use crate::{Error, Result};

macro_rules! deserialize_via_parse {
    ($ty:ty, $raw:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let raw = <$raw>::deserialize(d)?;
                <$ty>::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

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

/// Output size in pixels: each side a multiple of 8 between 8 and 4096, at most 16 Mpx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ImageSize {
    width: u32,
    height: u32,
}

impl ImageSize {
    /// Longest accepted side.
    pub const MAX_SIDE: u32 = 4096;

    /// # Errors
    /// `Invalid` naming the side that is out of range or not a multiple of 8.
    pub fn new(width: u32, height: u32) -> Result<Self> {
        for (name, v) in [("width", width), ("height", height)] {
            if !(8..=Self::MAX_SIDE).contains(&v) || v % 8 != 0 {
                return Err(Error::invalid(format!(
                    "{name} is {v}; accepted: a multiple of 8 between 8 and {}",
                    Self::MAX_SIDE
                )));
            }
        }
        Ok(ImageSize { width, height })
    }

    /// Width in pixels.
    pub fn width(self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(self) -> u32 {
        self.height
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// Number of denoising steps, 1 to 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct StepCount(u32);

impl StepCount {
    /// Most steps accepted.
    pub const MAX: u32 = 200;

    /// # Errors
    /// `Invalid` outside 1..=200.
    pub fn parse(v: u32) -> Result<Self> {
        if !(1..=Self::MAX).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: 1 to {}",
                Self::MAX
            )));
        }
        Ok(StepCount(v))
    }

    /// The step count.
    pub fn get(self) -> u32 {
        self.0
    }
}
deserialize_via_parse!(StepCount, u32);

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

/// A model name as routed on the broker: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// # Errors
    /// `Invalid` when empty, longer than 64 or holding characters other than `a-z 0-9 . _ -`.
    pub fn parse(s: impl Into<String>) -> Result<Self> {
        let s: String = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(Error::invalid(format!(
                "is `{s}`; accepted: 1 to 64 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
            )));
        }
        Ok(ModelName(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
deserialize_via_parse!(ModelName, String);

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
}

/// img2img strength: finite, 0 (keep the image) to 1 (repaint everything).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Strength(f64);

impl Strength {
    /// # Errors
    /// `Invalid` when not finite or outside 0..=1.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=1.0).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number from 0 (keep the image) to 1 (repaint everything)"
            )));
        }
        Ok(Strength(v))
    }

    /// The strength.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(Strength, f64);

/// A job that starts from an image: img2img, or inpainting with a mask. The images are uploads of
/// the batch's tenant (PNG, JPEG or WebP, under its prefix `inputs/<tenant-id>/`). Their sha256 is pinned when the batch is submitted
/// (give it to assert what you expect), so the output key and the audit trail name the exact
/// pixels, and a worker refuses an object that changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobImage {
    /// Object key of an upload of the batch's tenant, `inputs/<tenant-id>/product.png` (the key
    /// the upload answered); in the embedded mode, a file path relative to the manifest.
    pub key: String,
    /// sha256 (lowercase hex) of the object; filled at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// img2img / inpainting settings of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// The image to start from (resized to the job's size).
    pub image: BlobImage,
    /// Inpainting mask, same size as the image: white is repainted, black kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<BlobImage>,
    /// How much of the schedule runs.
    pub strength: Strength,
}

impl InitSpec {
    /// The image and the mask, if any.
    pub fn images(&self) -> impl Iterator<Item = &BlobImage> {
        std::iter::once(&self.image).chain(self.mask.as_ref())
    }

    /// Mutable [`InitSpec::images`].
    pub fn images_mut(&mut self) -> impl Iterator<Item = &mut BlobImage> {
        std::iter::once(&mut self.image).chain(self.mask.as_mut())
    }
}

/// Encoded file format of a job's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG with the generation parameters and provenance in text chunks (default).
    #[default]
    Png,
    /// JPEG (baseline); the parameters go into EXIF `UserComment`.
    Jpeg,
    /// WebP, lossy with `quality`, lossless without.
    Webp,
}

impl ImageFormat {
    /// File extension (also of the object key).
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Webp => "webp",
        }
    }

    /// MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Webp => "image/webp",
        }
    }

    /// The format of encoded `bytes`, by their magic numbers.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else {
            None
        }
    }
}

/// JPEG / WebP quality, 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Quality(u8);

impl Quality {
    /// # Errors
    /// `Invalid` outside 1..=100.
    pub fn parse(v: u32) -> Result<Self> {
        match u8::try_from(v) {
            Ok(q) if (1..=100).contains(&q) => Ok(Quality(q)),
            _ => Err(Error::invalid(format!("is {v}; accepted: 1 to 100"))),
        }
    }

    /// The quality.
    pub fn get(self) -> u8 {
        self.0
    }
}
deserialize_via_parse!(Quality, u32);

/// A post-processing strength: finite, 0 to 4 (colour factors: 1 leaves the image unchanged;
/// sharpen: 0 does).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Level(f64);

impl Level {
    /// Strongest level accepted.
    pub const MAX: f64 = 4.0;
    /// The identity of the colour factors.
    pub const ONE: Level = Level(1.0);
    /// No sharpening.
    pub const ZERO: Level = Level(0.0);

    /// # Errors
    /// `Invalid` when not finite or outside 0..=4.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=Self::MAX).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number from 0 to {}",
                Self::MAX
            )));
        }
        Ok(Level(v))
    }

    /// The level.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(Level, f64);

/// A side of the delivered image: any whole number of pixels from 1 to 8192 (not tied to the
/// model's multiple of 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
pub struct OutputSide(u32);

impl OutputSide {
    /// Largest side accepted.
    pub const MAX: u32 = 8192;

    /// # Errors
    /// `Invalid` outside 1..=8192.
    pub fn parse(v: u32) -> Result<Self> {
        if !(1..=Self::MAX).contains(&v) {
            return Err(Error::invalid(format!(
                "is {v}; accepted: 1 to {}",
                Self::MAX
            )));
        }
        Ok(OutputSide(v))
    }

    /// The side in pixels.
    pub fn get(self) -> u32 {
        self.0
    }
}
deserialize_via_parse!(OutputSide, u32);

/// How the rendered image becomes the delivered size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Scale to cover the target, then crop the centre (keeps the aspect ratio; default).
    #[default]
    Cover,
    /// Scale each axis to the target (distorts when the aspect ratios differ).
    Stretch,
}

/// The exact size delivered, reached from the rendered size by Lanczos resampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// Delivered width.
    pub width: OutputSide,
    /// Delivered height.
    pub height: OutputSide,
    /// How the aspect ratio is handled.
    #[serde(default)]
    pub fit: Fit,
}

/// What happens to the rendered pixels before they are stored: resize/crop, colour, sharpen
/// (in that order), then encoding. The default — the rendered pixels as PNG — serializes to
/// nothing, so jobs without an `output` keep the output keys they always had.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// File format.
    #[serde(default, skip_serializing_if = "is_default")]
    pub format: ImageFormat,
    /// JPEG quality (default 90) or lossy WebP quality (lossless when absent); not for PNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Deliver exactly this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
    /// Brightness factor (1 = unchanged).
    #[serde(default = "level_one", skip_serializing_if = "is_one")]
    pub brightness: Level,
    /// Contrast factor around mid-grey (1 = unchanged).
    #[serde(default = "level_one", skip_serializing_if = "is_one")]
    pub contrast: Level,
    /// Saturation factor (0 = greyscale, 1 = unchanged).
    #[serde(default = "level_one", skip_serializing_if = "is_one")]
    pub saturation: Level,
    /// Unsharp-mask amount (radius 1 px; 0 = none).
    #[serde(default = "level_zero", skip_serializing_if = "is_zero")]
    pub sharpen: Level,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            format: ImageFormat::Png,
            quality: None,
            resize: None,
            brightness: Level::ONE,
            contrast: Level::ONE,
            saturation: Level::ONE,
            sharpen: Level::ZERO,
        }
    }
}

impl OutputSpec {
    /// JPEG's quality when none is given.
    pub const DEFAULT_JPEG_QUALITY: u8 = 90;

    /// Whether this is the default (PNG of the rendered pixels).
    pub fn is_default(&self) -> bool {
        *self == OutputSpec::default()
    }

    /// The checks across fields: the name of the offending field and what is wrong.
    ///
    /// # Errors
    /// `("quality", …)` for a quality on PNG.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.format == ImageFormat::Png && self.quality.is_some() {
            return Err((
                "quality",
                "is given for format png, which is lossless; accepted: quality with format jpeg or webp".into(),
            ));
        }
        Ok(())
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn level_one() -> Level {
    Level::ONE
}
fn level_zero() -> Level {
    Level::ZERO
}
fn is_one(v: &Level) -> bool {
    *v == Level::ONE
}
fn is_zero(v: &Level) -> bool {
    *v == Level::ZERO
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
