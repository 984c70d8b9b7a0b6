//! A linear layer whose CPU inference forward is one product per block of an image's tokens
//! straight into the output, with the bias and an optional residual added in the same pass.
//! candle's `Linear` adds the bias as a separate broadcast op over the whole output, which on the
//! SD blocks' token-heavy layers costs more than the product itself.
//!
//! Layers with few input features (up to [`broadcast::NARROW`]) take the register-tiled
//! broadcast product ([`crate::broadcast`]) over the weight transposed once a call (a call, not
//! once at load: training changes the weights between calls), with the bias as the sums' start;
//! wider ones take gemm, whose packing pays off there.

use candle_core::{Device, Module, Result, Tensor, bail};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::broadcast;
use crate::cpu::{cpu_inference, with_cpu_values};
use crate::geglu;
use crate::math::{MAX_LANES, vectorized};
use crate::matmul::matmul_to_ptr;
use crate::parallel::{OutPtr, filled, with_scratch};

/// Tokens per task: one image's tokens are split into blocks of this many rows, so the work of a
/// token never depends on the batch around it.
const ROWS: usize = 64;

/// `x · weightᵀ + bias`, loaded exactly like `candle_nn::linear` / `linear_no_bias`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// From `weight` `(out, in)` and an optional `bias` `(out)`, as `candle_nn::Linear::new`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `weight` `(d_out, d_in)` and, with `bias`, `bias` `(d_out)` from `vb`, loaded (and
    /// initialised for training) exactly like `candle_nn::linear` / `linear_no_bias`.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape.
    pub fn load(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let inner = if bias {
            candle_nn::linear(d_in, d_out, vb)?
        } else {
            candle_nn::linear_no_bias(d_in, d_out, vb)?
        };
        Ok(Linear::new(inner.weight().clone(), inner.bias().cloned()))
    }

    /// `forward(x)` plus `residual` (the output's shape), in the product's own pass on a CPU when
    /// no gradient is tracked, else as candle's ops.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn forward_add(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let candle = || {
            let y = candle_nn::Linear::new(self.weight.clone(), self.bias.clone()).forward(x)?;
            match residual {
                Some(r) => r + y,
                None => Ok(y),
            }
        };
        self.run(x, residual, Finish::Add, candle)
    }

    /// GEGLU over this layer's output: `a · gelu(b)` (exact GELU) for the two halves `[a, b]` of
    /// `forward(x)`'s last dimension. On a CPU when no gradient is tracked, each block of tokens'
    /// product goes into the thread's scratch and only the gated half is written out, so the
    /// full-width projection never goes through memory; else candle's ops.
    ///
    /// # Errors
    /// When the shapes do not fit or the output width is odd.
    pub fn forward_geglu(&self, x: &Tensor) -> Result<Tensor> {
        let (d_out, _) = self.weight.dims2()?;
        if d_out % 2 != 0 {
            bail!(
                "geglu: the projection's width {d_out} (weight {:?}) must be even",
                self.weight.shape()
            );
        }
        self.run(x, None, Finish::Geglu, || geglu::candle(&self.forward(x)?))
    }

    /// The product with `finish` on a CPU in inference, else `candle()`.
    fn run(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        finish: Finish,
        candle: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let mut inputs = vec![x, &self.weight];
        inputs.extend(self.bias.iter().chain(residual));
        if !cpu_inference(&inputs) || x.rank() < 2 {
            return candle();
        }
        let (d_out, d_in) = self.weight.dims2()?;
        let dims = x.dims();
        if dims[dims.len() - 1] != d_in {
            bail!(
                "linear: input {:?} does not end in {d_in} features",
                x.shape()
            );
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 2") = d_out;
        if let Some(b) = self.bias.as_ref().filter(|b| b.dims() != [d_out]) {
            bail!(
                "linear: bias {:?} does not fit weight {:?}",
                b.shape(),
                self.weight.shape()
            );
        }
        if let Some(r) = residual.filter(|r| r.dims() != out_dims) {
            bail!(
                "linear: residual {:?} is not the output's shape {out_dims:?}",
                r.shape()
            );
        }
        let (images, tokens) = (dims[0], dims[1..dims.len() - 1].iter().product::<usize>());
        let inputs = [Some(x), Some(&self.weight), self.bias.as_ref(), residual];
        let y = with_cpu_values(&inputs, |v| match *v {
            [Some(xs), Some(ws), bias, residual] => Ok(product(
                Operands {
                    xs,
                    ws,
                    bias,
                    narrow: None,
                },
                residual,
                finish,
                (images, tokens),
                (d_in, d_out),
            )),
            _ => bail!("linear: input and weight are required"),
        })??;
        if finish == Finish::Geglu {
            *out_dims.last_mut().expect("rank ≥ 2") = d_out / 2;
        }
        Tensor::from_vec(y, out_dims, &Device::Cpu)
    }
}

/// What a block's product turns into: itself plus the bias and the residual, or GEGLU's gate of
/// it (plus the bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Add,
    Geglu,
}

/// A product's input `(rows, d_in)`, weight `(d_out, d_in)` and bias `(d_out)`; for a narrow
/// layer also the weight transposed, `(d_in, d_out)`, for the broadcast product.
#[derive(Clone, Copy)]
struct Operands<'a> {
    xs: &'a [f32],
    ws: &'a [f32],
    bias: Option<&'a [f32]>,
    narrow: Option<&'a [f32]>,
}

impl Operands<'_> {
    /// Rows `r0..r0 + rows` of `x · wᵀ + bias` into `dst` (`rows × d_out`, rows `d_out` apart).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `rows · d_out` values that no one else reads or writes
    /// during the call.
    #[allow(unsafe_code)]
    unsafe fn block(self, r0: usize, rows: usize, (d_in, d_out): (usize, usize), dst: *mut f32) {
        let xs = &self.xs[r0 * d_in..][..rows * d_in];
        if let Some(wt) = self.narrow {
            // SAFETY: the caller vouches for `dst` (`rows · d_out` values, this call's alone).
            let out = unsafe { std::slice::from_raw_parts_mut(dst, rows * d_out) };
            return vectorized(broadcast::Product {
                a: wt,
                b: (xs, d_in, 1),
                dims: (rows, d_in),
                width: d_out,
                init: self.bias,
                out,
            });
        }
        // SAFETY: the caller vouches for `dst`; gemm writes every value without reading it.
        unsafe {
            let dims = (rows, d_out, d_in);
            matmul_to_ptr(dims, dst, d_out, false, xs, (d_in, 1), self.ws, (1, d_in));
            if let Some(b) = self.bias {
                let block = std::slice::from_raw_parts_mut(dst, rows * d_out);
                for row in block.chunks_mut(d_out) {
                    row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
                }
            }
        }
    }
}

/// `x · wᵀ [+ bias]`, then `finish` (with `residual` for [`Finish::Add`]), for `images × tokens`
/// rows of `d_in` values: one task per block of [`ROWS`] of an image's tokens, each writing its
/// rows of the output in place.
fn product(
    ops: Operands,
    residual: Option<&[f32]>,
    finish: Finish,
    (images, tokens): (usize, usize),
    (d_in, d_out): (usize, usize),
) -> Vec<f32> {
    let work: Vec<(usize, usize)> = (0..images)
        .flat_map(|i| {
            (0..tokens)
                .step_by(ROWS)
                .map(move |t| (i * tokens + t, (tokens - t).min(ROWS)))
        })
        .collect();
    let width = match finish {
        Finish::Add => d_out,
        Finish::Geglu => d_out / 2,
    };
    // Whole vectors of every width the CPU may have: the broadcast product's condition.
    let transposed = (d_in <= broadcast::NARROW && d_out.is_multiple_of(MAX_LANES)).then(|| {
        let mut wt = vec![0f32; d_in * d_out];
        for (o, row) in ops.ws.chunks_exact(d_in).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                wt[i * d_out + o] = w;
            }
        }
        wt
    });
    let ops = Operands {
        narrow: transposed.as_deref(),
        ..ops
    };
    let fill = |out: OutPtr| {
        work.par_iter().for_each(|&(r0, rows)| {
            // SAFETY: this task writes rows `r0..r0 + rows` of the `width`-wide output, inside it
            // and written by no other task (the blocks are disjoint); the output is not otherwise
            // touched until every task has returned. The scratch is this thread's own.
            #[allow(unsafe_code)]
            unsafe {
                let dst = out.at(r0 * width);
                match finish {
                    Finish::Add => {
                        ops.block(r0, rows, (d_in, d_out), dst);
                        if let Some(res) = residual {
                            let block = std::slice::from_raw_parts_mut(dst, rows * d_out);
                            let res = &res[r0 * d_out..][..rows * d_out];
                            block.iter_mut().zip(res).for_each(|(v, &r)| *v += r);
                        }
                    }
                    Finish::Geglu => with_scratch(rows * d_out, |h| {
                        ops.block(r0, rows, (d_in, d_out), h.as_mut_ptr());
                        let out = std::slice::from_raw_parts_mut(dst, rows * width);
                        geglu::gate(out, h, width);
                    }),
                }
            }
        });
    };
    // SAFETY: the blocks are every image's tokens, so together every row of the output; each
    // task's product writes its block whole (gemm without reading the destination) before the
    // residual is added, and GEGLU's gate writes every value of its rows.
    #[allow(unsafe_code)]
    unsafe {
        filled(images * tokens * width, fill)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_add(x, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs, max_diff, randn};
    use candle_core::Var;

    fn layer(d_in: usize, d_out: usize, bias: bool) -> Linear {
        Linear::new(
            randn(&[d_out, d_in], 31, 0.0),
            bias.then(|| randn(&[d_out], 32, 0.0)),
        )
    }

    /// Against candle's `Linear` (and its own fallback, taken when gradients are tracked): several
    /// token blocks with a short last one, with and without bias and residual, 2-D and 4-D inputs;
    /// gemm (40 outputs, or 300 inputs) and the broadcast product (whole vectors of outputs: 16,
    /// 48, 80 take every mix of its column groups).
    #[test]
    fn matches_candles_linear_and_the_fallback() {
        for (dims, bias, d_out) in [
            (vec![3, 150, 24], true, 40),
            (vec![3, 150, 24], true, 48),
            (vec![2, 70, 24], false, 80),
            (vec![5, 24], true, 16),
            (vec![2, 3, 40, 24], true, 80),
            (vec![2, 9, 300], true, 32),
        ] {
            let d_in = *dims.last().unwrap();
            let l = layer(d_in, d_out, bias);
            let x = randn(&dims, 33, 0.0);
            let candle = candle_nn::Linear::new(l.weight.clone(), l.bias.clone());
            let theirs = candle.forward(&x).unwrap();
            let ours = l.forward(&x).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5, "{dims:?} → {d_out}");
            let residual = randn(theirs.dims(), 34, 0.0);
            let fused = l.forward_add(&x, Some(&residual)).unwrap();
            assert_eq!(
                max_diff(&fused, &(&residual + &ours).unwrap()),
                0.0,
                "{dims:?} → {d_out}"
            );
            let tracked = Var::from_tensor(&x).unwrap();
            let fallback = l.forward_add(&tracked, Some(&residual)).unwrap();
            assert!(max_diff(&fallback, &fused) < 1e-5, "{dims:?} → {d_out}");
        }
    }

    /// An image's tokens come out the same alone and in a batch.
    #[test]
    fn an_image_is_the_same_alone_and_in_a_batch() {
        let l = layer(32, 48, true);
        let x = randn(&[4, 100, 32], 35, 0.0);
        let all = l.forward(&x).unwrap();
        let third = l.forward(&x.narrow(0, 2, 1).unwrap()).unwrap();
        assert_eq!(max_diff(&all.narrow(0, 2, 1).unwrap(), &third), 0.0);
    }

    #[test]
    fn inputs_of_the_wrong_width_or_residuals_of_the_wrong_shape_are_errors() {
        let starts = |r: Result<Tensor>, expected: &str| {
            let err = r.unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        };
        let bad_bias = Linear::new(randn(&[40, 24], 39, 0.0), Some(randn(&[41], 40, 0.0)));
        starts(
            bad_bias.forward(&randn(&[2, 5, 24], 41, 0.0)),
            "linear: bias [41] does not fit weight [40, 24]",
        );
        let l = layer(24, 40, true);
        starts(
            l.forward(&randn(&[2, 5, 23], 36, 0.0)),
            "linear: input [2, 5, 23] does not end in 24",
        );
        let x = randn(&[2, 5, 24], 37, 0.0);
        starts(
            l.forward_add(&x, Some(&randn(&[2, 5, 24], 38, 0.0))),
            "linear: residual [2, 5, 24] is not the output's shape",
        );
    }

    /// The fused projection and gate against candle's ops (which the layer falls back to when
    /// gradients are tracked): 2 × 40 values a row (whole vectors and a tail on every vector
    /// width), several token blocks with a short last one; an odd width is an error.
    #[test]
    fn geglu_matches_candles_ops_and_keeps_gradients() {
        let layer = Linear::new(randn(&[80, 24], 31, 0.0), Some(randn(&[80], 32, 0.0)));
        let x = (randn(&[2, 131, 24], 33, 0.0) * 3.0).unwrap();
        let ours = layer.forward_geglu(&x).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let theirs = layer.forward_geglu(&xv).unwrap();
        assert_eq!(ours.dims(), &[2, 131, 40]);
        // Within a few units in the last place of the largest value (gated products of 3σ inputs
        // reach the thousands).
        assert!(max_diff(&ours, &theirs) <= 1e-6 * max_abs(&theirs).max(1.0));
        let grads = theirs.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&xv).is_some());
        let odd = Linear::new(randn(&[7, 24], 34, 0.0), None);
        let err = odd.forward_geglu(&x).unwrap_err().to_string();
        assert!(err.starts_with("geglu: the projection's width 7"), "{err}");
    }

    /// An image's gated rows come out the same alone and in a batch.
    #[test]
    fn geglu_gives_an_image_the_same_alone_and_in_a_batch() {
        let layer = Linear::new(randn(&[64, 16], 35, 0.0), Some(randn(&[64], 36, 0.0)));
        let x = randn(&[3, 100, 16], 37, 0.0);
        let all = layer.forward_geglu(&x).unwrap();
        let second = layer.forward_geglu(&x.narrow(0, 1, 1).unwrap()).unwrap();
        assert_eq!(max_diff(&all.narrow(0, 1, 1).unwrap(), &second), 0.0);
    }
}
