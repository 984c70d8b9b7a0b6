//! GEGLU's gate for inference: `a · gelu(b)` for the two halves `[a, b]` of the last dimension,
//! in one pass (candle: a slice copy, an erf per value through the C library, a product). The
//! gate runs inside the input projection's pass ([`super::Linear::forward_geglu`]) on each block
//! of rows while the projection is in cache.

use candle_core::{D, Result, Tensor, bail};

use super::math::{ExpConsts, gelu, gelu_below, vectorized};

/// `out` rows (`inner` values each) from `h` rows (`2 · inner`), on the CPU's widest vectors.
pub(super) fn gate(out: &mut [f32], h: &[f32], inner: usize) {
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
pub(super) fn candle(h: &Tensor) -> Result<Tensor> {
    let width = h.dim(D::Minus1)?;
    if width % 2 != 0 {
        bail!("geglu: the last dimension of {:?} must be even", h.shape());
    }
    let inner = width / 2;
    h.narrow(D::Minus1, 0, inner)? * h.narrow(D::Minus1, inner, inner)?.gelu_erf()?
}

#[cfg(test)]
mod tests {
    use super::super::Linear;
    use super::super::tests::{max_diff, randn};
    use candle_core::Var;

    /// The fused projection and gate against candle's ops (which the layer falls back to when
    /// gradients are tracked): 2 × 40 values a row (whole vectors and a tail on every vector
    /// width), several token blocks with a short last one; an odd width is an error.
    #[test]
    fn matches_candles_ops_and_keeps_gradients() {
        let layer = Linear::new(randn(&[80, 24], 31, 0.0), Some(randn(&[80], 32, 0.0)));
        let x = (randn(&[2, 131, 24], 33, 0.0) * 3.0).unwrap();
        let ours = layer.forward_geglu(&x).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let theirs = layer.forward_geglu(&xv).unwrap();
        assert_eq!(ours.dims(), &[2, 131, 40]);
        assert!(max_diff(&ours, &theirs) <= 1e-4 * 3.0);
        let grads = theirs.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&xv).is_some());
        let odd = Linear::new(randn(&[7, 24], 34, 0.0), None);
        let err = odd.forward_geglu(&x).unwrap_err().to_string();
        assert!(err.starts_with("geglu: the projection's width 7"), "{err}");
    }

    /// An image's rows come out the same alone and in a batch.
    #[test]
    fn an_image_is_the_same_alone_and_in_a_batch() {
        let layer = Linear::new(randn(&[64, 16], 35, 0.0), Some(randn(&[64], 36, 0.0)));
        let x = randn(&[3, 100, 16], 37, 0.0);
        let all = layer.forward_geglu(&x).unwrap();
        let second = layer.forward_geglu(&x.narrow(0, 1, 1).unwrap()).unwrap();
        assert_eq!(max_diff(&all.narrow(0, 1, 1).unwrap(), &second), 0.0);
    }
}
