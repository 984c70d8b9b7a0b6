//! The input of an img2img / inpainting job.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use crate::{Error, Result};

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
