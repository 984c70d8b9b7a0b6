//! Scaled dot-product attention for inference, a block of queries at a time: each block's
//! `(queries × keys)` scores are computed, soft-maxed in place and multiplied by the values while
//! they are still in cache, instead of one `(tokens × tokens)` matrix per head going through
//! memory three times (scores, softmax, product) as separate tensor ops.
//!
//! Blocks are fixed runs of one head's query rows, so a head's result does not depend on the batch
//! or the thread count.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::math::{LANES, exp, max, vectorized};
use super::{cpu_inference, f32_slice, matmul_into};

/// Query rows per block: 64 rows of scores against 1,024 keys are 256 KiB.
const QUERY_BLOCK: usize = 64;

/// `softmax(q kᵀ · scale) v` for `q` `(heads, s, d)`, `k` `(heads, t, d)`, `v` `(heads, t, dv)`.
#[derive(Debug, Clone, Copy)]
struct Attention {
    scale: f32,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "pixelfarm-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (heads, s, d) = ql.shape().dims3()?;
        let (kh, t, kd) = kl.shape().dims3()?;
        let (vh, vt, dv) = vl.shape().dims3()?;
        if kh != heads || vh != heads || kd != d || vt != t || t == 0 || d == 0 || dv == 0 {
            bail!(
                "attention: query {:?}, key {:?} and value {:?} do not fit",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let q = f32_slice(qs, ql, "query")?;
        let k = f32_slice(ks, kl, "key")?;
        let v = f32_slice(vs, vl, "value")?;
        let mut out = vec![0f32; heads * s * dv];
        if s > 0 {
            out.par_chunks_mut(s * dv).enumerate().for_each(|(h, out)| {
                let (k, v) = (&k[h * t * d..][..t * d], &v[h * t * dv..][..t * dv]);
                let q = &q[h * s * d..][..s * d];
                out.par_chunks_mut(QUERY_BLOCK * dv)
                    .enumerate()
                    .for_each(|(b, out)| {
                        let rows = out.len() / dv;
                        // The scale goes on the queries (rows × d), not the scores (rows × t).
                        let q: Vec<f32> = q[b * QUERY_BLOCK * d..][..rows * d]
                            .iter()
                            .map(|&v| v * self.scale)
                            .collect();
                        let mut scores = vec![0f32; rows * t];
                        // scores (rows × t) = q (rows × d) · kᵀ (d × t)
                        matmul_into((rows, t, d), &mut scores, t, false, &q, (d, 1), k, (1, d));
                        let sums = vectorized(ExpRows(&mut scores, t));
                        // out (rows × dv) = e^scores (rows × t) · v (t × dv), then each row over
                        // its sum: the softmax's division on dv values a row instead of t.
                        matmul_into((rows, dv, t), out, dv, false, &scores, (t, 1), v, (dv, 1));
                        for (row, sum) in out.chunks_mut(dv).zip(sums) {
                            let inv = 1.0 / sum;
                            row.iter_mut().for_each(|v| *v *= inv);
                        }
                    });
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((heads, s, dv))))
    }
}

/// [`exp_shifted`] of every row of `t` values; their sums.
struct ExpRows<'a>(&'a mut [f32], usize);

impl pulp::WithSimd for ExpRows<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
        let ExpRows(scores, t) = self;
        let mut sums = Vec::with_capacity(scores.len() / t);
        for row in scores.chunks_mut(t) {
            sums.push(exp_shifted(row));
        }
        sums
    }
}

/// `row ← e^(row − max(row))`, in place; returns the new row's sum.
#[inline(always)]
fn exp_shifted(row: &mut [f32]) -> f32 {
    let top = max(row);
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (v, acc) in c.iter_mut().zip(lanes.iter_mut()) {
            *v = exp(*v - top);
            *acc += *v;
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - top);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

/// `softmax(q kᵀ · scale) v` for `q` `(heads, s, d)`, `k` `(heads, t, d)`, `v` `(heads, t, dv)`
/// (heads: batch × heads). In one blocked pass on a CPU in f32 when no gradient flows through the
/// inputs (inference), else as candle tensor ops.
///
/// # Errors
/// When the shapes do not fit.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if cpu_inference(&[q, k, v]) {
        q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &Attention {
                scale: scale as f32,
            },
        )
    } else {
        // `softmax`, not `softmax_last_dim`: candle's fused one has no backward.
        let scores = (q * scale)?.matmul(&k.t()?)?;
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?.matmul(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_diff, randn};
    use super::*;
    use candle_core::Var;

    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let scores = (q * scale).unwrap().matmul(&k.t().unwrap()).unwrap();
        candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    /// Against candle's ops: several query blocks (the last one short), self- and
    /// cross-attention, large scores (the max subtraction), one key.
    #[test]
    fn matches_the_composed_ops() {
        for (heads, s, t, d, dv, spread) in [
            (3, 150, 150, 16, 16, 1.0),
            (2, 70, 77, 8, 8, 1.0),
            (1, 5, 1, 4, 6, 1.0),
            (2, 64, 33, 8, 8, 30.0),
        ] {
            let q = (randn(&[heads, s, d], 1, 0.0) * spread).unwrap();
            let k = randn(&[heads, t, d], 2, 0.0);
            let v = randn(&[heads, t, dv], 3, 0.0);
            let scale = 1.0 / (d as f64).sqrt();
            let ours = attention(&q, &k, &v, scale).unwrap();
            let diff = max_diff(&ours, &composed(&q, &k, &v, scale));
            assert!(diff <= 1e-5, "heads {heads} s {s} t {t}: {diff}");
        }
    }

    /// A head gives the same bits alone and beside others, and gradients still flow when asked.
    #[test]
    fn a_head_is_the_same_alone_and_gradients_fall_back() {
        let (q, k, v) = (
            randn(&[4, 100, 8], 4, 0.0),
            randn(&[4, 90, 8], 5, 0.0),
            randn(&[4, 90, 8], 6, 0.0),
        );
        let all = attention(&q, &k, &v, 0.3).unwrap();
        let one = |t: &Tensor| t.narrow(0, 2, 1).unwrap();
        let alone = attention(&one(&q), &one(&k), &one(&v), 0.3).unwrap();
        assert_eq!(max_diff(&one(&all), &alone), 0.0);
        let qv = Var::from_tensor(&q).unwrap();
        let y = attention(&qv, &k, &v, 0.3).unwrap();
        assert!(max_diff(&y, &all) <= 1e-5);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&qv).is_some());
    }

    #[test]
    fn mismatched_shapes_are_an_error_not_a_panic() {
        let q = randn(&[2, 5, 4], 7, 0.0);
        assert!(
            attention(
                &q,
                &randn(&[2, 6, 3], 8, 0.0),
                &randn(&[2, 6, 4], 9, 0.0),
                1.0
            )
            .is_err()
        );
        assert!(
            attention(
                &q,
                &randn(&[2, 6, 4], 8, 0.0),
                &randn(&[2, 7, 4], 9, 0.0),
                1.0
            )
            .is_err()
        );
    }
}
