//! A run's settings.

use candle_core::Device;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig};
use std::path::PathBuf;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Where checkpoints, samples and the log go.
    pub out_dir: PathBuf,
    /// Total optimizer steps (a resumed run continues up to this).
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over the first `warmup` steps of a session, then constant
    /// until `decay_start`, then a cosine down to `lr_min` at `steps`).
    pub lr: f64,
    /// Warm-up steps at the start of every session (the optimizer's moments restart on resume).
    pub warmup: usize,
    /// Step where the cosine decay starts (`None`: no decay).
    pub decay_start: Option<usize>,
    /// Learning rate reached at `steps` when decaying.
    pub lr_min: f64,
    /// Seed of the data, noise and initial weights' order.
    pub seed: u64,
    /// EMA decay of the shipped weights.
    pub ema_decay: f64,
    /// What the batches are made of.
    pub mix: DataMix,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Stop after this many seconds of wall time (checkpointing first), whatever `steps` says.
    pub max_seconds: Option<f64>,
    /// The architecture.
    pub arch: ShapesConfig,
    /// Which parameters train: all, or only the refinement head's (the UNet stays as it is).
    pub reach: Reach,
    /// How the per-pixel errors are weighted.
    pub weighting: LossWeighting,
    /// Where the networks train (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
    /// Threads that generate the batches of the coming steps while the current one trains (at
    /// least 1). Batches are functions of `(seed, step)`, so the count never changes the data.
    pub data_threads: usize,
}

/// What a batch is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataMix {
    /// Share of captions replaced by the empty prompt (for guidance).
    pub uncond_prob: f64,
    /// Share of examples that are squares (`None`: every training combination equally often: 50
    /// of the 140 are squares). The weak shape can be drawn more often in a fine-tune.
    pub square_share: Option<f64>,
    /// A new colour and the share of examples showing it ([`crate::data::Attributes::with_color`]),
    /// the rest the base model's training combinations; replaces `square_share` when set.
    pub new_color: Option<(crate::data::Color, f64)>,
}

impl Default for DataMix {
    fn default() -> Self {
        DataMix {
            uncond_prob: 0.1,
            square_share: None,
            new_color: None,
        }
    }
}

/// Weights of the v-prediction squared error. The default is the plain mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossWeighting {
    /// Extra weight of the pixels on the shape's outline ([`crate::data::Spec::outline`]): 0 for
    /// none, `k` for `1 + k` on the outline. The shape's identity lives in a few dozen outline
    /// pixels that a plain mean drowns in the background's.
    pub outline: f64,
    /// Extra weight near the shape's vertices ([`crate::data::Spec::corners`]): `k` for up to
    /// `1 + k` there, on top of the outline's. What tells a square from a circle is a handful of
    /// corner pixels, which the model rounds off.
    pub corner: f64,
    /// Min-SNR-γ weighting (Hang et al., 2023; for v: `min(SNR, γ) / (SNR + 1)`): caps the weight
    /// of nearly clean timesteps so the mid-noise ones, where shapes form, are learned sooner.
    pub min_snr_gamma: Option<f64>,
}

impl LossWeighting {
    /// The weight of an example at noise `sigma` (`x = x0 + sigma * eps`).
    pub fn timestep_weight(&self, sigma: f64) -> f64 {
        match self.min_snr_gamma {
            Some(gamma) => {
                let snr = 1.0 / (sigma * sigma);
                snr.min(gamma) / (snr + 1.0)
            }
            None => 1.0,
        }
    }
}
