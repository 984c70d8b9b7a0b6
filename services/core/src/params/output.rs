//! What happens to the rendered pixels before they are stored, and the file format.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use super::hires::ScaleFactor;
use crate::{Error, Result};

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

/// What happens to the rendered pixels before they are stored: resize/crop or upscale, colour,
/// sharpen (in that order), then encoding, with content credentials unless they are turned off. The
/// default — the rendered pixels as PNG, with credentials — serializes to nothing.
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
    /// Enlarge the rendered image by this factor (Lanczos, each side rounded to the nearest
    /// pixel), whatever its size; not with `resize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upscale: Option<ScaleFactor>,
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
    /// Content credentials (a signed C2PA manifest and the XMP digital source type) in the file:
    /// `false` leaves them out. Absent in a manifest, the tenant's setting applies at submit
    /// (`tenant set-content-credentials`); absent in a job, they are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_credentials: Option<bool>,
}

impl Default for OutputSpec {
    fn default() -> Self {
        OutputSpec {
            format: ImageFormat::Png,
            quality: None,
            resize: None,
            upscale: None,
            brightness: Level::ONE,
            contrast: Level::ONE,
            saturation: Level::ONE,
            sharpen: Level::ZERO,
            content_credentials: None,
        }
    }
}

impl OutputSpec {
    /// JPEG's quality when none is given.
    pub const DEFAULT_JPEG_QUALITY: u8 = 90;

    /// Whether this is the default (PNG of the rendered pixels, with content credentials).
    pub fn is_default(&self) -> bool {
        *self == OutputSpec::default()
    }

    /// Whether the file gets content credentials: unless `content_credentials` says `false`.
    pub fn content_credentials(&self) -> bool {
        self.content_credentials != Some(false)
    }

    /// Apply the tenant's `content_credentials` setting where the manifest said nothing; an
    /// explicit value stays. Only `false` is kept (absent means on), so a job with credentials
    /// keeps the output key it had without the setting.
    pub fn resolve_content_credentials(&mut self, tenant_default: bool) {
        let on = self.content_credentials.unwrap_or(tenant_default);
        self.content_credentials = (!on).then_some(false);
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
        if self.resize.is_some() && self.upscale.is_some() {
            return Err((
                "upscale",
                "is given with `resize`; accepted: one of them (`resize` delivers an exact size, `upscale` multiplies the rendered one)".into(),
            ));
        }
        Ok(())
    }

    /// The size delivered for a render of `width x height`: `resize`'s, the upscaled one, or
    /// the rendered size.
    ///
    /// # Errors
    /// `Invalid` when `upscale` makes a side larger than [`OutputSide::MAX`], saying the largest
    /// factor that fits.
    pub fn delivered(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        if let Some(r) = self.resize {
            return Ok((r.width.get(), r.height.get()));
        }
        let Some(u) = self.upscale else {
            return Ok((width, height));
        };
        let side = |v: u32| ((f64::from(v) * u.get()).round() as u32).max(1);
        let (w, h) = (side(width), side(height));
        if w > OutputSide::MAX || h > OutputSide::MAX {
            return Err(Error::invalid(format!(
                "{} makes {width}x{height} {w}x{h}; accepted: at most {} a side (an upscale up to {:.2} for this size)",
                u.get(),
                OutputSide::MAX,
                f64::from(OutputSide::MAX) / f64::from(width.max(height))
            )));
        }
        Ok((w, h))
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
