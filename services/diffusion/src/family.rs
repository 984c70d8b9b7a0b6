//! Model families and their defaults, in one table.

use crate::clip::{Activation, ClipConfig};
use crate::unet::TextTimeConfig;
use candle_transformers::models::stable_diffusion::{unet_2d, vae};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the UNet predicts; decides how its output turns into a clean-latent estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise that was added (SD 1.x, SDXL).
    Epsilon,
    /// `v = alpha * eps - sigma * x0` (SD 2.x 768).
    V,
}

/// An architecture family. Everything family-specific is decided by [`Family::defaults`] and the
/// architecture functions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// A tiny SD-1.x-shaped model (UNet 32/64/64, 4-block VAE at 32/32/64/64, 2-layer CLIP of width
    /// 32) for tests and benchmarks: same code paths, seconds instead of minutes.
    Tiny,
    /// Stable Diffusion 1.x (CLIP ViT-L/14 text encoder, epsilon prediction).
    Sd15,
    /// Stable Diffusion 2.1 768 (OpenCLIP ViT-H text encoder, v prediction).
    Sd21,
    /// SDXL base 1.0 (two text encoders, micro-conditioning).
    Sdxl,
    /// A tiny SDXL-shaped model (UNet with transformer depths and micro-conditioning, two CLIP
    /// text encoders of widths 32 and 48, the second with a projection) for tests.
    TinyXl,
    /// SDXL-Turbo (one to four steps, no guidance).
    SdxlTurbo,
    /// pixelfarm's own small text-to-image model of coloured shapes at 32×32 (`models/shapes`): a
    /// pixel-space UNet ([`crate::shapes_net`]), no VAE, a closed-vocabulary text encoder.
    Shapes,
}

/// Defaults and constants of a family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FamilyDefaults {
    /// Native width in pixels (what the model was trained at).
    pub width: u32,
    /// Native height in pixels.
    pub height: u32,
    /// Steps a user gets when they do not say.
    pub steps: u32,
    /// Guidance a user gets when they do not say.
    pub guidance: f64,
    /// Latents are `vae.encode(x) * vae_scale`.
    pub vae_scale: f64,
    /// What the UNet predicts.
    pub prediction: Prediction,
    /// Training noise schedule: `scaled_linear` betas from `beta_start` …
    pub beta_start: f64,
    /// … to `beta_end` …
    pub beta_end: f64,
    /// … over this many training timesteps.
    pub train_timesteps: usize,
    /// Number of latent channels.
    pub latent_channels: usize,
    /// Pixels per latent cell along each side.
    pub vae_downscale: u32,
    /// Tokens the text encoder reads.
    pub max_tokens: usize,
}

/// SDXL's two text encoders and micro-conditioning sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XlConfig {
    /// `text_encoder`: CLIP ViT-L (penultimate state).
    pub clip_l: ClipConfig,
    /// `text_encoder_2`: OpenCLIP ViT-bigG (penultimate state + projected pooled state).
    pub clip_g: ClipConfig,
    /// The UNet's `add_embedding` input sizes.
    pub text_time: TextTimeConfig,
    /// An empty negative prompt conditions on zeros, not on the encoded empty text (diffusers'
    /// `force_zeros_for_empty_prompt`, true for SDXL base).
    pub zeros_for_empty_negative: bool,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 7] = [
        Family::Tiny,
        Family::Sd15,
        Family::Sd21,
        Family::Sdxl,
        Family::TinyXl,
        Family::SdxlTurbo,
        Family::Shapes,
    ];

    /// The name used in the registry config.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Tiny => "tiny",
            Family::Sd15 => "sd15",
            Family::Sd21 => "sd21",
            Family::Sdxl => "sdxl",
            Family::TinyXl => "tiny-xl",
            Family::SdxlTurbo => "sdxl-turbo",
            Family::Shapes => "shapes",
        }
    }

    /// The family's defaults: the one place they are written down.
    pub fn defaults(self) -> FamilyDefaults {
        let sd = FamilyDefaults {
            width: 512,
            height: 512,
            steps: 30,
            guidance: 7.5,
            vae_scale: 0.18215,
            prediction: Prediction::Epsilon,
            beta_start: 0.00085,
            beta_end: 0.012,
            train_timesteps: 1000,
            latent_channels: 4,
            vae_downscale: 8,
            max_tokens: 77,
        };
        match self {
            Family::Tiny => FamilyDefaults {
                width: 64,
                height: 64,
                steps: 4,
                ..sd
            },
            Family::Sd15 => sd,
            Family::Sd21 => FamilyDefaults {
                width: 768,
                height: 768,
                prediction: Prediction::V,
                ..sd
            },
            Family::Sdxl => FamilyDefaults {
                width: 1024,
                height: 1024,
                guidance: 5.0,
                vae_scale: 0.13025,
                ..sd
            },
            Family::TinyXl => FamilyDefaults {
                width: 64,
                height: 64,
                steps: 4,
                guidance: 5.0,
                vae_scale: 0.13025,
                ..sd
            },
            Family::SdxlTurbo => FamilyDefaults {
                width: 512,
                height: 512,
                steps: 1,
                guidance: 0.0,
                vae_scale: 0.13025,
                ..sd
            },
            // Pixel space: the "latents" are the RGB pixels in -1..1.
            Family::Shapes => FamilyDefaults {
                width: 32,
                height: 32,
                // With Euler ancestral (models/shapes/MODEL_CARD.md, "Defaults").
                steps: 30,
                guidance: 1.5,
                vae_scale: 1.0,
                prediction: Prediction::V,
                latent_channels: 3,
                vae_downscale: 1,
                max_tokens: crate::shapes_net::MAX_TOKENS,
                ..sd
            },
        }
    }

    /// The UNet architecture.
    pub fn unet_config(self) -> unet_2d::UNet2DConditionModelConfig {
        let bc = |out_channels, use_cross_attn, attention_head_dim| unet_2d::BlockConfig {
            out_channels,
            use_cross_attn,
            attention_head_dim,
        };
        let base = unet_2d::UNet2DConditionModelConfig {
            blocks: vec![
                bc(320, Some(1), 8),
                bc(640, Some(1), 8),
                bc(1280, Some(1), 8),
                bc(1280, None, 8),
            ],
            center_input_sample: false,
            cross_attention_dim: 768,
            downsample_padding: 1,
            flip_sin_to_cos: true,
            freq_shift: 0.,
            layers_per_block: 2,
            mid_block_scale_factor: 1.,
            norm_eps: 1e-5,
            norm_num_groups: 32,
            sliced_attention_size: None,
            use_linear_projection: false,
        };
        match self {
            // `shapes` builds its own network (`shapes_net`); this config is never used for it.
            Family::Tiny | Family::Shapes => unet_2d::UNet2DConditionModelConfig {
                blocks: vec![bc(32, Some(1), 2), bc(64, Some(1), 4), bc(64, None, 4)],
                cross_attention_dim: 32,
                layers_per_block: 1,
                ..base
            },
            Family::Sd15 => base,
            Family::Sd21 => unet_2d::UNet2DConditionModelConfig {
                blocks: vec![
                    bc(320, Some(1), 5),
                    bc(640, Some(1), 10),
                    bc(1280, Some(1), 20),
                    bc(1280, None, 20),
                ],
                cross_attention_dim: 1024,
                use_linear_projection: true,
                ..base
            },
            Family::TinyXl => unet_2d::UNet2DConditionModelConfig {
                blocks: vec![bc(32, None, 2), bc(64, Some(2), 4), bc(64, Some(1), 4)],
                cross_attention_dim: 32 + 48,
                layers_per_block: 1,
                use_linear_projection: true,
                ..base
            },
            Family::Sdxl | Family::SdxlTurbo => unet_2d::UNet2DConditionModelConfig {
                blocks: vec![
                    bc(320, None, 5),
                    bc(640, Some(2), 10),
                    bc(1280, Some(10), 20),
                ],
                cross_attention_dim: 2048,
                use_linear_projection: true,
                ..base
            },
        }
    }

    /// The VAE architecture.
    pub fn vae_config(self) -> vae::AutoEncoderKLConfig {
        let block_out_channels = match self {
            // `shapes` has no VAE; this config is never used for it.
            Family::Tiny | Family::TinyXl | Family::Shapes => vec![32, 32, 64, 64],
            _ => vec![128, 256, 512, 512],
        };
        vae::AutoEncoderKLConfig {
            block_out_channels,
            layers_per_block: if matches!(self, Family::Tiny | Family::TinyXl | Family::Shapes) {
                1
            } else {
                2
            },
            latent_channels: 4,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }
}

/// A CLIP text transformer with the real models' vocabulary and positions.
fn clip(
    width: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    activation: Activation,
    projection: Option<usize>,
) -> ClipConfig {
    ClipConfig {
        vocab_size: 49408,
        width,
        layers,
        heads,
        intermediate,
        max_positions: 77,
        activation,
        projection,
    }
}

impl Family {
    /// The text encoder of the families with one (its final-normed last state conditions the
    /// UNet); `None` for SDXL's two ([`Family::xl`]) and the shapes family's own.
    pub fn text_config(self) -> Option<ClipConfig> {
        match self {
            Family::Tiny => Some(ClipConfig {
                vocab_size: 1024,
                ..clip(32, 2, 2, 64, Activation::QuickGelu, None)
            }),
            // openai/clip-vit-large-patch14's text model.
            Family::Sd15 => Some(clip(768, 12, 12, 3072, Activation::QuickGelu, None)),
            // OpenCLIP ViT-H: 24 layers, of which SD 2.x reads the 23rd's output (diffusers'
            // text_encoder has 23).
            Family::Sd21 => Some(clip(1024, 23, 16, 4096, Activation::Gelu, None)),
            Family::Sdxl | Family::SdxlTurbo | Family::TinyXl | Family::Shapes => None,
        }
    }

    /// The SDXL families' text encoders and micro-conditioning; `None` for the others.
    pub fn xl(self) -> Option<XlConfig> {
        match self {
            // stabilityai/stable-diffusion-xl-base-1.0: text_encoder{,_2}/config.json, unet/config.json.
            Family::Sdxl | Family::SdxlTurbo => Some(XlConfig {
                clip_l: clip(768, 12, 12, 3072, Activation::QuickGelu, None),
                clip_g: clip(1280, 32, 20, 5120, Activation::Gelu, Some(1280)),
                text_time: TextTimeConfig {
                    time_embed_dim: 256,
                    pooled_dim: 1280,
                },
                zeros_for_empty_negative: true,
            }),
            Family::TinyXl => Some(XlConfig {
                clip_l: ClipConfig {
                    vocab_size: 1024,
                    ..clip(32, 2, 2, 64, Activation::QuickGelu, None)
                },
                clip_g: ClipConfig {
                    vocab_size: 1024,
                    ..clip(48, 2, 2, 96, Activation::Gelu, Some(48))
                },
                text_time: TextTimeConfig {
                    time_embed_dim: 8,
                    pooled_dim: 48,
                },
                zeros_for_empty_negative: true,
            }),
            Family::Tiny | Family::Sd15 | Family::Sd21 | Family::Shapes => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_round_trip_through_serde() {
        for f in Family::ALL {
            let yaml = serde_json::to_string(&f).unwrap();
            assert_eq!(yaml, format!("\"{}\"", f.as_str()));
            assert_eq!(serde_json::from_str::<Family>(&yaml).unwrap(), f);
        }
    }

    #[test]
    fn defaults_match_the_published_configs() {
        assert_eq!(Family::Sd15.defaults().vae_scale, 0.18215);
        assert_eq!(Family::Sdxl.defaults().vae_scale, 0.13025);
        assert_eq!(Family::Sd21.defaults().prediction, Prediction::V);
        assert_eq!(Family::SdxlTurbo.defaults().steps, 1);
        let xl = Family::Sdxl.xl().unwrap();
        // unet/config.json: projection_class_embeddings_input_dim 2816, cross_attention_dim 2048.
        assert_eq!(
            xl.text_time.pooled_dim + 6 * xl.text_time.time_embed_dim,
            2816
        );
        assert_eq!(
            xl.clip_l.width + xl.clip_g.width,
            Family::Sdxl.unet_config().cross_attention_dim
        );
        let tiny = Family::TinyXl.xl().unwrap();
        assert_eq!(
            tiny.clip_l.width + tiny.clip_g.width,
            Family::TinyXl.unet_config().cross_attention_dim
        );
        assert!(Family::Sd15.xl().is_none());
        for f in Family::ALL {
            let d = f.defaults();
            assert_eq!(d.width % d.vae_downscale, 0);
            if f == Family::Shapes {
                assert_eq!((d.vae_downscale, d.latent_channels), (1, 3), "pixel space");
                continue;
            }
            let blocks = f.vae_config().block_out_channels.len() as u32;
            assert_eq!(1 << (blocks - 1), d.vae_downscale, "{f}");
        }
    }
}
