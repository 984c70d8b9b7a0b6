//! The types the convolution's forward paths share ([`crate::conv`]'s im2col + gemm,
//! [`crate::winograd`], [`crate::direct`]) and its backward ([`crate::conv_backward`]): the
//! geometry of one convolution, with im2col's tiling of it, and the terms the forward adds to
//! every product.

use candle_core::{Result, Shape, bail};

/// Floats of one im2col tile: 256 KiB, so a tile and its slice of the output stay in L2.
const TILE_FLOATS: usize = 64 * 1024;

/// Geometry of one convolution: NCHW input, `(co, c, k, k)` weight, equal padding, dilation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Images.
    pub(crate) n: usize,
    /// Input channels.
    pub(crate) c: usize,
    /// Input height.
    pub(crate) h: usize,
    /// Input width.
    pub(crate) w: usize,
    /// Output channels.
    pub(crate) co: usize,
    /// The kernel's side.
    pub(crate) k: usize,
    pub(crate) stride: usize,
    /// Zeros around the input on every side.
    pub(crate) pad: usize,
    /// Output height.
    pub(crate) ho: usize,
    /// Output width.
    pub(crate) wo: usize,
}

impl Geometry {
    /// The geometry of input `x` and `weight` with `stride` and `pad`.
    ///
    /// # Errors
    /// When the weight's input channels are not the input's, the kernel is not square, the stride
    /// is 0 or the kernel is larger than the padded input.
    pub(crate) fn new(x: &Shape, weight: &Shape, stride: usize, pad: usize) -> Result<Geometry> {
        let (n, c, h, w) = x.dims4()?;
        let (co, ci, k, k2) = weight.dims4()?;
        if ci != c || k != k2 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            bail!(
                "conv2d: input {x:?} and weight {weight:?} (stride {stride}, padding {pad}) do not fit"
            );
        }
        Ok(Geometry {
            n,
            c,
            h,
            w,
            co,
            k,
            stride,
            pad,
            ho: (h + 2 * pad - k) / stride + 1,
            wo: (w + 2 * pad - k) / stride + 1,
        })
    }

    /// Rows of the im2col matrix (the weight's row length).
    pub(crate) fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Output rows per tile.
    pub(crate) fn tile_rows(&self) -> usize {
        (TILE_FLOATS / (self.ckk() * self.wo)).clamp(1, self.ho)
    }

    /// `(first output row, rows)` of every tile of one image.
    pub(crate) fn tiles(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let rows = self.tile_rows();
        (0..self.ho)
            .step_by(rows)
            .map(move |r| (r, rows.min(self.ho - r)))
    }

    /// Whether the column matrix is the input itself (1×1, stride 1, no padding).
    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// The column matrix (`ckk × rows·wo`) of output rows `r0..r0+rows` of one image `x`, and its
    /// row stride: the input rows themselves for a pointwise convolution, else im2col into `col`.
    pub(crate) fn columns<'a>(
        &self,
        x: &'a [f32],
        r0: usize,
        rows: usize,
        col: &'a mut [f32],
    ) -> (&'a [f32], usize) {
        if self.is_pointwise() {
            (&x[r0 * self.wo..], self.ho * self.wo)
        } else {
            self.im2col(x, r0, rows, col);
            (col, rows * self.wo)
        }
    }

    /// Floats of a column buffer for the largest tile (none when pointwise).
    pub(crate) fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.ckk() * self.tile_rows() * self.wo
        }
    }

    /// The input row that kernel row `ky` of output row `oy` reads, if inside the image.
    fn source_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad)
            .filter(|&iy| iy < self.h)
    }

    /// The output columns `lo..hi` whose kernel column `kx` reads inside the image; column `ox`
    /// reads input column `ox · stride + kx − pad`.
    fn valid_cols(&self, kx: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kx).div_ceil(self.stride);
        let hi = (self.w + self.pad)
            .saturating_sub(kx)
            .div_ceil(self.stride)
            .min(self.wo);
        (lo.min(hi), hi)
    }

    /// Fill `col` (`ckk × rows·wo`) from one image `x` (`c × h × w`) for output rows `r0..r0+rows`.
    fn im2col(&self, x: &[f32], r0: usize, rows: usize, col: &mut [f32]) {
        let (p, s) = (rows * self.wo, self.stride);
        for c in 0..self.c {
            let plane = &x[c * self.h * self.w..(c + 1) * self.h * self.w];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let (lo, hi) = self.valid_cols(kx);
                    let row = &mut col[((c * self.k + ky) * self.k + kx) * p..][..p];
                    for (oy, out) in row.chunks_mut(self.wo).enumerate() {
                        let Some(iy) = self.source_row(r0 + oy, ky) else {
                            out.fill(0.0);
                            continue;
                        };
                        out[..lo].fill(0.0);
                        out[hi..].fill(0.0);
                        if lo == hi {
                            continue;
                        }
                        let first = iy * self.w + lo * s + kx - self.pad;
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&plane[first..first + hi - lo]);
                        } else {
                            let src = plane[first..].iter().step_by(s);
                            out[lo..hi].iter_mut().zip(src).for_each(|(o, &v)| *o = v);
                        }
                    }
                }
            }
        }
    }

    /// Add `col` (`ckk × rows·wo`) back into one image's gradient `dx` (`c × h × w`).
    pub(crate) fn col2im_add(&self, col: &[f32], r0: usize, rows: usize, dx: &mut [f32]) {
        let (p, s) = (rows * self.wo, self.stride);
        for c in 0..self.c {
            let plane = &mut dx[c * self.h * self.w..(c + 1) * self.h * self.w];
            for ky in 0..self.k {
                for kx in 0..self.k {
                    let (lo, hi) = self.valid_cols(kx);
                    let row = &col[((c * self.k + ky) * self.k + kx) * p..][..p];
                    for (oy, out) in row.chunks(self.wo).enumerate() {
                        let Some(iy) = self.source_row(r0 + oy, ky).filter(|_| lo < hi) else {
                            continue;
                        };
                        let first = iy * self.w + lo * s + kx - self.pad;
                        let dst = plane[first..].iter_mut().step_by(s);
                        dst.zip(&out[lo..hi]).for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }

    /// Values of one input image.
    pub(crate) fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Values of one output image.
    pub(crate) fn out_len(&self) -> usize {
        self.co * self.ho * self.wo
    }
}

/// What the forward adds to each product, in this order, each addition rounded on its own as a
/// separate tensor add would (so fusing changes no bit): a bias per channel `(co)`, a shift per
/// image and channel `(n, co)` (a resnet's time embedding), a residual per value
/// `(n, co, ho, wo)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) shift: Option<&'a [f32]>,
    pub(crate) residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// Adds the terms of output channel `o` of image `image` (of `co` channels) to `values`, the
    /// output's elements from `first` on (the residual's are at the same places). Inlined, so it
    /// compiles for the vector instructions of the kernel that calls it.
    #[inline(always)]
    pub(crate) fn add_to(
        &self,
        values: &mut [f32],
        (image, o, co): (usize, usize, usize),
        first: usize,
    ) {
        if let Some(b) = self.bias {
            values.iter_mut().for_each(|v| *v += b[o]);
        }
        if let Some(s) = self.shift {
            let s = s[image * co + o];
            values.iter_mut().for_each(|v| *v += s);
        }
        if let Some(r) = self.residual {
            let r = &r[first..][..values.len()];
            values.iter_mut().zip(r).for_each(|(v, &r)| *v += r);
        }
    }
}
