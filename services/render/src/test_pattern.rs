//! A deterministic, model-free renderer: pixels are a function of (prompt, seed, size) only.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Instant;

use pixelfarm_core::{
    JobParams, ModelIdentity, ModelName, RenderedImage, Renderer, Result, RgbImage,
};

/// Renders gradients and boxes whose colours come from a hash of the prompt and the seed.
/// It serves every model name, and says `test_pattern: true` in its identity so every image it
/// makes is labelled as a test/benchmark image in its provenance and PNG metadata.
#[derive(Debug, Clone, Default)]
pub struct TestPattern {
    /// Added to every render to stand in for device time (pipeline tests and benchmarks).
    delay: std::time::Duration,
}

impl TestPattern {
    /// A renderer that also sleeps `delay` per image, as a slow model would take.
    pub fn with_delay(delay: std::time::Duration) -> Self {
        TestPattern { delay }
    }
}

/// Version of the pattern; bump it when the pixels change so output keys change too.
const VERSION: &str = "test-pattern/1";

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }
}

impl Renderer for TestPattern {
    fn identity(&self, _model: &ModelName) -> Result<ModelIdentity> {
        Ok(ModelIdentity {
            renderer: VERSION.to_string(),
            id: VERSION.to_string(),
            device: "cpu".to_string(),
            test_pattern: true,
        })
    }

    fn render(&self, _model: &ModelName, params: &JobParams) -> Result<RenderedImage> {
        let t0 = Instant::now();
        params.size()?;
        // The size delivered: a hires fix enlarges it.
        let (w, h) = params.render_size()?;
        let mut hasher = Sha256::new();
        hasher.update(params.prompt.as_str().as_bytes());
        hasher.update(params.seed.get().to_le_bytes());
        let digest = hasher.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        let mut rng = SplitMix(u64::from_le_bytes(seed));

        let c0: [u32; 3] = [rng.below(256), rng.below(256), rng.below(256)];
        let c1: [u32; 3] = [rng.below(256), rng.below(256), rng.below(256)];
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for y in 0..h {
            for x in 0..w {
                let t = (x + y) * 255 / (w + h - 2).max(1);
                let i = ((y * w + x) * 3) as usize;
                for c in 0..3 {
                    rgb[i + c] = ((c0[c] * (255 - t) + c1[c] * t) / 255) as u8;
                }
            }
        }
        for _ in 0..3 {
            let (bw, bh) = (1 + rng.below(w / 2), 1 + rng.below(h / 2));
            let (bx, by) = (rng.below(w - bw), rng.below(h - bh));
            let col = [
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ];
            for y in by..by + bh {
                for x in bx..bx + bw {
                    let i = ((y * w + x) * 3) as usize;
                    rgb[i..i + 3].copy_from_slice(&col);
                }
            }
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let mut phases = BTreeMap::new();
        phases.insert("denoise".to_string(), t0.elapsed().as_secs_f64());
        Ok(RenderedImage {
            image: RgbImage {
                width: w,
                height: h,
                rgb,
            },
            phases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_core::*;

    fn params(prompt: &str, seed: u64, w: u32, h: u32) -> JobParams {
        JobParams {
            prompt: Prompt::parse(prompt).unwrap(),
            negative_prompt: NegativePrompt::default(),
            width: w,
            height: h,
            steps: StepCount::parse(1).unwrap(),
            guidance: GuidanceScale::parse(1.0).unwrap(),
            sampler: Sampler::Euler,
            seed: Seed::parse(seed).unwrap(),
            init: None,
            hires: None,
            loras: Default::default(),
            control: Default::default(),
            output: Default::default(),
        }
    }

    #[test]
    fn deterministic_and_sensitive_to_prompt_and_seed() {
        let m = ModelName::parse("any").unwrap();
        let r = TestPattern::default();
        let pixels = |prompt, seed| r.render(&m, &params(prompt, seed, 32, 16)).unwrap().image;
        let a = pixels("a", 1);
        assert_eq!((a.width, a.height, a.rgb.len()), (32, 16, 32 * 16 * 3));
        assert_eq!(a.rgb, pixels("a", 1).rgb);
        assert_ne!(a.rgb, pixels("a", 2).rgb);
        assert_ne!(a.rgb, pixels("b", 1).rgb);
        assert!(r.identity(&m).unwrap().test_pattern);
    }

    #[test]
    fn smallest_size_renders() {
        let m = ModelName::parse("any").unwrap();
        assert_eq!(
            TestPattern::default()
                .render(&m, &params("a", 1, 8, 8))
                .unwrap()
                .image
                .rgb
                .len(),
            192
        );
    }
}
