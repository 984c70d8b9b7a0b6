//! Input images for img2img and inpainting: where a tenant's uploads live, how big they may be,
//! and their pixels, validated, then resized to the job size.

use crate::{Error, ImageFormat, Result, RgbImage, TenantId};

/// Largest input object (init image or mask), in bytes: an upload, the scheduler's check at
/// submit and the worker's fetch each read at most this much of an object
/// ([`crate::BlobStore::get_limited`]). A 4096² photo is well under it as PNG, JPEG or WebP.
pub const MAX_INPUT_BYTES: u64 = 32 << 20;

/// A mask byte above this repaints its pixel, at or below it keeps the pixel: white repaints and
/// black keeps, split at the midpoint, as A1111 and diffusers read masks.
pub const MASK_REPAINT_ABOVE: u8 = 127;

/// Root of every tenant's uploaded inputs.
const INPUTS_ROOT: &str = "inputs";

/// Where `tenant`'s uploaded inputs live: `inputs/<tenant-id>/`. Only uploads write there, and a
/// manifest may name only keys under its own tenant's prefix ([`is_tenant_input`]).
pub fn input_prefix(tenant: TenantId) -> String {
    format!("{INPUTS_ROOT}/{tenant}/")
}

/// Whether `key` is one of `tenant`'s inputs: `inputs/<tenant-id>/<name>` with `name` one
/// [`InputName`]-shaped segment plus its extension.
pub fn is_tenant_input(tenant: TenantId, key: &str) -> bool {
    key.strip_prefix(&input_prefix(tenant))
        .is_some_and(InputName::accepts)
}

/// The name an input is uploaded under, without its extension (the format sniffed from the bytes
/// gives that): 1 to [`InputName::MAX_LEN`] characters of `A-Z a-z 0-9 . _ -`, not starting with
/// `.`. A name ending in an image extension (`.png`, `.jpg`, `.jpeg`, `.webp`) has it removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputName(String);

impl InputName {
    /// Longest name accepted.
    pub const MAX_LEN: usize = 128;

    /// Parse an upload's name.
    ///
    /// # Errors
    /// `Invalid` naming what is accepted.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        let stem = [".png", ".jpg", ".jpeg", ".webp"]
            .iter()
            .find_map(|ext| lower.strip_suffix(ext).map(|s| &name[..s.len()]))
            .unwrap_or(name);
        if stem.len() <= Self::MAX_LEN && Self::accepts(stem) {
            Ok(InputName(stem.to_string()))
        } else {
            Err(Error::invalid(format!(
                "input name `{}` is not accepted; accepted: 1 to {} characters of A-Z a-z 0-9 . _ -, not starting with `.`",
                crate::text::printable(name),
                Self::MAX_LEN
            )))
        }
    }

    /// The name of an upload that names none: the sha256 of its bytes.
    pub fn from_sha256(sha256: &str) -> Self {
        InputName(sha256.to_string())
    }

    /// A key segment an upload can have written: a name plus its extension (at most 5 bytes).
    fn accepts(s: &str) -> bool {
        (1..=Self::MAX_LEN + 5).contains(&s.len())
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }

    /// The key of this input of `tenant` in `format`: `inputs/<tenant-id>/<name>.<ext>`.
    pub fn key(&self, tenant: TenantId, format: ImageFormat) -> String {
        format!("{}{}.{}", input_prefix(tenant), self.0, format.extension())
    }
}

/// What a job renders from besides its parameters, fetched and decoded by the caller: the init
/// image of img2img / inpainting, and the control images of its ControlNets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobInputs {
    /// img2img / inpainting input; `None` for a render from noise.
    pub init: Option<ImageInput>,
    /// One image per entry of the job's `control`, in its order, as its ControlNet reads it
    /// (preprocessed; any size, resized to the render's).
    pub control: Vec<RgbImage>,
}

impl JobInputs {
    /// No input image at all: a plain text-to-image render.
    pub fn is_empty(&self) -> bool {
        self.init.is_none() && self.control.is_empty()
    }
}

impl From<ImageInput> for JobInputs {
    fn from(init: ImageInput) -> Self {
        JobInputs {
            init: Some(init),
            control: Vec::new(),
        }
    }
}

/// What img2img / inpainting start from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    /// The image to start from (any size; resized to the job's). Decoding it from S3 or the
    /// manifest is the caller's.
    pub init: RgbImage,
    /// How much of the schedule to run: 0 keeps the image (after a VAE round trip), 1 repaints
    /// everything.
    pub strength: f64,
    /// Inpainting mask at the init image's size, one byte per pixel: above [`MASK_REPAINT_ABOVE`]
    /// is repainted, the rest
    /// kept. `None` for plain img2img.
    pub mask: Option<Vec<u8>>,
}

impl ImageInput {
    /// Validate and resize to `width x height`: the RGB bilinearly, the mask by nearest neighbour.
    ///
    /// # Errors
    /// `Permanent` (a bad input image never gets better on retry) for an empty image, or a pixel or
    /// mask buffer whose length does not match the stated size; `Invalid` for a strength outside 0..=1.
    pub fn prepared(&self, width: u32, height: u32) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let rgb = self
            .init
            .resized(width, height)
            .map_err(|e| Error::permanent(format!("init image {e}")))?
            .rgb;
        let (iw, ih) = (self.init.width as usize, self.init.height as usize);
        if !(0.0..=1.0).contains(&self.strength) || !self.strength.is_finite() {
            return Err(Error::invalid(format!(
                "strength is {}; accepted: 0 to 1",
                self.strength
            )));
        }
        if let Some(m) = &self.mask
            && m.len() != iw * ih
        {
            return Err(Error::permanent(format!(
                "mask has {} bytes; expected {} (one per pixel of the {iw}x{ih} init image)",
                m.len(),
                iw * ih
            )));
        }
        let (w, h) = (width as usize, height as usize);
        let mask = self.mask.as_ref().map(|m| {
            let mut out = vec![0u8; w * h];
            for y in 0..h {
                for x in 0..w {
                    out[y * w + x] = m[(y * ih / h) * iw + x * iw / w];
                }
            }
            out
        });
        Ok((rgb, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn input(w: u32, h: u32, len: usize) -> ImageInput {
        ImageInput {
            init: RgbImage {
                width: w,
                height: h,
                rgb: vec![100; len],
            },
            strength: 0.5,
            mask: None,
        }
    }

    #[test]
    fn input_names_and_keys_stay_under_the_tenant_prefix() {
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let n = InputName::parse("Product_1.PNG").unwrap();
        let key = n.key(a, ImageFormat::Jpeg);
        assert_eq!(key, format!("inputs/{a}/Product_1.jpg"));
        assert!(is_tenant_input(a, &key));
        assert!(!is_tenant_input(b, &key), "another tenant's key");
        for bad in ["", ".hidden", "a/b", "../x", "a b", "é", &"x".repeat(129)] {
            assert!(InputName::parse(bad).is_err(), "{bad:?}");
        }
        for foreign in [
            format!("inputs/{a}/"),
            format!("inputs/{a}/sub/x.png"),
            format!("inputs/{a}/../{b}/x.png"),
            format!("inputs/{a}x.png"),
            "inputs/x.png".to_string(),
            "images/ab/x.png".to_string(),
        ] {
            assert!(!is_tenant_input(a, &foreign), "{foreign}");
        }
    }

    #[test]
    fn bad_images_are_permanent_and_sizes_are_fixed_up() {
        assert_eq!(
            input(4, 4, 47).prepared(8, 8).unwrap_err().kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            input(0, 4, 0).prepared(8, 8).unwrap_err().kind(),
            ErrorKind::Permanent
        );
        let mut i = input(4, 4, 48);
        i.strength = 1.5;
        assert_eq!(i.prepared(8, 8).unwrap_err().kind(), ErrorKind::Invalid);
        i.strength = 0.3;
        i.mask = Some(vec![255; 3]);
        assert_eq!(i.prepared(8, 8).unwrap_err().kind(), ErrorKind::Permanent);
        i.mask = Some((0..16).map(|p| if p % 4 < 2 { 0 } else { 255 }).collect());
        let (rgb, mask) = i.prepared(8, 6).unwrap();
        assert_eq!(rgb, vec![100; 8 * 6 * 3]);
        let mask = mask.unwrap();
        assert_eq!(mask.len(), 48);
        assert_eq!(&mask[0..8], &[0, 0, 0, 0, 255, 255, 255, 255]);
    }
}
