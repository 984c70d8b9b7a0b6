//! Scaled dot-product attention for inference, a block of queries at a time: each block's
//! `(queries × keys)` scores are computed, soft-maxed in place and multiplied by the values while
//! they are still in cache, instead of one `(tokens × tokens)` matrix per head going through
//! memory three times (scores, softmax, product) as separate tensor ops.
//!
//! The kernels are pixelfarm's own, on `pulp` vectors (AVX-512 or AVX2 + FMA, chosen at run time),
//! with the query rows along the vector lanes (see [`Block`]): the softmax's max and sum are then
//! per lane, and keys and values are single values broadcast from where they lie. The SD UNets'
//! heads are narrow (d = 16 in the tiny model, 40–160 in SD), where a general gemm spends as much
//! on packing and edge tiles as on products. The heads are read from and written to the
//! `(images, tokens, heads · d)` layout the linear projections produce, by stride, so no head is
//! copied out or back in (as candle's ops would, in four single-threaded strided copies per
//! attention).
//!
//! Blocks are fixed runs of one image's and one head's query rows and every sum runs in a fixed
//! order, so a head's result does not depend on the batch or the thread count.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::broadcast;
use crate::cpu::{cpu_inference, f32_slice};
use crate::math::{ExpConsts, MAX_LANES, exp_below, vectorized};
use crate::parallel::{OutPtr, filled, with_scratch};

/// Query rows per block: 64 rows of scores against 1,024 keys are 256 KiB.
const QUERY_BLOCK: usize = 64;

/// `softmax(q kᵀ · scale) v` per head, for `q` `(n, s, heads · d)`, `k` `(n, t, heads · d)` and
/// `v` `(n, t, heads · dv)`; the output is `(n, s, heads · dv)`.
#[derive(Debug, Clone, Copy)]
struct Attention {
    heads: usize,
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
        let (n, s, c) = ql.shape().dims3()?;
        let (kn, t, kc) = kl.shape().dims3()?;
        let (vn, vt, cv) = vl.shape().dims3()?;
        let heads = self.heads;
        if kn != n || vn != n || kc != c || vt != t || t == 0 || heads == 0 {
            bail!(
                "attention: query {:?}, key {:?} and value {:?} do not fit",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        if c == 0 || cv == 0 || c % heads != 0 || cv % heads != 0 {
            bail!("attention: {heads} heads do not divide query width {c} and value width {cv}");
        }
        let (d, dv) = (c / heads, cv / heads);
        let q = f32_slice(qs, ql, "query")?;
        let k = f32_slice(ks, kl, "key")?;
        let v = f32_slice(vs, vl, "value")?;
        let work: Vec<(usize, usize, usize)> = (0..n)
            .flat_map(|i| (0..heads).map(move |h| (i, h)))
            .flat_map(|(i, h)| (0..s).step_by(QUERY_BLOCK).map(move |q0| (i, h, q0)))
            .collect();
        let fill = |dst: OutPtr| {
            work.par_iter().for_each(|&(i, h, q0)| {
                let rows = (s - q0).min(QUERY_BLOCK);
                let sizes = Block::sizes(rows, (t, d, dv));
                // The scratch's values are whatever earlier tasks left: every value a real row
                // reads is written first.
                with_scratch(sizes.iter().sum(), |scratch| {
                    // This head's keys and values: `d` and `dv` values at offsets `h · d` and
                    // `h · dv` of each of this image's rows, read in place.
                    let keys = &k[i * t * c + h * d..][..(t - 1) * c + d];
                    let values = &v[i * t * cv + h * dv..][..(t - 1) * cv + dv];
                    let mut block = Block::new(scratch, sizes, (t, d, dv), (keys, c), (values, cv));
                    // The queries transposed, with the scale on them (d × rows), not on the
                    // scores (t × rows).
                    for r in 0..rows {
                        let src = &q[(i * s + q0 + r) * c + h * d..][..d];
                        for (x, &value) in src.iter().enumerate() {
                            block.qt[x * block.width + r] = value * self.scale;
                        }
                    }
                    let sums = vectorized(&mut block);
                    // SAFETY: this task writes rows `q0..q0 + rows` of image `i`, columns
                    // `h · dv..(h + 1) · dv`, of the `(n, s, cv)` output: inside it, and a block
                    // no other task writes (the tasks' (image, head, query block) are distinct);
                    // the output is not otherwise touched until every task has returned.
                    #[allow(unsafe_code)]
                    unsafe {
                        let o = dst.at((i * s + q0) * cv + h * dv);
                        for (r, sum) in sums.iter().enumerate().take(rows) {
                            let row = std::slice::from_raw_parts_mut(o.add(r * cv), dv);
                            // Each row over its sum: the softmax's division on dv values, not t.
                            let inv = 1.0 / sum;
                            for (x, o) in row.iter_mut().enumerate() {
                                *o = block.out[x * block.width + r] * inv;
                            }
                        }
                    }
                });
            });
        };
        // SAFETY: the tasks are every (image, head, block of query rows), and each writes all
        // `dv` values of its head in each of its rows: together every value of the output.
        #[allow(unsafe_code)]
        let out = unsafe { filled(n * s * cv, fill) };
        Ok((CpuStorage::F32(out), Shape::from((n, s, cv))))
    }
}

/// Vectors of query rows per register tile: a block's rows are padded to a multiple of this
/// many vectors, so both products run on whole tiles only.
const ROW_VECTORS: usize = broadcast::TILE_VECTORS;

/// One block of query rows of one head, everything transposed so that the CPU's vectors run
/// along the query rows: queries `(d, width)`, scores `(t, width)` and the unnormalised output
/// `(dv, width)`, with `width` the rows rounded up to whole tiles. The row max and sum of the
/// softmax are then per lane (no horizontal reductions), and keys and values are read as single
/// values broadcast from their own layout (no packing). Padding columns hold whatever the
/// scratch held: no real row reads them.
struct Block<'a> {
    qt: &'a mut [f32],
    scores: &'a mut [f32],
    out: &'a mut [f32],
    /// The head's keys: `t` rows of `d` values, `stride` apart.
    keys: (&'a [f32], usize),
    /// The head's values: `t` rows of `dv` values, `stride` apart.
    values: (&'a [f32], usize),
    width: usize,
    t: usize,
    d: usize,
    dv: usize,
}

impl<'a> Block<'a> {
    /// The lengths of the buffers of a block of `rows` query rows: queries, scores and output,
    /// `width` (the rows rounded up to whole tiles) columns each.
    fn sizes(rows: usize, (t, d, dv): (usize, usize, usize)) -> [usize; 3] {
        // A block's width is a multiple of `ROW_VECTORS` of the widest vectors.
        let tile = ROW_VECTORS * MAX_LANES;
        let width = rows.div_ceil(tile) * tile;
        [d * width, t * width, dv * width]
    }

    /// The block's buffers ([`Block::sizes`]), carved out of `scratch`.
    fn new(
        scratch: &'a mut [f32],
        sizes: [usize; 3],
        (t, d, dv): (usize, usize, usize),
        keys: (&'a [f32], usize),
        values: (&'a [f32], usize),
    ) -> Self {
        let (qt, rest) = scratch.split_at_mut(sizes[0]);
        let (scores, rest) = rest.split_at_mut(sizes[1]);
        Block {
            qt,
            scores,
            out: &mut rest[..sizes[2]],
            keys,
            values,
            width: sizes[0] / d,
            t,
            d,
            dv,
        }
    }
}

impl pulp::WithSimd for &mut Block<'_> {
    /// Each column's (query row's) sum of `e^(score − max)`, `width` of them.
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        let (t, d, dv, width) = (self.t, self.d, self.dv, self.width);
        // scores (t × width) = keys (t × d) · qt (d × width), keys `stride` apart.
        let (keys, k_stride) = self.keys;
        let keys = (keys, k_stride, 1);
        // out (dv × width) = valuesᵀ (dv × t) · e^scores (t × width), values `stride` apart.
        let (values, v_stride) = self.values;
        let values = (values, 1, v_stride);
        // Tiles of keys (or value columns) × row vectors.
        broadcast::product(simd, self.qt, keys, (t, d), width, None, self.scores);
        let sums = softmax_kernel(simd, self);
        broadcast::product(simd, self.scores, values, (dv, t), width, None, self.out);
        sums
    }
}

/// The vectors a block's `width` columns make, and how many.
#[inline(always)]
fn row_vectors<S: pulp::Simd>(width: usize) -> usize {
    let lanes = size_of::<S::f32s>() / size_of::<f32>();
    assert!(
        width.is_multiple_of(ROW_VECTORS * lanes),
        "attention: block width {width} is not whole tiles"
    );
    width / lanes
}

/// Each score column (query row) `← e^(score − max)`, in place; returns the columns' sums.
#[inline(always)]
fn softmax_kernel<S: pulp::Simd>(simd: S, b: &mut Block) -> Vec<f32> {
    let rv = row_vectors::<S>(b.width);
    let k = ExpConsts::new(simd);
    let scores = S::as_mut_simd_f32s(b.scores).0;
    let mut sums = vec![0f32; b.width];
    let sum_vectors = S::as_mut_simd_f32s(&mut sums).0;
    for g in (0..rv).step_by(ROW_VECTORS) {
        let mut top = [simd.splat_f32s(f32::NEG_INFINITY); ROW_VECTORS];
        for row in scores.chunks_exact(rv) {
            for (m, &x) in top.iter_mut().zip(&row[g..g + ROW_VECTORS]) {
                *m = simd.max_f32s(*m, x);
            }
        }
        let mut sum = [simd.splat_f32s(0.0); ROW_VECTORS];
        for row in scores.chunks_exact_mut(rv) {
            for ((x, s), &m) in row[g..g + ROW_VECTORS].iter_mut().zip(&mut sum).zip(&top) {
                *x = exp_below(simd, &k, simd.sub_f32s(*x, m));
                *s = simd.add_f32s(*s, *x);
            }
        }
        sum_vectors[g..g + ROW_VECTORS].copy_from_slice(&sum);
    }
    sums
}

/// `softmax(q kᵀ · scale) v` over `heads` heads, for `q` `(n, s, heads · d)`, `k` `(n, t, heads · d)`
/// and `v` `(n, t, heads · dv)` (head `h` is columns `h · d..(h + 1) · d`), giving `(n, s, heads · dv)`.
/// In one blocked pass on a CPU in f32 when no gradient flows through the inputs (inference), else
/// as candle tensor ops (with candle's fused softmax kernel when no gradient flows).
///
/// # Errors
/// When the shapes do not fit.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    if cpu_inference(&[q, k, v]) {
        return q.contiguous()?.apply_op3_no_bwd(
            &k.contiguous()?,
            &v.contiguous()?,
            &Attention {
                heads,
                scale: scale as f32,
            },
        );
    }
    let (n, s, c) = q.dims3()?;
    let cv = v.dims3()?.2;
    if heads == 0 || c % heads != 0 || cv % heads != 0 {
        bail!("attention: {heads} heads do not divide query width {c} and value width {cv}");
    }
    let split = |t: &Tensor| -> Result<Tensor> {
        let (n, s, c) = t.dims3()?;
        t.reshape((n, s, heads, c / heads))?
            .transpose(1, 2)?
            .reshape((n * heads, s, c / heads))
    };
    let scores = (split(q)? * scale)?.matmul(&split(k)?.t()?)?;
    let probs = if scores.track_op() {
        // `softmax`, not `softmax_last_dim`: candle's fused one has no backward.
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?
    } else {
        // Inference on a GPU or in f16: one kernel instead of five passes over the scores.
        candle_nn::ops::softmax_last_dim(&scores)?
    };
    let y = probs.matmul(&split(v)?)?;
    y.reshape((n, heads, s, cv / heads))?
        .transpose(1, 2)?
        .reshape((n, s, cv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_diff, randn};
    use candle_core::Var;

    /// The reference: each head copied out, candle's ops, the heads copied back.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Tensor {
        let split = |t: &Tensor| {
            let (n, s, c) = t.dims3().unwrap();
            let t = t.reshape((n, s, heads, c / heads)).unwrap();
            t.transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let scores = (split(q) * scale)
            .unwrap()
            .matmul(&split(k).t().unwrap())
            .unwrap();
        let y = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .matmul(&split(v))
            .unwrap();
        let (n, s, _) = q.dims3().unwrap();
        let cv = v.dims3().unwrap().2;
        y.transpose(1, 2).unwrap().reshape((n, s, cv)).unwrap()
    }

    /// Against candle's ops: several images, heads and query blocks (the last one short), self-
    /// and cross-attention, value heads narrower than key heads, large scores (the max
    /// subtraction), one key.
    #[test]
    fn matches_the_composed_ops() {
        for (n, heads, s, t, d, dv, spread) in [
            (2, 3, 150, 150, 16, 16, 1.0),
            (1, 2, 70, 77, 8, 8, 1.0),
            (2, 2, 40, 30, 8, 4, 1.0),
            (1, 1, 5, 1, 4, 6, 1.0),
            (2, 2, 64, 33, 8, 8, 30.0),
        ] {
            let q = (randn(&[n, s, heads * d], 1, 0.0) * spread).unwrap();
            let k = randn(&[n, t, heads * d], 2, 0.0);
            let v = randn(&[n, t, heads * dv], 3, 0.0);
            let scale = 1.0 / (d as f64).sqrt();
            let ours = attention(&q, &k, &v, heads, scale).unwrap();
            let diff = max_diff(&ours, &composed(&q, &k, &v, heads, scale));
            assert!(diff <= 1e-5, "heads {heads} s {s} t {t}: {diff}");
        }
    }

    /// An image gives the same bits alone and in a batch, and gradients still flow when asked.
    #[test]
    fn an_image_is_the_same_alone_and_gradients_fall_back() {
        let (q, k, v) = (
            randn(&[4, 100, 16], 4, 0.0),
            randn(&[4, 90, 16], 5, 0.0),
            randn(&[4, 90, 16], 6, 0.0),
        );
        let all = attention(&q, &k, &v, 2, 0.3).unwrap();
        let one = |t: &Tensor| t.narrow(0, 2, 1).unwrap();
        let alone = attention(&one(&q), &one(&k), &one(&v), 2, 0.3).unwrap();
        assert_eq!(max_diff(&one(&all), &alone), 0.0);
        let qv = Var::from_tensor(&q).unwrap();
        let y = attention(&qv, &k, &v, 2, 0.3).unwrap();
        assert!(max_diff(&y, &all) <= 1e-5);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&qv).is_some());
    }

    #[test]
    fn mismatched_shapes_are_an_error_not_a_panic() {
        let q = randn(&[2, 5, 4], 7, 0.0);
        let (k, v) = (randn(&[2, 6, 4], 8, 0.0), randn(&[2, 6, 4], 9, 0.0));
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(attention(&q, &randn(&[2, 6, 3], 8, 0.0), &v, 1, 1.0)).contains("do not fit"));
        assert!(err(attention(&q, &k, &randn(&[2, 7, 4], 9, 0.0), 1, 1.0)).contains("do not fit"));
        assert!(err(attention(&q, &k, &v, 3, 1.0)).contains("3 heads do not divide"));
        let tracked = Var::from_tensor(&q).unwrap();
        assert!(err(attention(&tracked, &k, &v, 3, 1.0)).contains("3 heads do not divide"));
    }
}
