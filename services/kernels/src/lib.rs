//! pixelfarm's CPU kernels for the layers that dominate the networks it trains and renders on a
//! CPU: convolution (bias fused in) and group norm, with their backward; for inference, group norm
//! fused with SiLU, attention, linear layers with GEGLU's gate, and the transposes and upsampling
//! between them. Also the process's thread and allocator tuning ([`threads`]).
//!
//! candle 0.11's CPU versions are slow — conv2d is im2col with NCHW copies around one large
//! gemm and its input gradient a scalar `conv_transpose2d` loop, group norm a chain of ~10
//! separate tensor ops each way, attention three full-size tensor ops per head, `exp` and `erf`
//! scalar C-library calls. These ops do each pass in one go (gemm for the products; bias, SiLU and
//! softmax fused in; `exp` / `erf` vectorised, with AVX2 or AVX-512 where the CPU has it) and keep
//! two properties the engine promises:
//!
//! - work is split over images, tiles of output rows, groups of channels and blocks of queries,
//!   never inside a sum, so an image's result is the same whatever batch it rides in and whatever
//!   the thread count;
//! - sums over the batch (parameter gradients) are taken per fixed chunk of images and the chunks
//!   added in order, so gradients are reproducible bit for bit.
//!
//! Other devices and dtypes fall back to candle's own ops (cuDNN / candle kernels on CUDA).
//!
//! # Layout
//! The public layers and ops:
//! - `conv`: [`conv2d`] and the [`Conv2d`] layer (bias, time shift and residual fused in), its
//!   forward im2col + gemm; `conv_backward`: its input and weight gradients.
//! - `winograd` and `direct`: the two faster forwards of 3×3 stride-1 convolutions, from 64×64
//!   and from 32×32 output pixels.
//! - `geometry`: what the convolution's paths share: a convolution's shape and im2col tiling,
//!   and the terms its forward adds (`Epilogue`).
//! - `group_norm`: [`group_norm()`], [`group_norm_silu`] and the [`GroupNorm`] layer.
//! - `attention`: [`attention()`], a block of queries at a time.
//! - `linear`: the [`Linear`] layer (residual and GEGLU fused in); `geglu`: GEGLU's gate.
//! - `transpose` and `upsample`: [`transpose_last`] and [`upsample_nearest2d`] on the pool.
//! - [`threads`]: the process's thread count, candle's pool spinning and glibc's malloc
//!   thresholds, settled once in `main`.
//!
//! What the kernels are built on (leaves: none of them uses another module of this crate):
//! - `cpu`: which tensors take the CPU path, and their f32 values;
//! - `parallel`: output buffers filled block by block on rayon's pool, each thread's scratch,
//!   parameter gradients summed in a fixed order;
//! - `matmul`: one single-threaded gemm call with strides;
//! - `math`: `exp`, SiLU and GELU that vectorise, and the dispatch to the CPU's widest vectors;
//! - `broadcast`: the register-tiled product for narrow operands.

mod attention;
mod broadcast;
mod conv;
mod conv_backward;
mod cpu;
mod direct;
mod geglu;
mod geometry;
mod group_norm;
mod linear;
mod math;
mod matmul;
mod parallel;
pub mod threads;
mod transpose;
mod upsample;
mod winograd;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use attention::attention;
pub use conv::{Conv2d, conv2d, conv2d_im2col};
pub use group_norm::{GroupNorm, group_norm, group_norm_silu};
pub use linear::Linear;
pub use transpose::transpose_last;
pub use upsample::upsample_nearest2d;
