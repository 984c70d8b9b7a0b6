//! What training minimises.

use anyhow::Result;
use candle_core::Tensor;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesText, ShapesUnet};

use super::batch::Batch;

/// The (weighted) v-prediction loss of `unet` with `text` on `b`, its backward reaching `reach`.
///
/// # Errors
/// Only for candle errors.
pub fn loss(unet: &ShapesUnet, text: &ShapesText, b: &Batch, reach: Reach) -> Result<Tensor> {
    let xt = (b.x0.broadcast_mul(&b.alpha)? + b.noise.broadcast_mul(&b.sigma)?)?;
    let v = (b.noise.broadcast_mul(&b.alpha)? - b.x0.broadcast_mul(&b.sigma)?)?;
    let ctx = match reach {
        Reach::All => text.forward(&b.ids)?,
        Reach::Refiner => text.forward(&b.ids)?.detach(),
    };
    let pred = unet.forward_with(&xt, &b.t, &ctx, reach)?;
    Ok((pred - v)?.sqr()?.broadcast_mul(&b.weight)?.mean_all()?)
}
