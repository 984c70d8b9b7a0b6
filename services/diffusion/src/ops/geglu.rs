//! GEGLU's gate for inference: `a · gelu(b)` for the two halves `[a, b]` of the last dimension,
//! in one pass (candle: a slice copy, an erf per value through the C library, a product).

use candle_core::{CpuStorage, CustomOp1, D, Layout, Result, Shape, Tensor, bail};

use super::math::{ExpConsts, gelu, gelu_below, vectorized};
use super::{cpu_inference, f32_slice};

/// Rows per task.
const ROWS: usize = 64;

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "pixelfarm-geglu"
    }

    fn cpu_fwd(&self, hs: &CpuStorage, hl: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = hl.shape().dims();
        let width = dims.last().copied().unwrap_or(0);
        if width == 0 || width % 2 != 0 {
            bail!(
                "geglu: the last dimension of {:?} must be even and not 0",
                hl.shape()
            );
        }
        let h = f32_slice(hs, hl, "geglu input")?;
        let inner = width / 2;
        let out = super::par_blocks(h.len() / 2, ROWS * inner, |i, out| {
            let h = &h[i * ROWS * width..][..2 * out.len()];
            vectorized(GateRows { out, h, inner });
        });
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = inner;
        }
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `out` rows (`inner` values each) from `h` rows (`2 · inner`).
struct GateRows<'a> {
    out: &'a mut [f32],
    h: &'a [f32],
    inner: usize,
}

impl pulp::WithSimd for GateRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let inner = self.inner;
        let k = ExpConsts::new(simd);
        for (o, h) in self.out.chunks_mut(inner).zip(self.h.chunks(2 * inner)) {
            let (a, b) = h.split_at(inner);
            let (o, o_tail) = S::as_mut_simd_f32s(o);
            let (a, a_tail) = S::as_simd_f32s(a);
            let (b, b_tail) = S::as_simd_f32s(b);
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = simd.mul_f32s(a, gelu_below(simd, &k, b));
            }
            // The values past the last whole vector (when `inner` is not a multiple of it).
            for ((o, &a), &b) in o_tail.iter_mut().zip(a_tail).zip(b_tail) {
                *o = a * gelu(b);
            }
        }
    }
}

/// `a · gelu(b)` (exact GELU) where `[a, b]` are the two halves of `h`'s last dimension. In one
/// pass on a CPU in f32 when no gradient flows through `h` (inference), else candle's ops.
///
/// # Errors
/// When the last dimension is odd.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if cpu_inference(&[h]) {
        h.contiguous()?.apply_op1_no_bwd(&Geglu)
    } else {
        let width = h.dim(D::Minus1)?;
        if width % 2 != 0 {
            bail!("geglu: the last dimension of {:?} must be even", h.shape());
        }
        let inner = width / 2;
        h.narrow(D::Minus1, 0, inner)? * h.narrow(D::Minus1, inner, inner)?.gelu_erf()?
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_diff, randn};
    use super::*;
    use candle_core::Var;

    #[test]
    fn matches_candles_ops_and_keeps_gradients() {
        // 2 × 40 values a row: whole vectors and a tail on every vector width.
        let h = (randn(&[2, 131, 80], 31, 0.0) * 3.0).unwrap();
        let ours = geglu(&h).unwrap();
        let hv = Var::from_tensor(&h).unwrap();
        let theirs = geglu(&hv).unwrap();
        assert_eq!(ours.dims(), &[2, 131, 40]);
        assert!(max_diff(&ours, &theirs) <= 1e-5);
        let grads = theirs.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&hv).is_some());
        assert!(geglu(&randn(&[2, 3], 32, 0.0)).is_err());
    }
}
