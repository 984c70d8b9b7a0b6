//! GEGLU's gate for inference: `a · gelu(b)` for the two halves `[a, b]` of the last dimension,
//! in one pass (candle: a slice copy, an erf per value through the C library, a product). The
//! gate runs inside the input projection's pass ([`crate::linear::Linear::forward_geglu`], whose
//! tests cover it) on each block of rows while the projection is in cache.

use candle_core::{D, Result, Tensor, bail};

use crate::math::{ExpConsts, gelu, gelu_below, vectorized};

/// `out` rows (`inner` values each) from `h` rows (`2 · inner`), on the CPU's widest vectors.
pub(crate) fn gate(out: &mut [f32], h: &[f32], inner: usize) {
    vectorized(GateRows { out, h, inner });
}

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

/// [`gate`] as candle's ops (where gradients flow, or off the CPU).
///
/// # Errors
/// When the last dimension is odd.
pub(crate) fn candle(h: &Tensor) -> Result<Tensor> {
    let width = h.dim(D::Minus1)?;
    if width % 2 != 0 {
        bail!("geglu: the last dimension of {:?} must be even", h.shape());
    }
    let inner = width / 2;
    h.narrow(D::Minus1, 0, inner)? * h.narrow(D::Minus1, inner, inner)?.gelu_erf()?
}
