//! A render's stages one at a time — text conditioning, one denoiser call (with a ControlNet's
//! residuals), and with [`LoadedModel::decode_to_pixels`] the decode — which `bench/parity.py`
//! checks against diffusers.

use candle_core::{DType, Tensor};
use pixelfarm_core::{Error, JobParams, Result};

use super::LoadedModel;
use crate::controlnet::ControlNet;
use crate::failure::render_error;
use crate::family::Family;

impl LoadedModel {
    /// The text conditioning of `p`'s prompts, rows `[negative, prompt]` with guidance and
    /// `[prompt]` without: the cross-attention states and, for SDXL, the pooled text embedding and
    /// the time ids. With [`Self::denoiser_output`] and [`Self::decode_to_pixels`], a render's
    /// stages one at a time, which `bench/parity.py` checks against diffusers.
    ///
    /// # Errors
    /// As a render's text stage.
    pub fn text_conditioning(&self, p: &JobParams) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let cond = self.text.encode(p)?;
        Ok((cond.ctx, cond.text_time.map(|tt| (tt.pooled, tt.time_ids))))
    }

    /// The denoiser's prediction (noise or v, as the family's) for latents `x`, one row per row of
    /// `p`'s [`Self::text_conditioning`], at training timestep `t`, in f32; no guidance applied.
    /// With `control`, a ControlNet, its condition `(rows, 3, h, w)` in 0..1 and its weight, the
    /// UNet adds the ControlNet's residuals.
    ///
    /// # Errors
    /// `Transient` when the device fails, else `Permanent` (candle's errors, by variant).
    pub fn denoiser_output(
        &self,
        x: &Tensor,
        t: f64,
        p: &JobParams,
        control: Option<(&ControlNet, &Tensor, f64)>,
    ) -> Result<Tensor> {
        let cond = self.text.encode(p)?;
        let x = x.to_dtype(self.dtype).map_err(render_error)?;
        let residuals = match control {
            Some((net, image, weight)) => Some(
                net.condition(image, self.dtype)
                    .and_then(|hint| {
                        net.forward(&x, t, &cond.ctx, cond.text_time.as_ref(), &hint, weight)
                    })
                    .map_err(render_error)?,
            ),
            None => None,
        };
        self.denoiser
            .forward(&x, t, &cond, residuals.as_ref())
            .and_then(|out| out.to_dtype(DType::F32))
            .map_err(render_error)
    }

    /// A ControlNet file (sha256 checked) for this model, of `family`, in the model's dtype on
    /// its device.
    ///
    /// # Errors
    /// `Permanent` naming `name` for a file that is not a ControlNet of `family`.
    pub fn load_controlnet(&self, name: &str, family: Family, bytes: &[u8]) -> Result<ControlNet> {
        ControlNet::load(bytes, family, self.dtype, &self.device)
            .map_err(|e| Error::permanent(format!("ControlNet `{name}`: {e}")))
    }
}
