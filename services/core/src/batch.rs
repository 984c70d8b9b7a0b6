//! Which text-to-image jobs may share one denoiser call: the one micro-batching rule that the
//! worker's batcher (which jobs wait for one renderer call) and the diffusion engine (which jobs
//! of that call run through the UNet together) both apply, so a batch the worker forms is never
//! split by the engine, and jobs the engine could fuse are never sent in separate calls.
//!
//! Jobs batch together when every tensor of a denoising step has the same shape for all of them
//! and the sampler walks the same noise levels: the same size (the latents' shape), the same
//! steps and sampler (the plan), and guidance on for all or off for all (with guidance each job
//! puts two rows through the UNet, unconditional and conditional; without it, one). Prompts,
//! seeds and guidance scales are per row and differ freely. Jobs that start from an image render
//! alone, so this rule is not asked about them.

use crate::{JobParams, Sampler, Upscaler};

/// What jobs of one denoiser call have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchKey {
    width: u32,
    height: u32,
    steps: u32,
    sampler: Sampler,
    guided: bool,
    /// The hires fix's scale, steps, strength and upscaler: the jobs refined after the shared
    /// first pass report their steps in lockstep.
    hires: Option<(u64, u32, u64, Upscaler)>,
    /// The LoRA set ([`crate::Loras::fingerprint`]): a group renders with one set of weights.
    loras: u64,
}

impl BatchKey {
    /// The key of `params`.
    pub fn of(params: &JobParams) -> Self {
        BatchKey {
            width: params.width,
            height: params.height,
            steps: params.steps.get(),
            sampler: params.sampler,
            guided: params.guidance.guides(),
            hires: params.hires.map(|h| h.key(params.steps)),
            loras: params.loras.fingerprint(),
        }
    }
}

/// `jobs` grouped by [`BatchKey`], at most `max` per group (at least one): each group's indices
/// into `jobs` in order, groups in the order of their first job.
pub fn groups(jobs: &[JobParams], max: usize) -> Vec<Vec<usize>> {
    let max = max.max(1);
    let mut groups: Vec<(BatchKey, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = BatchKey::of(job);
        match groups
            .iter_mut()
            .find(|(k, idx)| *k == key && idx.len() < max)
        {
            Some((_, idx)) => idx.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, idx)| idx).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuidanceScale, NegativePrompt, Prompt, Seed, StepCount};

    fn job(width: u32, steps: u32, guidance: f64, seed: u64) -> JobParams {
        JobParams {
            prompt: Prompt::parse(format!("job {seed}")).unwrap(),
            negative_prompt: NegativePrompt::default(),
            width,
            height: 64,
            steps: StepCount::parse(steps).unwrap(),
            guidance: GuidanceScale::parse(guidance).unwrap(),
            sampler: Sampler::EulerA,
            seed: Seed::parse(seed).unwrap(),
            init: None,
            hires: None,
            loras: Default::default(),
            control: Default::default(),
            output: Default::default(),
        }
    }

    #[test]
    fn groups_by_key_keep_order_and_respect_the_size() {
        let jobs = [
            job(64, 20, 7.5, 1),
            job(64, 20, 1.0, 2),
            job(64, 20, 3.0, 3),
            job(128, 20, 7.5, 4),
            job(64, 20, 7.5, 5),
            job(64, 30, 7.5, 6),
        ];
        assert_eq!(
            groups(&jobs, 8),
            vec![vec![0, 2, 4], vec![1], vec![3], vec![5]],
            "guidance scales differ freely, guidance on/off, size and steps do not"
        );
        assert_eq!(
            groups(&jobs, 2),
            vec![vec![0, 2], vec![1], vec![3], vec![4], vec![5]]
        );
        assert_eq!(groups(&jobs[..1], 0), vec![vec![0]], "a size of 0 means 1");
    }
}
