//! The backward of [`crate::conv`]'s convolution, tiled im2col + gemm like its forward:
//!
//! - input gradient, per image and tile of output rows: `dcol = Wᵀ · dY[:, tile]`, scattered back
//!   (col2im) into `dX`;
//! - weight gradient: `dW += dY[:, tile] · colᵀ`, per fixed chunk of images, chunks added in order
//!   (so the sum does not depend on the thread count).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::f32_slice;
use crate::geometry::Geometry;
use crate::matmul::matmul_into;
use crate::parallel::sum_over_images;

/// Input and weight gradients of the convolution `x ⋆ weight` (`stride`, equal padding `pad`)
/// for the output gradient `dy`.
///
/// # Errors
/// When the shapes do not fit.
pub(crate) fn grads(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    stride: usize,
    pad: usize,
) -> Result<(Tensor, Tensor)> {
    let dy = dy.contiguous()?;
    let dx = dy.apply_op2_no_bwd(
        weight,
        &InputGrad {
            stride,
            pad,
            x: x.shape().clone(),
        },
    )?;
    let dw = x.apply_op2_no_bwd(
        &dy,
        &WeightGrad {
            stride,
            pad,
            w: weight.shape().clone(),
        },
    )?;
    Ok((dx, dw))
}

/// `(dy, weight) → dx`.
struct InputGrad {
    stride: usize,
    pad: usize,
    /// The input's shape.
    x: Shape,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "pixelfarm-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(&self.x, wl.shape(), self.stride, self.pad)?;
        let (dy, wt) = (
            f32_slice(dys, dyl, "gradient")?,
            f32_slice(ws, wl, "weight")?,
        );
        let plane = g.ho * g.wo;
        let mut dx = vec![0f32; g.n * g.in_len()];
        dx.par_chunks_mut(g.in_len())
            .zip(dy.par_chunks(g.out_len()))
            .for_each(|(dx, dy)| {
                let mut col = vec![0f32; g.ckk() * g.tile_rows() * g.wo];
                for (r0, rows) in g.tiles() {
                    let p = rows * g.wo;
                    matmul_into(
                        (g.ckk(), p, g.co),
                        &mut col,
                        p,
                        false,
                        wt,
                        (1, g.ckk()),
                        &dy[r0 * g.wo..],
                        (plane, 1),
                    );
                    g.col2im_add(&col, r0, rows, dx);
                }
            });
        Ok((CpuStorage::F32(dx), self.x.clone()))
    }
}

/// `(x, dy) → dweight`.
struct WeightGrad {
    stride: usize,
    pad: usize,
    /// The weight's shape.
    w: Shape,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "pixelfarm-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(xl.shape(), &self.w, self.stride, self.pad)?;
        let (x, dy) = (
            f32_slice(xs, xl, "input")?,
            f32_slice(dys, dyl, "gradient")?,
        );
        let plane = g.ho * g.wo;
        let wlen = g.co * g.ckk();
        let dw = sum_over_images((x, g.in_len()), (dy, g.out_len()), wlen, |xs, dys| {
            let mut dw = vec![0f32; wlen];
            let mut col = vec![0f32; g.col_len()];
            let mut started = false;
            for (x, dy) in xs.chunks(g.in_len()).zip(dys.chunks(g.out_len())) {
                for (r0, rows) in g.tiles() {
                    let p = rows * g.wo;
                    let (col, col_rs) = g.columns(x, r0, rows, &mut col);
                    let dims = (g.co, g.ckk(), p);
                    let dy = &dy[r0 * g.wo..];
                    matmul_into(
                        dims,
                        &mut dw,
                        g.ckk(),
                        started,
                        dy,
                        (plane, 1),
                        col,
                        (1, col_rs),
                    );
                    started = true;
                }
            }
            dw
        });
        Ok((CpuStorage::F32(dw), self.w.clone()))
    }
}
