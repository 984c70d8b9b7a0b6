//! Seeds derived per job and content-addressed output keys.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::params::{ImageFormat, JobParams, Seed};

/// The seed of the `index`-th image of the variant `variant_key` in a batch whose base seed is `base`.
///
/// It depends only on these three values, so a job renders the same image whatever else is in the
/// batch and whichever worker runs it.
pub fn derive_seed(base: u64, variant_key: &str, index: u32) -> Seed {
    let mut h = Sha256::new();
    h.update(b"pixelfarm-seed/v1\0");
    h.update(base.to_le_bytes());
    h.update(variant_key.as_bytes());
    h.update(b"\0");
    h.update(index.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    Seed::parse(u64::from_le_bytes(b) & Seed::MAX).expect("masked to 53 bits")
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What is stored for an API key: its sha256. The key itself is shown once and never stored.
pub fn hash_api_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// Where a rendered image and its provenance record live in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputKey {
    hex: String,
    format: ImageFormat,
}

#[derive(Serialize)]
struct Canonical<'a> {
    version: u32,
    model_identity: &'a str,
    params: &'a JobParams,
}

impl OutputKey {
    /// Hash of the model identity (its weights' sha256 or the renderer's version) and the canonical
    /// JSON of the parameters (which include the seed). Same inputs, same key: a retry overwrites the
    /// object instead of adding one.
    pub fn for_job(model_identity: &str, params: &JobParams) -> Self {
        let canonical = serde_json::to_vec(&Canonical {
            version: 1,
            model_identity,
            params,
        })
        .expect("job params always serialize");
        OutputKey {
            hex: hex::encode(Sha256::digest(&canonical)),
            format: params.output.format,
        }
    }

    /// `images/ab/<sha256>.png` (`.jpg`, `.webp` for those formats).
    pub fn image(&self) -> String {
        format!(
            "images/{}/{}.{}",
            &self.hex[..2],
            self.hex,
            self.format.extension()
        )
    }

    /// `images/ab/<sha256>.json`, beside the image.
    pub fn provenance(&self) -> String {
        format!("images/{}/{}.json", &self.hex[..2], self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::*;

    fn params(seed: u64) -> JobParams {
        JobParams {
            prompt: Prompt::parse("a red circle").unwrap(),
            negative_prompt: NegativePrompt::default(),
            width: 64,
            height: 64,
            steps: StepCount::parse(10).unwrap(),
            guidance: GuidanceScale::parse(7.5).unwrap(),
            sampler: Sampler::Euler,
            seed: Seed::parse(seed).unwrap(),
            init: None,
            output: Default::default(),
        }
    }

    #[test]
    fn seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(1, "a", 0), derive_seed(1, "a", 0));
        assert_ne!(derive_seed(1, "a", 0), derive_seed(1, "a", 1));
        assert_ne!(derive_seed(1, "a", 0), derive_seed(2, "a", 0));
        assert_ne!(derive_seed(1, "a", 0), derive_seed(1, "b", 0));
        // Pinned: changing the derivation silently would break reproducibility for every user.
        assert_eq!(
            derive_seed(42, "color=red@64x64", 0).get(),
            828_595_379_635_488
        );
    }

    #[test]
    fn output_key_depends_on_model_and_every_param() {
        let k = OutputKey::for_job("m1", &params(1));
        assert_eq!(k, OutputKey::for_job("m1", &params(1)));
        assert_ne!(k, OutputKey::for_job("m2", &params(1)));
        assert_ne!(k, OutputKey::for_job("m1", &params(2)));
        assert!(k.image().starts_with("images/") && k.image().ends_with(".png"));
        assert_eq!(k.image().replace(".png", ".json"), k.provenance());
        let mut jpeg = params(1);
        jpeg.output.format = ImageFormat::Jpeg;
        let j = OutputKey::for_job("m1", &jpeg);
        assert_ne!(j, k);
        assert!(j.image().ends_with(".jpg"), "{}", j.image());
    }
}
