//! A direct forward for 3×3, stride-1, padding-1 convolutions of images from 32×32 pixels to
//! below Winograd's size ([`crate::winograd`]): the UNet's top-level latents at 256×256 and the
//! VAE decoder's first layers. There im2col + gemm spends much of its time copying nine shifted
//! images per channel and packing short matrices; this reads the input in place.
//!
//! Per task (image, run of output-channel blocks): the image is copied once, zero-padded, into a
//! scratch of `c` planes of `(h + 2)` rows of `w + 1` (one zero column between rows serves as the
//! right edge of one and the left edge of the next). In that layout output `(y, x)` is position
//! `p = y · (w + 1) + x`, and its kernel tap `(ky, kx)` of channel `c` is the scratch's
//! `c · plane + p + ky · (w + 1) + kx`: the nine taps of a run of consecutive positions are nine
//! contiguous runs, so a tile of [`CHANNELS`] output channels × `V` vectors of positions is
//! `c · 9` steps of `V` vector loads, [`CHANNELS`] broadcast weights and `CHANNELS · V` fused
//! multiply-adds, all on registers; the positions after the last whole tile go in tiles of one
//! vector. (The position per row past the image's width is computed and dropped.)
//!
//! Every output is one sum in the order (channel, ky, kx) whatever its task, tile or lane, so an
//! image gives the same bits alone and in any batch, on any thread count. The bits differ from
//! im2col's in the last places where gemm sums in another order.

use rayon::prelude::*;

use crate::geometry::{Epilogue, Geometry};
use crate::math::{MAX_LANES, vectorized};
use crate::parallel::{OutPtr, filled, with_scratch};

/// Output channels per tile: the weights are packed in blocks of this many (zero past `co`).
const CHANNELS: usize = 4;

/// Fewest output pixels an image must have for this path. Below, im2col + gemm is as fast or
/// faster: a row's padding position and the short single-vector tiles at the end of an image are
/// a larger share of the work there (`bench-ops`; see docs/benchmarks.md, "Direct convolution for
/// 32×32 up to Winograd's size").
const MIN_PIXELS: usize = 32 * 32;

/// Whether the geometry is one this path computes (a 3×3 kernel, stride 1, padding 1, at least
/// one image and channel) and is faster at. The caller tries Winograd first, so this takes the
/// images from 32×32 pixels to below Winograd's size.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && g.n > 0 && g.c > 0 && g.ho * g.wo >= MIN_PIXELS
}

/// The convolution `x` (NCHW) ⊛ `wt` with `e`'s terms added, as [`crate::conv`]'s forward does.
pub(crate) fn forward(g: &Geometry, x: &[f32], wt: &[f32], e: Epilogue) -> Vec<f32> {
    forward_on(g, x, wt, e, |task| vectorized(task))
}

/// [`forward`] with each task's kernel run by `run` (the CPU's widest vectors, or in tests a
/// chosen instruction set).
fn forward_on(
    g: &Geometry,
    x: &[f32],
    wt: &[f32],
    e: Epilogue,
    run: impl Fn(Task) + Sync,
) -> Vec<f32> {
    let packed = pack_weights(g, wt);
    let blocks = g.co.div_ceil(CHANNELS);
    // Enough tasks for every thread to have two when the batch alone does not give that.
    let parts = (2 * rayon::current_num_threads())
        .div_ceil(g.n)
        .clamp(1, blocks);
    let per_task = blocks.div_ceil(parts);
    let work: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|image| (0..blocks).step_by(per_task).map(move |b0| (image, b0)))
        .collect();
    let (input_len, stride) = layout(g, MAX_LANES);
    let fill = |out: OutPtr| {
        work.par_iter().for_each(|&(image, b0)| {
            let part = Part {
                g,
                x: &x[image * g.in_len()..][..g.in_len()],
                packed: &packed,
                image,
                blocks: b0..(b0 + per_task).min(blocks),
                e,
                out,
            };
            with_scratch(input_len + CHANNELS * stride, |scratch| {
                run(Task { part, scratch });
            });
        });
    };
    // SAFETY: the tasks are every output-channel block of every image, and `write_block` writes
    // every output row of each of the block's channels.
    #[allow(unsafe_code)]
    unsafe {
        filled(g.n * g.out_len(), fill)
    }
}

/// The lengths of a task's padded input and of one channel's tile outputs (`stride`) when the
/// vectors have `lanes` f32s; both grow with `lanes`, so a scratch sized for [`MAX_LANES`] holds
/// every instruction set's.
fn layout(g: &Geometry, lanes: usize) -> (usize, usize) {
    let wp = g.w + 1;
    // Tile outputs per channel: the used positions rounded up to whole vectors.
    let stride = (g.h * wp).div_ceil(lanes) * lanes;
    // The last vector of the last channel reads up to `(c − 1) · plane + stride − 1 + 2 · wp +
    // 2` ≤ `c · plane + lanes` (as `stride < h · wp + lanes`): the padded planes and a tail.
    (g.c * (g.h + 2) * wp + lanes + 1, stride)
}

/// `packed[block][c][tap][j]` = the weight of output channel `block · CHANNELS + j`, input channel
/// `c` and kernel tap `tap = ky · 3 + kx` (zero for channels past `co`).
fn pack_weights(g: &Geometry, wt: &[f32]) -> Vec<f32> {
    let blocks = g.co.div_ceil(CHANNELS);
    let mut packed = vec![0f32; blocks * g.c * 9 * CHANNELS];
    for o in 0..g.co {
        let (block, j) = (o / CHANNELS, o % CHANNELS);
        for c in 0..g.c {
            for tap in 0..9 {
                packed[((block * g.c + c) * 9 + tap) * CHANNELS + j] = wt[(o * g.c + c) * 9 + tap];
            }
        }
    }
    packed
}

/// One task: the output channels of blocks `blocks` of one image.
struct Part<'a> {
    g: &'a Geometry,
    /// The image's input, `c × h × w`.
    x: &'a [f32],
    packed: &'a [f32],
    image: usize,
    blocks: std::ops::Range<usize>,
    e: Epilogue<'a>,
    out: OutPtr,
}

struct Task<'a> {
    part: Part<'a>,
    /// At least the padded input and [`CHANNELS`] channels of tile outputs ([`layout`]).
    scratch: &'a mut [f32],
}

impl pulp::WithSimd for Task<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        // Tiles of 4 channels × 4 vectors on 32 vector registers (AVX-512), × 3 on 16 (AVX2):
        // 16 or 12 accumulators beside the loaded vectors and a broadcast.
        if size_of::<S::f32s>() >= 64 {
            part_kernel::<S, 4>(simd, self.part, self.scratch);
        } else {
            part_kernel::<S, 3>(simd, self.part, self.scratch);
        }
    }
}

/// The part's convolution with tiles of [`CHANNELS`] × `V` vectors and the positions left after
/// the last whole one in tiles of [`CHANNELS`] × 1 vector, then its epilogue, into the output.
#[inline(always)]
fn part_kernel<S: pulp::Simd, const V: usize>(simd: S, t: Part, scratch: &mut [f32]) {
    let g = t.g;
    let lanes = size_of::<S::f32s>() / size_of::<f32>();
    let wp = g.w + 1;
    let (input_len, stride) = layout(g, lanes);
    let whole = stride - stride % (V * lanes);
    let plane = (g.h + 2) * wp;
    let (input, tiles) = scratch.split_at_mut(input_len);
    let tiles = &mut tiles[..CHANNELS * stride];
    pad_image(g, t.x, input, wp, plane);
    let input = (&*input, plane, wp, g.c);
    for block in t.blocks.clone() {
        let weights = &t.packed[block * g.c * 9 * CHANNELS..][..g.c * 9 * CHANNELS];
        for p0 in (0..whole).step_by(V * lanes) {
            tile_kernel::<S, V>(simd, input, weights, p0, (tiles, stride));
        }
        for p0 in (whole..stride).step_by(lanes) {
            tile_kernel::<S, 1>(simd, input, weights, p0, (tiles, stride));
        }
        // SAFETY: the part writes only its image's channels of its blocks, inside the output and
        // disjoint from every other task's; the output is not otherwise touched until every task
        // has returned.
        #[allow(unsafe_code)]
        unsafe {
            write_block(&t, block, tiles, stride, wp);
        }
    }
}

/// The image `x` into `input` as planes of `(h + 2)` rows of `wp = w + 1` (the first column
/// and the first and last rows zero), and the tail past the planes zeroed.
#[inline(always)]
fn pad_image(g: &Geometry, x: &[f32], input: &mut [f32], wp: usize, plane: usize) {
    let (planes, tail) = input.split_at_mut(g.c * plane);
    tail.fill(0.0);
    for (c, dst) in planes.chunks_exact_mut(plane).enumerate() {
        let (top, rest) = dst.split_at_mut(wp);
        let (rows, bottom) = rest.split_at_mut(g.h * wp);
        top.fill(0.0);
        bottom.fill(0.0);
        for (row, src) in rows
            .chunks_exact_mut(wp)
            .zip(x[c * g.h * g.w..].chunks_exact(g.w))
        {
            row[0] = 0.0;
            row[1..].copy_from_slice(src);
        }
    }
}

/// Positions `p0..p0 + V · lanes` of the block's [`CHANNELS`] output channels into `tiles`
/// (channel `j` at `j · stride`):
/// `Σ_c Σ_ky Σ_kx w[j][c][ky][kx] · input[c · plane + p + ky · wp + kx]`, in that order.
#[inline(always)]
fn tile_kernel<S: pulp::Simd, const V: usize>(
    simd: S,
    (input, plane, wp, c): (&[f32], usize, usize, usize),
    weights: &[f32],
    p0: usize,
    (tiles, stride): (&mut [f32], usize),
) {
    let lanes = size_of::<S::f32s>() / size_of::<f32>();
    assert!(
        (c - 1) * plane + p0 + V * lanes + 2 * wp + 2 <= input.len()
            && weights.len() == c * 9 * CHANNELS
            && p0 + V * lanes <= stride
            && tiles.len() == CHANNELS * stride,
        "direct convolution: tile out of bounds"
    );
    let mut acc = [[simd.splat_f32s(0.0); V]; CHANNELS];
    let input = input.as_ptr();
    let weights = weights.as_ptr();
    for ci in 0..c {
        for ky in 0..3 {
            for kx in 0..3 {
                let at = ci * plane + p0 + ky * wp + kx;
                let tap = (ci * 9 + ky * 3 + kx) * CHANNELS;
                // SAFETY: the loads span `at .. at + V · lanes` ≤ `(c − 1) · plane + p0 + V ·
                // lanes + 2 · wp + 2` ≤ `input.len()`, and the weights `tap .. tap + CHANNELS` ≤
                // `c · 9 · CHANNELS` (both asserted above); unaligned reads of plain floats.
                // (A loop, not `array::from_fn`, whose closure may stay outside the
                // target-feature context.)
                let mut v = [simd.splat_f32s(0.0); V];
                for (i, v) in v.iter_mut().enumerate() {
                    #[allow(unsafe_code)]
                    unsafe {
                        *v = input.add(at + i * lanes).cast::<S::f32s>().read_unaligned();
                    }
                }
                for (j, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    #[allow(unsafe_code)]
                    let w = simd.splat_f32s(unsafe { *weights.add(tap + j) });
                    for (a, &v) in acc.iter_mut().zip(&v) {
                        *a = simd.mul_add_f32s(w, v, *a);
                    }
                }
            }
        }
    }
    let tiles = tiles.as_mut_ptr();
    for (j, acc) in acc.iter().enumerate() {
        for (i, &a) in acc.iter().enumerate() {
            // SAFETY: `j · stride + p0 + (i + 1) · lanes ≤ CHANNELS · stride` (asserted above).
            #[allow(unsafe_code)]
            unsafe {
                tiles
                    .add(j * stride + p0 + i * lanes)
                    .cast::<S::f32s>()
                    .write_unaligned(a);
            }
        }
    }
}

/// The block's channels' rows from `tiles` into the output, each row's bias, shift and residual
/// added on its own in that order (as the im2col path does), the padding column dropped.
///
/// # Safety
/// `t.out` must be the whole `(n, co, ho, wo)` output, and no one else may read or write the
/// part's channels of its image while this runs.
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn write_block(t: &Part, block: usize, tiles: &mut [f32], stride: usize, wp: usize) {
    let (g, e) = (t.g, t.e);
    for (j, channel) in tiles.chunks_exact_mut(stride).enumerate() {
        let o = block * CHANNELS + j;
        if o >= g.co {
            break;
        }
        for (y, row) in channel.chunks_exact_mut(wp).take(g.ho).enumerate() {
            let row = &mut row[..g.wo];
            let first = t.image * g.out_len() + (o * g.ho + y) * g.wo;
            e.add_to(row, (t.image, o, g.co), first);
            // SAFETY: row `y` of channel `o` of the part's image is the part's (the caller's
            // promise covers it) and inside the output.
            unsafe {
                std::ptr::copy_nonoverlapping(row.as_ptr(), t.out.at(first), g.wo);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output is the same chain of fused multiply-adds whatever the vector width, so the
    /// AVX-512 tiles (4 vectors of 16), the AVX2 ones (3 of 8) and scalar code give the same
    /// bits, on a shape with whole tiles, single-vector ones and a partial channel block.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let g = Geometry {
            n: 2,
            c: 5,
            h: 33,
            w: 35,
            co: 6,
            k: 3,
            stride: 1,
            pad: 1,
            ho: 33,
            wo: 35,
        };
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1009) as f32 / 1009.0 - 0.5)
                .collect()
        };
        let (x, wt) = (values(g.n * g.in_len(), 1), values(g.co * g.c * 9, 2));
        let bias = values(g.co, 3);
        let e = Epilogue {
            bias: Some(&bias),
            ..Epilogue::default()
        };
        let widest = forward(&g, &x, &wt, e);
        let scalar = forward_on(&g, &x, &wt, e, |t| {
            pulp::WithSimd::with_simd(t, pulp::Scalar::new())
        });
        assert_eq!(widest, scalar);
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            assert_eq!(
                widest,
                forward_on(&g, &x, &wt, e, |t| {
                    v3.vectorize(|| pulp::WithSimd::with_simd(t, v3))
                })
            );
        }
    }
}
