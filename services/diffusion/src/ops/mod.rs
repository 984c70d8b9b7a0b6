//! CPU kernels, with their backward, for the layers that dominate the networks pixelfarm trains
//! and renders on a CPU (the `shapes` family): convolution and group norm.
//!
//! candle 0.11's CPU backward of both is slow — the conv2d input gradient is a scalar
//! `conv_transpose2d` loop, group norm is a chain of ~10 separate tensor ops each way — and
//! training on the project's 2-core machines spends its time there. These ops do each pass in one
//! go (gemm for the convolution) and keep two properties the engine promises:
//!
//! - work is split over images (and tiles of one image), never inside a sum, so an image's result
//!   is the same whatever batch it rides in and whatever the thread count;
//! - sums over the batch (parameter gradients) are taken per fixed chunk of images and the chunks
//!   added in order, so gradients are reproducible bit for bit.
//!
//! Other devices and dtypes fall back to candle's own ops (cuDNN / candle kernels on CUDA).

mod conv;
mod group_norm;

pub use conv::{Conv2d, conv2d};
pub use group_norm::{GroupNorm, group_norm};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, bail};

/// Images per partial parameter gradient (fixed, so the summation order never depends on threads).
const GRAD_CHUNK: usize = 8;

/// Whether the fast CPU path applies to these tensors.
fn on_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The f32 values of a contiguous CPU tensor.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{what} must be a contiguous f32 tensor"),
    }
}

/// The sum of per-chunk partial gradients, in chunk order.
fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in partials {
        total.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    total
}
