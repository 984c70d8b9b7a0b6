//! Winograd F(2×2, 3×3) for the forward of 3×3, stride-1, padding-1 convolutions (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016): every 2×2 block of outputs comes
//! from its 4×4 input patch through 16 products per channel pair instead of 36, so the gemms do
//! 2.25× fewer multiply-adds than im2col's; the transforms around them are additions.
//!
//! Per image and block of tile rows, like the im2col path: `M[ξ] (co × tiles) = U[ξ] (co × c) ·
//! V[ξ] (c × tiles)` for the 16 points ξ, so an image's result does not depend on its batch or
//! the thread count. The results differ from im2col's in the last bits (another order of sums).

use rayon::prelude::*;

use crate::broadcast;
use crate::geometry::{Epilogue, Geometry};
use crate::math::{MAX_LANES, vectorized};
use crate::matmul::matmul_into;
use crate::parallel::{OutPtr, filled, with_scratch};

/// Floats of one block's transformed input (and of its products): 16 × channels × tiles ≤ this,
/// so both stay in L2 while the block's 16 gemms run.
const BLOCK_FLOATS: usize = 64 * 1024;

/// Fewest output pixels an image must have for this path. Below, im2col is as fast or faster:
/// the 16 products' inner dimension is the channel count, too short to amortise packing on small
/// images (`bench-ops`; see docs/benchmarks.md, "Winograd F(2×2, 3×3) convolutions").
const MIN_PIXELS: usize = 64 * 64;

/// Whether the geometry is one this path computes (a 3×3 kernel, stride 1, padding 1) and is
/// faster at.
pub(crate) fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad == 1 && g.ho * g.wo >= MIN_PIXELS
}

/// `U[ξ][o][c] = (G w Gᵀ)[ξ]` of every output channel `o` and input channel `c` of a `(co, c, 3,
/// 3)` weight, `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
fn transform_weights(g: &Geometry, wt: &[f32]) -> Vec<f32> {
    let (c, co) = (g.c, g.co);
    let mut u = vec![0f32; 16 * co * c];
    for o in 0..co {
        for ci in 0..c {
            let k = &wt[(o * c + ci) * 9..][..9];
            // G · k: 4 × 3.
            let mut t = [[0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, d) = (k[j], k[3 + j], k[6 + j]);
                t[0][j] = a;
                t[1][j] = 0.5 * (a + b + d);
                t[2][j] = 0.5 * (a - b + d);
                t[3][j] = d;
            }
            // (G · k) · Gᵀ: 4 × 4.
            for (i, [a, b, d]) in t.into_iter().enumerate() {
                let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * co + o) * c + ci] = v;
                }
            }
        }
    }
    u
}

/// `Bᵀ · [d0, d1, d2, d3]` with `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
#[inline(always)]
fn input_1d([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `Aᵀ · [m0, m1, m2, m3]` with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`.
#[inline(always)]
fn output_1d([m0, m1, m2, m3]: [f32; 4]) -> [f32; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// One image's block of tile rows `ty0..ty0 + rows` (tile `(ty, tx)` makes outputs `2ty..2ty+2 ×
/// 2tx..2tx+2`).
#[derive(Debug, Clone, Copy)]
struct Block {
    image: usize,
    ty0: usize,
    rows: usize,
}

/// The geometry's tiles per row and tile rows per block.
fn tiling(g: &Geometry) -> (usize, usize, usize) {
    let (tiles_x, tiles_y) = (g.wo.div_ceil(2), g.ho.div_ceil(2));
    let per_row = 16 * tiles_x * g.c.max(g.co);
    (tiles_x, tiles_y, (BLOCK_FLOATS / per_row).clamp(1, tiles_y))
}

/// The convolution `x` (NCHW) ⊛ `wt` with `e`'s terms added, as [`crate::conv`]'s forward does.
pub(crate) fn forward(g: &Geometry, x: &[f32], wt: &[f32], e: Epilogue) -> Vec<f32> {
    let u = transform_weights(g, wt);
    let (tiles_x, tiles_y, rows) = tiling(g);
    let blocks: Vec<Block> = (0..g.n)
        .flat_map(|image| {
            (0..tiles_y).step_by(rows).map(move |ty0| Block {
                image,
                ty0,
                rows: rows.min(tiles_y - ty0),
            })
        })
        .collect();
    // With few input channels the 16 products take the broadcast kernel, over tiles padded to
    // whole vectors (the padding columns hold whatever the scratch held and are never read back).
    let narrow = g.c <= broadcast::NARROW;
    let fill = |out: OutPtr| {
        blocks.par_iter().for_each(|b| {
            let tiles = b.rows * tiles_x;
            let width = if narrow {
                tiles.next_multiple_of(MAX_LANES)
            } else {
                tiles
            };
            let (v_len, m_len) = (16 * g.c * width, 16 * g.co * width);
            with_scratch(v_len + m_len, |scratch| {
                let (v, m) = scratch.split_at_mut(v_len);
                let x = &x[b.image * g.in_len()..][..g.in_len()];
                transform_input(g, x, b, tiles_x, width, v);
                if narrow {
                    // M[ξ] (co × width) = U[ξ] (co × c) · V[ξ] (c × width), U's values
                    // broadcast.
                    let us = u.chunks_exact(g.co * g.c);
                    let vs = v.chunks_exact(g.c * width);
                    for ((u, v), m) in us.zip(vs).zip(m.chunks_exact_mut(g.co * width)) {
                        vectorized(broadcast::Product {
                            a: v,
                            b: (u, g.c, 1),
                            dims: (g.co, g.c),
                            width,
                            init: None,
                            out: m,
                        });
                    }
                } else {
                    for xi in 0..16 {
                        matmul_into(
                            (g.co, tiles, g.c),
                            &mut m[xi * g.co * tiles..],
                            tiles,
                            false,
                            &u[xi * g.co * g.c..],
                            (g.c, 1),
                            &v[xi * g.c * tiles..],
                            (tiles, 1),
                        );
                    }
                }
                // SAFETY: this block writes only its image's output rows `2·ty0 .. 2·(ty0 +
                // rows)` (of every channel), inside the output and disjoint from every other
                // block's; the output is not otherwise touched until every block has returned.
                #[allow(unsafe_code)]
                unsafe {
                    write_output(g, m, b, (tiles_x, width), e, out);
                }
            });
        });
    };
    // SAFETY: the blocks are every tile row of every image, and `write_output` writes every
    // output row of its tile rows (below `ho`) of every channel.
    #[allow(unsafe_code)]
    unsafe {
        filled(g.n * g.out_len(), fill)
    }
}

/// `V[ξ][c][tile]` of the block: `Bᵀ d B` of every tile's 4×4 input patch (zero outside the
/// image) and channel, a tile row at a time: each of the patch rows split into its even and odd
/// columns (so every term is a contiguous run over the row's tiles), transformed along x, then the
/// four rows along y. Writes every value of `v` (`16 · c · width`) but the padding columns past
/// the block's tiles.
fn transform_input(
    g: &Geometry,
    x: &[f32],
    b: &Block,
    tiles_x: usize,
    width: usize,
    v: &mut [f32],
) {
    // Columns -1 ..= 2·tiles_x of one input row, as even (`e[k]` = column 2k − 1) and odd
    // (`o[k]` = column 2k) halves, zero outside the image.
    let (mut e, mut o) = (vec![0f32; tiles_x + 1], vec![0f32; tiles_x + 1]);
    // `h[dy][j][tx]`: patch row `dy` of tile `tx` transformed along x, component `j`.
    let mut h = vec![0f32; 16 * tiles_x];
    // The four y components of one x component, for the row's tiles.
    let mut cols = [(); 4].map(|_| vec![0f32; tiles_x]);
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for r in 0..b.rows {
            let iy0 = 2 * (b.ty0 + r) as isize - 1;
            for dy in 0..4 {
                let iy = iy0 + dy as isize;
                e.fill(0.0);
                o.fill(0.0);
                if iy >= 0 && (iy as usize) < g.h {
                    let row = &plane[iy as usize * g.w..][..g.w];
                    // Column 2k is o[k], column 2k + 1 is e[k + 1].
                    for (k, pair) in row.chunks(2).enumerate() {
                        o[k] = pair[0];
                        if let Some(&val) = pair.get(1) {
                            e[k + 1] = val;
                        }
                    }
                }
                let hr = &mut h[dy * 4 * tiles_x..][..4 * tiles_x];
                let (h0, rest) = hr.split_at_mut(tiles_x);
                let (h1, rest) = rest.split_at_mut(tiles_x);
                let (h2, h3) = rest.split_at_mut(tiles_x);
                // Tile tx reads padded columns 2tx .. 2tx + 3: e[tx], o[tx], e[tx + 1], o[tx + 1].
                for tx in 0..tiles_x {
                    let [a, b, c, d] = input_1d([e[tx], o[tx], e[tx + 1], o[tx + 1]]);
                    h0[tx] = a;
                    h1[tx] = b;
                    h2[tx] = c;
                    h3[tx] = d;
                }
            }
            for j in 0..4 {
                let at = |dy: usize| &h[(dy * 4 + j) * tiles_x..][..tiles_x];
                let (r0, r1, r2, r3) = (at(0), at(1), at(2), at(3));
                for tx in 0..tiles_x {
                    let t = input_1d([r0[tx], r1[tx], r2[tx], r3[tx]]);
                    for (i, row) in cols.iter_mut().enumerate() {
                        row[tx] = t[i];
                    }
                }
                for (i, row) in cols.iter().enumerate() {
                    let dst = (((i * 4 + j) * g.c + ci) * width) + r * tiles_x;
                    v[dst..][..tiles_x].copy_from_slice(row);
                }
            }
        }
    }
}

/// `Aᵀ M A` of every tile and output channel, plus the epilogue's terms (each added on its own, in
/// the order bias, shift, residual, as the im2col path does), into the block's output rows: a
/// tile row at a time, along y over the row's tiles, then along x into the even and odd columns.
///
/// # Safety
/// `out` must be the whole `(n, co, ho, wo)` output, and no one else may read or write the
/// block's rows while this runs.
#[allow(unsafe_code)]
unsafe fn write_output(
    g: &Geometry,
    m: &[f32],
    b: &Block,
    (tiles_x, width): (usize, usize),
    e: Epilogue,
    out: OutPtr,
) {
    let plane = g.ho * g.wo;
    // `s[dy][c][tx]`: column `c` of tile `tx` transformed along y, output row `dy`.
    let mut s = [(); 8].map(|_| vec![0f32; tiles_x]);
    let mut row = vec![0f32; 2 * tiles_x];
    for o in 0..g.co {
        let base = b.image * g.out_len() + o * plane;
        for r in 0..b.rows {
            let point = |xi: usize| &m[(xi * g.co + o) * width + r * tiles_x..][..tiles_x];
            for c in 0..4 {
                let (p0, p1, p2, p3) = (point(c), point(4 + c), point(8 + c), point(12 + c));
                for tx in 0..tiles_x {
                    let [a, d] = output_1d([p0[tx], p1[tx], p2[tx], p3[tx]]);
                    s[c][tx] = a;
                    s[4 + c][tx] = d;
                }
            }
            for dy in 0..2 {
                let oy = 2 * (b.ty0 + r) + dy;
                if oy >= g.ho {
                    continue;
                }
                let sd = &s[4 * dy..][..4];
                for (tx, pair) in row.chunks_exact_mut(2).enumerate() {
                    let [even, odd] = output_1d([sd[0][tx], sd[1][tx], sd[2][tx], sd[3][tx]]);
                    pair[0] = even;
                    pair[1] = odd;
                }
                let first = base + oy * g.wo;
                let row = &mut row[..g.wo];
                e.add_to(row, (b.image, o, g.co), first);
                // SAFETY: output row `oy` of channel `o` of the block's image lies in the block's
                // rows (the caller's promise covers them) and inside the output.
                unsafe {
                    std::ptr::copy_nonoverlapping(row.as_ptr(), out.at(first), g.wo);
                }
            }
        }
    }
}
