//! Group norm in one pass each way. Per image and group, over its `m = c/g · h · w` values:
//! `x̂ = (x − mean) / sqrt(var + eps)`, `y = x̂ · γ[c] + β[c]`; backward, with `g = dy · γ[c]`:
//! `dx = (g − mean(g) − x̂ · mean(g · x̂)) / sqrt(var + eps)`, `dγ[c] = Σ dy · x̂`, `dβ[c] = Σ dy`.
//! Means and variances are accumulated in f64.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Module, Result, Shape, Tensor, bail};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::cpu::{cpu_inference, f32_slice, on_cpu_f32};
use crate::math::{LANES, silu, vectorized};
use crate::parallel::{par_blocks, sum_over_images};

/// Groups and epsilon of one group norm, and whether SiLU follows it in the same pass (forward
/// only: [`GroupNorm::forward_silu`] uses it where no gradient is tracked).
#[derive(Debug, Clone, Copy)]
struct Norm {
    groups: usize,
    eps: f64,
    silu: bool,
}

impl Norm {
    /// Channels, values per channel and the values of an input of rank ≥ 3 whose channels split
    /// into the groups.
    fn input<'a>(&self, xs: &'a CpuStorage, xl: &Layout) -> Result<(usize, usize, &'a [f32])> {
        let (shape, groups) = (xl.shape(), self.groups);
        let d = shape.dims();
        if d.len() < 3 || groups == 0 || !d[1].is_multiple_of(groups) {
            bail!("group norm: input {shape:?} does not split into {groups} groups of channels");
        }
        let plane = d[2..].iter().product();
        Ok((d[1], plane, f32_slice(xs, xl, "group norm input")?))
    }

    /// Mean and `1 / sqrt(var + eps)` of one group's values (two passes, f64 sums).
    #[inline(always)]
    fn stats(&self, x: &[f32]) -> (f32, f32) {
        let m = x.len() as f64;
        let mean = lane_sum(x, f64::from) / m;
        let var = lane_sum(x, |v| (f64::from(v) - mean).powi(2)) / m;
        (mean as f32, (1.0 / (var + self.eps).sqrt()) as f32)
    }

    /// Calls `f(channel, that channel's values, its group's mean, its group's rstd)` for every
    /// channel of one image (`c · plane` values of `x`).
    fn per_group<'a>(&self, c: usize, x: &'a [f32], mut f: impl FnMut(usize, &'a [f32], f32, f32)) {
        let per = x.len() / self.groups;
        let plane = x.len() / c;
        for (gi, xg) in x.chunks(per).enumerate() {
            let (mean, rstd) = self.stats(xg);
            for (ci, xc) in xg.chunks(plane).enumerate() {
                f(gi * (per / plane) + ci, xc, mean, rstd);
            }
        }
    }
}

/// One group's output `y` from its input `x` (`gamma` / `beta`: the group's channels).
struct NormalizeGroup<'a> {
    norm: &'a Norm,
    x: &'a [f32],
    y: &'a mut [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
}

impl pulp::WithSimd for NormalizeGroup<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let NormalizeGroup {
            norm,
            x,
            y,
            gamma,
            beta,
        } = self;
        let (mean, rstd) = norm.stats(x);
        let plane = x.len() / gamma.len();
        for (ch, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
            let (a, b) = (rstd * gamma[ch], beta[ch] - mean * rstd * gamma[ch]);
            if norm.silu {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = silu(x * a + b);
                }
            } else {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * a + b;
                }
            }
        }
    }
}

/// `Σ f(v)` over `x` in [`LANES`] independent f64 accumulators (so the additions vectorise
/// instead of waiting on each other), added together at the end: a fixed order for a given
/// length, whatever the thread.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        acc.iter_mut().zip(chunk).for_each(|(a, &v)| *a += f(v));
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "pixelfarm-group-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, plane, x) = self.input(xs, xl)?;
        let (gamma, beta) = (
            f32_slice(gs, gl, "group norm weight")?,
            f32_slice(bs, bl, "group norm bias")?,
        );
        if gamma.len() != c || beta.len() != c {
            bail!("group norm: weight and bias must have {c} values (one per channel)");
        }
        // One task per (image, group), so a single image's groups also spread over the threads.
        let cg = c / self.groups;
        let y = par_blocks(x.len(), cg * plane, |i, y| {
            let first = (i % self.groups) * cg;
            let (gamma, beta) = (&gamma[first..first + cg], &beta[first..first + cg]);
            vectorized(NormalizeGroup {
                norm: self,
                x: &x[i * cg * plane..][..y.len()],
                y,
                gamma,
                beta,
            });
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = x.apply_op3_no_bwd(gamma, &dy, &InputGrad(*self))?;
        let dparams = x.apply_op2_no_bwd(&dy, &ParamGrad(*self))?;
        Ok((Some(dx), Some(dparams.get(0)?), Some(dparams.get(1)?)))
    }
}

/// `(x, γ, dy) → dx`.
struct InputGrad(Norm);

impl CustomOp3 for InputGrad {
    fn name(&self) -> &'static str {
        "pixelfarm-group-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let norm = self.0;
        let (c, plane, x) = norm.input(xs, xl)?;
        let gamma = f32_slice(gs, gl, "group norm weight")?;
        let dy = f32_slice(dys, dyl, "group norm gradient")?;
        let per = c / norm.groups * plane;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(dy.par_chunks(per)))
            .enumerate()
            .for_each(|(i, (dx, (x, dy)))| {
                let first = (i % norm.groups) * (c / norm.groups);
                let (mean, rstd) = norm.stats(x);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for (j, (&x, &dy)) in x.iter().zip(dy).enumerate() {
                    let g = f64::from(dy * gamma[first + j / plane]);
                    sg += g;
                    sgx += g * f64::from((x - mean) * rstd);
                }
                let m = per as f64;
                let (mg, mgx) = ((sg / m) as f32, (sgx / m) as f32);
                for (j, dx) in dx.iter_mut().enumerate() {
                    let xhat = (x[j] - mean) * rstd;
                    *dx = rstd * (dy[j] * gamma[first + j / plane] - mg - xhat * mgx);
                }
            });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// `(x, dy) → [dγ, dβ]` as `(2, c)`.
struct ParamGrad(Norm);

impl CustomOp2 for ParamGrad {
    fn name(&self) -> &'static str {
        "pixelfarm-group-norm-param-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let norm = self.0;
        let (c, plane, x) = norm.input(xs, xl)?;
        let dy = f32_slice(dys, dyl, "group norm gradient")?;
        let image = c * plane;
        let d = sum_over_images((x, image), (dy, image), 2 * c, |xs, dys| {
            let mut d = vec![0f32; 2 * c];
            for (x, dy) in xs.chunks(image).zip(dys.chunks(image)) {
                norm.per_group(c, x, |ch, xc, mean, rstd| {
                    let dyc = &dy[ch * plane..(ch + 1) * plane];
                    let (mut dg, mut db) = (0f32, 0f32);
                    for (&x, &dy) in xc.iter().zip(dyc) {
                        dg += dy * (x - mean) * rstd;
                        db += dy;
                    }
                    d[ch] += dg;
                    d[c + ch] += db;
                });
            }
            d
        });
        Ok((CpuStorage::F32(d), Shape::from((2, c))))
    }
}

/// Group norm of `x` `(n, c, …)` over `groups` groups of channels, scaled by `gamma` and shifted by
/// `beta` (`(c,)` each). On a CPU in f32 through the kernels above; elsewhere candle's ops.
///
/// # Errors
/// When the channels do not split into `groups` or `gamma` / `beta` do not have `c` values.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    if on_cpu_f32(&[x, gamma, beta]) {
        let op = Norm {
            groups,
            eps,
            silu: false,
        };
        x.contiguous()?
            .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
    } else {
        let c = x.dim(1)?;
        candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, groups, eps)?.forward(x)
    }
}

/// `silu(group_norm(x, …))`: in one pass on a CPU in f32 when no gradient flows through any of
/// the inputs (inference), else the two ops one after the other.
///
/// # Errors
/// As [`group_norm`].
pub fn group_norm_silu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
) -> Result<Tensor> {
    if cpu_inference(&[x, gamma, beta]) {
        let op = Norm {
            groups,
            eps,
            silu: true,
        };
        x.contiguous()?
            .apply_op3_no_bwd(&gamma.contiguous()?, &beta.contiguous()?, &op)
    } else {
        candle_nn::ops::silu(&group_norm(x, gamma, beta, groups, eps)?)
    }
}

/// A group norm layer over [`group_norm`], loaded (and initialised for training) exactly like
/// `candle_nn::group_norm`: tensors `weight` (ones) and `bias` (zeros).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// `groups` groups over `channels`, epsilon `eps`.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape, or `groups` does not divide
    /// `channels`.
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            bail!("group norm: {groups} groups do not divide {channels} channels");
        }
        Ok(GroupNorm {
            weight: vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?,
            bias: vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?,
            groups,
            eps,
        })
    }
}

impl GroupNorm {
    /// `silu(self.forward(x))`, fused where it can be ([`group_norm_silu`]).
    ///
    /// # Errors
    /// As [`group_norm`].
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm_silu(x, &self.weight, &self.bias, self.groups, self.eps)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_same, max_diff, randn};
    use candle_core::Var;

    /// Output and all three gradients against candle-nn's composed group norm (differentiable
    /// op by op), including an input far from zero mean, where a one-pass variance would cancel.
    #[test]
    fn forward_and_gradients_match_candle_nn() {
        for (shape, groups, mean) in [
            (vec![3, 32, 16, 16], 8, 0.0),
            (vec![2, 12, 5, 3], 3, 40.0),
            (vec![1, 8, 7], 8, -3.0),
            (vec![17, 16, 4, 4], 4, 1.0),
        ] {
            let c = shape[1];
            let x = Var::from_tensor(&randn(&shape, 1, mean)).unwrap();
            let gamma = Var::from_tensor(&randn(&[c], 2, 1.0)).unwrap();
            let beta = Var::from_tensor(&randn(&[c], 3, 0.0)).unwrap();
            let ours = group_norm(&x, &gamma, &beta, groups, 1e-5).unwrap();
            let (g, b) = (gamma.as_tensor().clone(), beta.as_tensor().clone());
            let theirs = candle_nn::GroupNorm::new(g, b, c, groups, 1e-5)
                .unwrap()
                .forward(&x)
                .unwrap();
            let case = format!("{shape:?}, {groups} groups, mean {mean}");
            assert_same(&[&x, &gamma, &beta], ours, theirs, 1e-3, &case);
        }
    }

    /// The fused inference pass equals the two ops; with a gradient to track it still gives one.
    #[test]
    fn fused_silu_matches_norm_then_silu() {
        let x = randn(&[2, 16, 7, 5], 21, 0.3);
        let (gamma, beta) = (randn(&[16], 22, 1.0), randn(&[16], 23, 0.0));
        let two = candle_nn::ops::silu(&group_norm(&x, &gamma, &beta, 4, 1e-6).unwrap()).unwrap();
        let one = group_norm_silu(&x, &gamma, &beta, 4, 1e-6).unwrap();
        assert!(max_diff(&one, &two) <= 1e-5);
        let xv = Var::from_tensor(&x).unwrap();
        let tracked = group_norm_silu(&xv, &gamma, &beta, 4, 1e-6).unwrap();
        assert!(max_diff(&tracked, &two) <= 1e-5);
        let grads = tracked.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&xv).is_some());
    }

    #[test]
    fn an_image_is_the_same_alone_and_in_a_batch() {
        let x = randn(&[5, 16, 6, 6], 5, 0.5);
        let (gamma, beta) = (randn(&[16], 6, 1.0), randn(&[16], 7, 0.0));
        let all = group_norm(&x, &gamma, &beta, 4, 1e-5).unwrap();
        let one = group_norm(&x.narrow(0, 3, 1).unwrap(), &gamma, &beta, 4, 1e-5).unwrap();
        assert_eq!(max_diff(&all.narrow(0, 3, 1).unwrap(), &one), 0.0);
    }

    #[test]
    fn channels_that_do_not_split_are_an_error() {
        let x = randn(&[1, 6, 4, 4], 8, 0.0);
        let (gamma, beta) = (randn(&[6], 9, 1.0), randn(&[6], 10, 0.0));
        assert!(group_norm(&x, &gamma, &beta, 4, 1e-5).is_err());
        assert!(group_norm(&x, &gamma.narrow(0, 0, 5).unwrap(), &beta, 3, 1e-5).is_err());
    }
}
