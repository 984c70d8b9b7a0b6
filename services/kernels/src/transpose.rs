//! `(n, a, b) → (n, b, a)` for inference: the spatial transformers' moves between the image layout
//! `(n, c, h·w)` and the tokens `(n, h·w, c)`, and back. candle does it as a strided copy, element
//! by element on the calling thread while the pool's other threads idle; here blocks of output
//! rows are copied on the pool.

use candle_core::{Device, Result, Tensor};

use crate::cpu::{cpu_inference, with_cpu_values};
use crate::parallel::par_blocks;

/// Output values per task (rounded to whole output rows).
const BLOCK_FLOATS: usize = 16 * 1024;

/// `x` `(n, a, b)` transposed to a contiguous `(n, b, a)`: the same values (a copy is exact), on
/// the pool on a CPU when no gradient is tracked, else candle's `transpose(1, 2)` and
/// `contiguous`.
///
/// # Errors
/// When `x` is not of rank 3.
pub fn transpose_last(x: &Tensor) -> Result<Tensor> {
    let (n, a, b) = x.dims3()?;
    if !cpu_inference(&[x]) || n * a * b == 0 {
        return x.transpose(1, 2)?.contiguous();
    }
    let y = with_cpu_values(&[Some(x)], |v| {
        let x = v[0].unwrap_or_default();
        let rows = (BLOCK_FLOATS / a).max(1);
        par_blocks(n * a * b, rows * a, |i, out| {
            // Output row `r` (global over the images) is column `r % b` of image `r / b`.
            for (k, row) in out.chunks_exact_mut(a).enumerate() {
                let r = i * rows + k;
                let (image, col) = (r / b, r % b);
                let src = &x[image * a * b + col..];
                for (j, o) in row.iter_mut().enumerate() {
                    *o = src[j * b];
                }
            }
        })
    })?;
    Tensor::from_vec(y, (n, b, a), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::randn;
    use candle_core::Var;

    /// The same values as candle's transpose, for shapes whose blocks end inside an image and
    /// shapes with fewer values than a block; tracked inputs take candle's path.
    #[test]
    fn matches_candles_transpose() {
        for dims in [[2, 32, 1024], [3, 1000, 40], [1, 7, 5], [2, 1, 9]] {
            let x = randn(&dims, 41, 0.0);
            let theirs = x.transpose(1, 2).unwrap().contiguous().unwrap();
            let ours = transpose_last(&x).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(values(&ours), values(&theirs), "{dims:?}");
            let tracked = transpose_last(&Var::from_tensor(&x).unwrap()).unwrap();
            assert_eq!(values(&tracked), values(&theirs), "{dims:?}");
        }
        assert!(transpose_last(&randn(&[2, 3], 42, 0.0)).is_err());
    }
}
