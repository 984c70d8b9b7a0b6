//! Nearest-neighbour upsampling for inference, one `(image, channel)` plane per task. candle's
//! `upsample_nearest2d` copies every value on the calling thread while the pool's other threads
//! idle, and the VAE decoder's upsamplers make planes of up to the image's size.

use candle_core::{Device, Result, Tensor};

use crate::cpu::{cpu_inference, with_cpu_values};
use crate::parallel::par_blocks;

/// `x` `(n, c, h, w)` to `(n, c, out_h, out_w)`, output pixel `(y, x)` taking input pixel
/// `(⌊y · h / out_h⌋, ⌊x · w / out_w⌋)` computed as candle computes it (in f64, clamped), so the
/// values are candle's `upsample_nearest2d`'s; which it is on other devices and where gradients
/// flow.
///
/// # Errors
/// When `x` is not of rank 4.
pub fn upsample_nearest2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if !cpu_inference(&[x]) || n * c * h * w * out_h * out_w == 0 {
        return x.upsample_nearest2d(out_h, out_w);
    }
    let source = |len: usize, out: usize| -> Vec<usize> {
        let scale = len as f64 / out as f64;
        (0..out)
            .map(|i| ((i as f64 * scale) as usize).min(len - 1))
            .collect()
    };
    let (rows, cols) = (source(h, out_h), source(w, out_w));
    let y = with_cpu_values(&[Some(x)], |v| {
        let x = v[0].unwrap_or_default();
        par_blocks(n * c * out_h * out_w, out_h * out_w, |plane, out| {
            let src = &x[plane * h * w..][..h * w];
            for (row, &r) in out.chunks_exact_mut(out_w).zip(&rows) {
                let src = &src[r * w..][..w];
                for (o, &col) in row.iter_mut().zip(&cols) {
                    *o = src[col];
                }
            }
        })
    })?;
    Tensor::from_vec(y, (n, c, out_h, out_w), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::randn;
    use candle_core::Var;

    /// candle's values for doubling, for odd target sizes (the UNet's `upsample_size`) and for a
    /// shrink; tracked inputs take candle's path.
    #[test]
    fn matches_candles_upsample() {
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (dims, (oh, ow)) in [
            ([2, 3, 8, 8], (16, 16)),
            ([1, 2, 5, 7], (11, 13)),
            ([1, 1, 6, 6], (3, 4)),
        ] {
            let x = randn(&dims, 51, 0.0);
            let theirs = x.upsample_nearest2d(oh, ow).unwrap();
            let ours = upsample_nearest2d(&x, oh, ow).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(values(&ours), values(&theirs), "{dims:?} → {oh}×{ow}");
            let tracked = upsample_nearest2d(&Var::from_tensor(&x).unwrap(), oh, ow).unwrap();
            assert_eq!(values(&tracked), values(&theirs));
        }
        assert!(upsample_nearest2d(&randn(&[2, 3, 4], 52, 0.0), 8, 8).is_err());
    }
}
