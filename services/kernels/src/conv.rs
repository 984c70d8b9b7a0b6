//! A 2-D convolution and its layer, [`Conv2d`]. The CPU forward is tiled im2col + gemm, per image
//! and tile of output rows: `out[:, tile] = W (co × c·k·k) · col (c·k·k × tile)`; the backward
//! ([`crate::conv_backward`]) is too.
//!
//! 1×1 convolutions with stride 1 skip the im2col: the image's rows are the column matrix; 3×3
//! ones with stride 1 and padding 1 run their forward as Winograd F(2×2, 3×3) on images of 64×64
//! pixels and more ([`crate::winograd`]), as a direct convolution from 32×32 ([`crate::direct`]).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, Device, Layout, Module, Result, Shape, Tensor, bail,
};
use candle_nn::{Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use crate::conv_backward::grads;
use crate::cpu::{cpu_inference, f32_slice, on_cpu_f32, with_cpu_values};
use crate::geometry::{Epilogue, Geometry};
use crate::matmul::matmul_to_ptr;
use crate::parallel::{OutPtr, filled, with_scratch};
use crate::{direct, winograd};

/// Forward: `(x, weight) → y`.
#[derive(Debug, Clone, Copy)]
struct Conv {
    stride: usize,
    pad: usize,
    /// Whether the forward may take the Winograd or direct path where one applies (else always
    /// im2col).
    own_kernels: bool,
}

impl Conv {
    fn new(stride: usize, pad: usize) -> Self {
        Conv {
            stride,
            pad,
            own_kernels: true,
        }
    }
}

impl Conv {
    /// Every (image, tile of output rows) is one task, so a single image's tiles also spread over
    /// the threads; each task computes its tile with the same gemm whatever the batch, straight
    /// into its place in the output, and adds the epilogue's terms to it there.
    fn forward(&self, g: &Geometry, x: &[f32], wt: &[f32], e: Epilogue) -> Vec<f32> {
        if self.own_kernels && winograd::applies(g) {
            return winograd::forward(g, x, wt, e);
        }
        if self.own_kernels && direct::applies(g) {
            return direct::forward(g, x, wt, e);
        }
        let plane = g.ho * g.wo;
        let work: Vec<(usize, usize, usize)> = (0..g.n)
            .flat_map(|i| g.tiles().map(move |(r0, rows)| (i, r0, rows)))
            .collect();
        let fill = |out: OutPtr| {
            work.par_iter().for_each(|&(i, r0, rows)| {
                let x = &x[i * g.in_len()..(i + 1) * g.in_len()];
                let p = rows * g.wo;
                let first = i * g.out_len() + r0 * g.wo;
                with_scratch(g.col_len(), |col| {
                    let (col, col_rs) = g.columns(x, r0, rows, col);
                    // SAFETY: this task's tile is the `p` values from `first + o · plane` for
                    // every channel `o`: inside the output (image `i`, rows `r0..r0 + rows`), and
                    // written by no other task, since (image, row range) pairs are disjoint; the
                    // output is not otherwise touched until every task has returned.
                    #[allow(unsafe_code)]
                    unsafe {
                        let dims = (g.co, p, g.ckk());
                        let tile = out.at(first);
                        let (wt, wt_rs) = (wt, (g.ckk(), 1));
                        matmul_to_ptr(dims, tile, plane, false, wt, wt_rs, col, (col_rs, 1));
                        for o in 0..g.co {
                            let row = std::slice::from_raw_parts_mut(tile.add(o * plane), p);
                            e.add_to(row, (i, o, g.co), first + o * plane);
                        }
                    }
                });
            });
        };
        // SAFETY: the tiles are every output row of every image, and each task's product writes
        // its tile of every channel whole (gemm without reading the destination) before the
        // epilogue adds to it.
        #[allow(unsafe_code)]
        unsafe {
            filled(g.n * g.out_len(), fill)
        }
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "pixelfarm-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run(xs, xl, ws, wl, Epilogue::default())
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = grads(x, weight, dy, self.stride, self.pad)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// The same convolution with a bias `(co,)` added in the same pass.
impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "pixelfarm-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let bias = f32_slice(bs, bl, "bias")?;
        if bias.len() != wl.shape().dims()[0] {
            bail!(
                "conv2d: bias {:?} does not fit weight {:?}",
                bl.shape(),
                wl.shape()
            );
        }
        let e = Epilogue {
            bias: Some(bias),
            ..Epilogue::default()
        };
        self.run(xs, xl, ws, wl, e)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = grads(x, weight, dy, self.stride, self.pad)?;
        Ok((Some(dx), Some(dw), Some(dy.sum((0, 2, 3))?)))
    }
}

impl Conv {
    /// The forward of both ops on raw storage.
    fn run(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        e: Epilogue,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.shape(), wl.shape(), self.stride, self.pad)?;
        let y = self.forward(
            &g,
            f32_slice(xs, xl, "input")?,
            f32_slice(ws, wl, "weight")?,
            e,
        );
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.co, g.ho, g.wo))))
    }
}

/// `x (n, c, h, w) ⋆ weight (co, c, k, k)` with equal `padding`, `stride`, dilation 1, no groups.
/// On a CPU in f32 through the gemm kernels above (with their backward); elsewhere candle's conv2d.
///
/// # Errors
/// When the shapes do not fit.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_op(x, weight, Conv::new(stride, padding))
}

/// [`conv2d`] with its forward always im2col + gemm, never Winograd or direct: the baseline those
/// paths are measured and tested against.
///
/// # Errors
/// When the shapes do not fit.
pub fn conv2d_im2col(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let op = Conv {
        own_kernels: false,
        ..Conv::new(stride, padding)
    };
    conv2d_op(x, weight, op)
}

fn conv2d_op(x: &Tensor, weight: &Tensor, op: Conv) -> Result<Tensor> {
    if on_cpu_f32(&[x, weight]) {
        x.contiguous()?.apply_op2(&weight.contiguous()?, op)
    } else {
        x.conv2d(weight, op.pad, op.stride, 1, 1)
    }
}

/// A convolution layer over [`conv2d`], loaded (and initialised for training) exactly like
/// `candle_nn::conv2d`: tensors `weight` and `bias`, the same shapes and initialisation.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A `k × k` convolution from `cin` to `cout` channels with padding `k / 2`.
    ///
    /// # Errors
    /// When `vb` lacks a tensor or has one of the wrong shape.
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_padding(cin, cout, k, stride, k / 2, vb)
    }

    /// [`Conv2d::new`] with another padding.
    ///
    /// # Errors
    /// As [`Conv2d::new`].
    pub fn with_padding(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        let inner = candle_nn::conv2d(cin, cout, k, cfg, vb)?;
        Ok(Conv2d {
            weight: inner.weight().clone(),
            bias: inner.bias().cloned(),
            stride,
            padding,
        })
    }
}

impl Conv2d {
    /// `forward(x)` plus `shift` `(n, cout)`, one value per image and channel (a resnet's time
    /// embedding), plus `residual` (the output's shape), in the convolution's own pass on a CPU
    /// when no gradient is tracked, else as separate tensor ops; the values are the same bits
    /// either way.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn forward_add(
        &self,
        x: &Tensor,
        shift: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut inputs = vec![x, &self.weight];
        inputs.extend(self.bias.iter().chain(shift).chain(residual));
        if !cpu_inference(&inputs) {
            let mut y = self.forward(x)?;
            if let Some(s) = shift {
                y = y.broadcast_add(&s.unsqueeze(2)?.unsqueeze(3)?)?;
            }
            if let Some(r) = residual {
                y = (r + y)?;
            }
            return Ok(y);
        }
        let g = Geometry::new(x.shape(), self.weight.shape(), self.stride, self.padding)?;
        let out = (g.n, g.co, g.ho, g.wo);
        if let Some(s) = shift.filter(|s| s.dims() != [g.n, g.co]) {
            bail!(
                "conv2d: shift {:?} is not (images, channels) {:?}",
                s.shape(),
                (g.n, g.co)
            );
        }
        if let Some(r) = residual.filter(|r| r.dims4().ok() != Some(out)) {
            bail!(
                "conv2d: residual {:?} is not the output's shape {out:?}",
                r.shape()
            );
        }
        let op = Conv::new(self.stride, self.padding);
        let inputs = [
            Some(x),
            Some(&self.weight),
            self.bias.as_ref(),
            shift,
            residual,
        ];
        let y = with_cpu_values(&inputs, |v| match *v {
            [Some(x), Some(w), bias, shift, residual] => Ok(op.forward(
                &g,
                x,
                w,
                Epilogue {
                    bias,
                    shift,
                    residual,
                },
            )),
            _ => bail!("conv2d: input and weight are required"),
        })??;
        Tensor::from_vec(y, out, &Device::Cpu)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) if on_cpu_f32(&[x, &self.weight, b]) => {
                let op = Conv::new(self.stride, self.padding);
                x.contiguous()?
                    .apply_op3(&self.weight.contiguous()?, &b.contiguous()?, op)
            }
            Some(b) => conv2d(x, &self.weight, self.stride, self.padding)?
                .broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => conv2d(x, &self.weight, self.stride, self.padding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_same, max_diff, randn};
    use candle_core::Var;

    /// Forward and both gradients against candle's own conv2d (whose backward is correct, only
    /// slow), over the geometries the shapes UNet uses and odd ones: stride 2 on odd sizes, 1×1,
    /// tiles of several rows, kernel columns that fall wholly outside a 1×1 image. (Square images
    /// for stride 2: candle's conv2d backward takes the output padding of both sides from the
    /// height.)
    #[test]
    fn forward_and_gradients_match_candles_conv2d() {
        for (n, c, h, w, co, k, stride) in [
            (3, 12, 16, 16, 32, 3, 1),
            (2, 32, 16, 16, 64, 3, 2),
            (2, 5, 9, 7, 4, 3, 2),
            (2, 64, 8, 8, 32, 1, 1),
            (1, 48, 40, 40, 8, 3, 1),
            (9, 3, 5, 5, 2, 3, 1),
            (2, 3, 1, 1, 4, 3, 1),
            (1, 2, 4, 4, 3, 3, 2),
        ] {
            let pad = k / 2;
            let x = Var::from_tensor(&randn(&[n, c, h, w], 1, 0.0)).unwrap();
            let wt = Var::from_tensor(&randn(&[co, c, k, k], 2, 0.0)).unwrap();
            let ours = conv2d(&x, &wt, stride, pad).unwrap();
            let theirs = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
            let case = format!("n {n} c {c} {h}x{w} co {co} k {k} stride {stride}");
            assert_same(&[&x, &wt], ours, theirs, 1e-5, &case);
        }
    }

    /// The layer's bias is added in the convolution's own pass; value and all three gradients
    /// against candle's conv2d plus a broadcast bias.
    #[test]
    fn the_fused_bias_matches_a_separate_add() {
        for (stride, k) in [(1, 3), (2, 3), (1, 1)] {
            let x = Var::from_tensor(&randn(&[3, 6, 9, 9], 11, 0.0)).unwrap();
            let wt = Var::from_tensor(&randn(&[5, 6, k, k], 12, 0.0)).unwrap();
            let b = Var::from_tensor(&randn(&[5], 13, 0.0)).unwrap();
            let layer = Conv2d {
                weight: wt.as_tensor().clone(),
                bias: Some(b.as_tensor().clone()),
                stride,
                padding: k / 2,
            };
            let ours = layer.forward(&x).unwrap();
            let theirs = x
                .conv2d(&wt, k / 2, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            let case = format!("k {k} stride {stride}");
            assert_same(&[&x, &wt, &b], ours, theirs, 1e-5, &case);
        }
    }

    /// The shift and residual added in the convolution's pass give the bits of the separate adds
    /// (and of the fallback taken when gradients are tracked), alone or in a batch, with and
    /// without a bias, for a tiled 3×3 (direct at 40×40, im2col at 16×16) and a pointwise
    /// convolution.
    #[test]
    fn the_fused_shift_and_residual_are_the_separate_adds_bit_for_bit() {
        for (k, bias, hw) in [(3, true, 40), (1, true, 40), (3, false, 40), (3, true, 16)] {
            let x = randn(&[3, 6, hw, hw], 21, 0.0);
            let layer = Conv2d {
                weight: randn(&[5, 6, k, k], 22, 0.0),
                bias: bias.then(|| randn(&[5], 23, 0.0)),
                stride: 1,
                padding: k / 2,
            };
            let shift = randn(&[3, 5], 24, 0.0);
            let residual = randn(&[3, 5, hw, hw], 25, 0.0);
            let separate = (&residual
                + layer
                    .forward(&x)
                    .unwrap()
                    .broadcast_add(&shift.reshape((3, 5, 1, 1)).unwrap())
                    .unwrap())
            .unwrap();
            let fused = layer
                .forward_add(&x, Some(&shift), Some(&residual))
                .unwrap();
            assert_eq!(max_diff(&fused, &separate), 0.0, "k {k} bias {bias}");
            let tracked = Var::from_tensor(&x).unwrap();
            let fallback = layer
                .forward_add(&tracked, Some(&shift), Some(&residual))
                .unwrap();
            assert_eq!(max_diff(&fallback, &separate), 0.0, "k {k} bias {bias}");
            let one = |t: &Tensor| t.narrow(0, 1, 1).unwrap();
            let alone = layer
                .forward_add(&one(&x), Some(&one(&shift)), Some(&one(&residual)))
                .unwrap();
            assert_eq!(max_diff(&alone, &one(&fused)), 0.0, "k {k} bias {bias}");
            let shift_only = layer.forward_add(&x, Some(&shift), None).unwrap();
            assert_eq!(
                max_diff(&(&residual + shift_only).unwrap(), &fused),
                0.0,
                "k {k} bias {bias}"
            );
        }
    }

    #[test]
    fn a_shift_or_residual_of_the_wrong_shape_is_an_error() {
        let x = randn(&[2, 3, 8, 8], 26, 0.0);
        let layer = Conv2d {
            weight: randn(&[4, 3, 3, 3], 27, 0.0),
            bias: None,
            stride: 1,
            padding: 1,
        };
        let err = layer
            .forward_add(&x, Some(&randn(&[2, 3], 28, 0.0)), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv2d: shift [2, 3] is not (images, channels) (2, 4)"),
            "{err}"
        );
        let err = layer
            .forward_add(&x, None, Some(&randn(&[2, 4, 4, 4], 29, 0.0)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv2d: residual [2, 4, 4, 4] is not the output's shape"),
            "{err}"
        );
    }

    /// `layer.forward_add` with every epilogue term against im2col's convolution plus the same
    /// terms as tensor adds, within `1e-5` of the largest value, on geometries where `Conv`'s
    /// forward takes the path `taken` names; and an image gives the same bits alone as in its
    /// batch.
    fn matches_im2col(cases: &[(usize, usize, usize, usize, usize)], taken: fn(&Geometry) -> bool) {
        for &(n, c, h, w, co) in cases {
            let case = format!("n {n} c {c} {h}x{w} co {co}");
            let g = Geometry::new(&(n, c, h, w).into(), &(co, c, 3, 3).into(), 1, 1).unwrap();
            assert!(taken(&g), "{case}: another path");
            let x = randn(&[n, c, h, w], 31, 0.0);
            let layer = Conv2d {
                weight: randn(&[co, c, 3, 3], 32, 0.0),
                bias: Some(randn(&[co], 33, 0.0)),
                stride: 1,
                padding: 1,
            };
            let shift = randn(&[n, co], 34, 0.0);
            let residual = randn(&[n, co, h, w], 35, 0.0);
            let ours = layer
                .forward_add(&x, Some(&shift), Some(&residual))
                .unwrap();
            let bias = layer.bias.as_ref().unwrap().reshape((1, co, 1, 1)).unwrap();
            let im2col = (&residual
                + conv2d_im2col(&x, &layer.weight, 1, 1)
                    .unwrap()
                    .broadcast_add(&bias)
                    .unwrap()
                    .broadcast_add(&shift.reshape((n, co, 1, 1)).unwrap())
                    .unwrap())
            .unwrap();
            let scale = im2col.abs().unwrap().max_all().unwrap();
            let d = max_diff(&ours, &im2col);
            assert!(d <= 1e-5 * scale.to_scalar::<f32>().unwrap(), "{case}: {d}");
            let last = |t: &Tensor| t.narrow(0, n - 1, 1).unwrap();
            let alone = layer
                .forward_add(&last(&x), Some(&last(&shift)), Some(&last(&residual)))
                .unwrap();
            assert_eq!(max_diff(&alone, &last(&ours)), 0.0, "{case}");
        }
    }

    /// The Winograd forward (images of 64×64 pixels and more), on odd sizes (partial tiles, and
    /// blocks of tiles that are not whole vectors), a row wider than one block of tiles (blocks
    /// of one tile row), with its products on the broadcast kernel and (above 256 input
    /// channels) on gemm.
    #[test]
    fn winograd_matches_im2col() {
        let cases = [
            (2, 6, 65, 67, 5),
            (1, 64, 33, 130, 16),
            (3, 32, 64, 64, 8),
            (1, 260, 64, 66, 3),
        ];
        matches_im2col(&cases, winograd::applies);
    }

    /// The direct forward (images from 32×32 to below 64×64): odd sizes and channel counts (a
    /// partial last tile and channel block), one channel, the latents' shapes, runs of several
    /// channel blocks per task (a batch of one).
    #[test]
    fn direct_matches_im2col() {
        let cases = [
            (2, 6, 33, 37, 5),
            (2, 4, 63, 17, 7),
            (1, 1, 32, 32, 1),
            (1, 64, 32, 32, 64),
            (3, 96, 32, 32, 32),
            (1, 5, 63, 40, 3),
        ];
        matches_im2col(&cases, |g| !winograd::applies(g) && direct::applies(g));
    }

    /// An image's output does not depend on the batch around it.
    #[test]
    fn an_image_is_the_same_alone_and_in_a_batch() {
        let batch = randn(&[5, 8, 12, 12], 4, 0.0);
        let wt = randn(&[16, 8, 3, 3], 5, 0.0);
        let all = conv2d(&batch, &wt, 1, 1).unwrap();
        let third = conv2d(&batch.narrow(0, 2, 1).unwrap(), &wt, 1, 1).unwrap();
        assert_eq!(max_diff(&all.narrow(0, 2, 1).unwrap(), &third), 0.0);
    }

    #[test]
    fn mismatched_shapes_are_an_error_not_a_panic() {
        let x = randn(&[1, 3, 8, 8], 6, 0.0);
        assert!(conv2d(&x, &randn(&[4, 5, 3, 3], 7, 0.0), 1, 1).is_err());
        assert!(conv2d(&x, &randn(&[4, 3, 9, 9], 7, 0.0), 1, 0).is_err());
    }
}
