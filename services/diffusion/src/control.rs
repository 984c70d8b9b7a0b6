//! A job's ControlNets with their control images, made into the denoising loop's [`Guide`]s at
//! the size of each pass (the hires fix's refining pass reads the images at its own size).

use candle_core::{DType, Device, Tensor};
use pixelfarm_core::{ControlSpec, Error, Result, RgbImage};
use std::sync::Arc;

use crate::controlnet::ControlNet;
use crate::denoise::Guide;
use crate::failure::render_error;

/// The ControlNets of one job, each with its entry of the job's `control` and its image as the
/// worker made it (any size).
pub(crate) struct JobControl<'a> {
    pub nets: Vec<Arc<ControlNet>>,
    pub specs: Vec<ControlSpec>,
    pub images: &'a [RgbImage],
}

impl JobControl<'_> {
    /// No ControlNet: every group render.
    pub const NONE: JobControl<'static> = JobControl {
        nets: Vec::new(),
        specs: Vec::new(),
        images: &[],
    };

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The guides of a pass at `width x height`: each image resized bilinearly to it (as init
    /// images are), in 0..1, and embedded by its ControlNet in `dtype` once for the whole pass.
    ///
    /// # Errors
    /// `Permanent` for an image that is empty or whose buffer does not match its size, or when
    /// the images are not one per ControlNet; `Transient` when the device fails.
    pub fn guides(
        &self,
        width: u32,
        height: u32,
        device: &Device,
        dtype: DType,
    ) -> Result<Vec<Guide>> {
        if self.images.len() != self.nets.len() || self.specs.len() != self.nets.len() {
            return Err(Error::permanent(format!(
                "the job has {} ControlNets and {} control images; accepted: one image each",
                self.nets.len(),
                self.images.len()
            )));
        }
        self.nets
            .iter()
            .zip(&self.specs)
            .zip(self.images)
            .map(|((net, spec), image)| {
                let sized = image.resized(width, height).map_err(|e| {
                    Error::permanent(format!("control image `{}` {e}", spec.image.key))
                })?;
                let pixels: Vec<f32> = sized.rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
                let hint =
                    Tensor::from_vec(pixels, (1, height as usize, width as usize, 3), device)
                        .and_then(|t| t.permute((0, 3, 1, 2))?.contiguous())
                        .and_then(|image| net.condition(&image, dtype))
                        .map_err(render_error)?;
                Ok(Guide {
                    net: net.clone(),
                    hint,
                    spec: spec.clone(),
                })
            })
            .collect()
    }
}
