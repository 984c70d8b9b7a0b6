//! The register-tiled product under attention, the narrow linear layers and Winograd's products
//! on few channels: `out (n × width) = [init +] b (n × m) · a (m × width)`, with the CPU's
//! vectors along `width` (read from `a`'s rows as they lie) and `b`'s values broadcast one at a
//! time from wherever they lie (by two strides, so a transposed or strided `b` needs no copy).
//! Narrow operands are where a general gemm spends as much on packing and edge tiles as on
//! products: attention's heads, the tiny model's 32–128-feature projections and 32–64-channel
//! convolutions.
//!
//! Every output value is its `init` (or 0) plus the `m` products in order, one fused
//! multiply-add after another, so a row's result does not depend on `n` or on the rows around it.

/// Longest inner dimension (`m`: input features of a linear layer, input channels of a Winograd
/// convolution) for which the kernels take this product instead of gemm: faster at the tiny
/// model's 32–128, while SD's 320 and up keep gemm, whose packing pays off there (`bench-ops`;
/// see docs/benchmarks.md, "Narrow linear layers and Winograd's products on the broadcast
/// kernel").
pub(crate) const NARROW: usize = 256;

/// Vectors of columns per register tile (fewer only in the last columns of a width that is not a
/// multiple of this many vectors).
pub(crate) const TILE_VECTORS: usize = 4;

/// One [`product`] as a kernel for [`crate::math::vectorized`], for callers outside another
/// vectorised kernel.
pub(crate) struct Product<'a> {
    /// `(m × width)`.
    pub a: &'a [f32],
    /// `(n × m)`: the values, the strides of `i` and `x`.
    pub b: (&'a [f32], usize, usize),
    /// `(n, m)`.
    pub dims: (usize, usize),
    pub width: usize,
    pub init: Option<&'a [f32]>,
    /// `(n × width)`.
    pub out: &'a mut [f32],
}

impl pulp::WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        product(
            simd, self.a, self.b, self.dims, self.width, self.init, self.out,
        );
    }
}

/// `out (n × width) = init + b (n × m) · a (m × width)`, where `b`'s value `(i, x)` lies at
/// `i · bi + x · bx` and `init` (`width` values, zeros when `None`) starts every row's sums:
/// register tiles of 4 rows × [`TILE_VECTORS`] vectors of columns on the 32 vector registers of
/// AVX-512, 2 × 4 on 16 (AVX2).
///
/// # Panics
/// When `width` is not a multiple of `S`'s lanes or the slices do not have these sizes.
#[inline(always)]
pub(crate) fn product<S: pulp::Simd>(
    simd: S,
    a: &[f32],
    b: (&[f32], usize, usize),
    dims: (usize, usize),
    width: usize,
    init: Option<&[f32]>,
    out: &mut [f32],
) {
    if size_of::<S::f32s>() >= 64 {
        tiled::<S, 4>(simd, a, b, dims, width, init, out);
    } else {
        tiled::<S, 2>(simd, a, b, dims, width, init, out);
    }
}

/// [`product`] in tiles of `T` rows of `out` (then single rows) × [`TILE_VECTORS`] vectors of
/// columns (then 2, then 1).
#[inline(always)]
fn tiled<S: pulp::Simd, const T: usize>(
    simd: S,
    a: &[f32],
    (b, bi, bx): (&[f32], usize, usize),
    (n, m): (usize, usize),
    width: usize,
    init: Option<&[f32]>,
    out: &mut [f32],
) {
    let lanes = size_of::<S::f32s>() / size_of::<f32>();
    assert!(
        width.is_multiple_of(lanes)
            && n > 0
            && m > 0
            && a.len() == m * width
            && out.len() == n * width
            && init.is_none_or(|v| v.len() == width)
            && b.len() == (n - 1) * bi + (m - 1) * bx + 1,
        "broadcast product: sizes"
    );
    let rv = width / lanes;
    let a = S::as_simd_f32s(a).0;
    let init = init.map(|v| S::as_simd_f32s(v).0);
    let out = S::as_mut_simd_f32s(out).0;
    let b = (b, bi, bx);
    let mut g = 0;
    while g + TILE_VECTORS <= rv {
        columns::<S, T, TILE_VECTORS>(simd, (a, rv, g, m), b, n, init, out);
        g += TILE_VECTORS;
    }
    if g + 2 <= rv {
        columns::<S, T, 2>(simd, (a, rv, g, m), b, n, init, out);
        g += 2;
    }
    if g < rv {
        columns::<S, T, 1>(simd, (a, rv, g, m), b, n, init, out);
    }
}

/// Every row of column vectors `g..g + V` of a [`tiled`] product: tiles of `T` rows, then
/// single rows.
#[inline(always)]
fn columns<S: pulp::Simd, const T: usize, const V: usize>(
    simd: S,
    a: (&[S::f32s], usize, usize, usize),
    (b, bi, bx): (&[f32], usize, usize),
    n: usize,
    init: Option<&[S::f32s]>,
    out: &mut [S::f32s],
) {
    let mut i = 0;
    while i + T <= n {
        tile::<S, T, V>(simd, a, (b, bi, bx, i), init, out);
        i += T;
    }
    while i < n {
        tile::<S, 1, V>(simd, a, (b, bi, bx, i), init, out);
        i += 1;
    }
}

/// Rows `i..i + T` × column vectors `g..g + V` of a [`tiled`] product.
#[inline(always)]
fn tile<S: pulp::Simd, const T: usize, const V: usize>(
    simd: S,
    (a, rv, g, m): (&[S::f32s], usize, usize, usize),
    (b, bi, bx, i): (&[f32], usize, usize, usize),
    init: Option<&[S::f32s]>,
    out: &mut [S::f32s],
) {
    let start: [S::f32s; V] = match init {
        Some(v) => std::array::from_fn(|r| v[g + r]),
        None => [simd.splat_f32s(0.0); V],
    };
    let mut acc = [start; T];
    for x in 0..m {
        // SAFETY: `x < m`, `g + V ≤ rv` and `i + T ≤ n` (the sizes `tiled` asserted and its
        // loops keep): inside `a` (`m × rv` vectors) and `b` (its last value is at
        // `(n − 1) · bi + (m − 1) · bx`).
        #[allow(unsafe_code)]
        let av: [S::f32s; V] = std::array::from_fn(|r| unsafe { *a.get_unchecked(x * rv + g + r) });
        for (ii, acc) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            #[allow(unsafe_code)]
            let bv = simd.splat_f32s(unsafe { *b.get_unchecked((i + ii) * bi + x * bx) });
            for (s, &av) in acc.iter_mut().zip(&av) {
                *s = simd.mul_add_f32s(bv, av, *s);
            }
        }
    }
    for (ii, acc) in acc.iter().enumerate() {
        out[(i + ii) * rv + g..][..V].copy_from_slice(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the sums written out, on every vector width this CPU has: rows that are not whole
    /// tiles, widths of 1 to 9 vectors of 16 (every mix of 4-, 2- and 1-vector column groups), a
    /// transposed `b` read by stride, with and without `init`. Each value is the same chain of
    /// fused multiply-adds as `f32::mul_add` makes, so the results must be equal bit for bit.
    #[test]
    fn matches_the_sums_on_every_width() {
        use pulp::Simd;
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 17.0;
        // Each runs the product at one width and says whether this CPU has it.
        type Run = fn(Product) -> bool;
        let mut widths: Vec<(&str, Run)> = vec![("scalar", |op| {
            pulp::Scalar::new().vectorize(op);
            true
        })];
        #[cfg(target_arch = "x86_64")]
        widths.extend([
            (
                "avx2",
                (|op| {
                    pulp::x86::V3::try_new()
                        .map(|s| Simd::vectorize(s, op))
                        .is_some()
                }) as Run,
            ),
            ("avx512", |op| {
                pulp::x86::V4::try_new()
                    .map(|s| Simd::vectorize(s, op))
                    .is_some()
            }),
        ]);
        for (name, run) in widths {
            for (n, m, vectors) in [(1, 1, 1), (7, 5, 2), (10, 16, 3), (4, 3, 5), (5, 9, 9)] {
                let width = 16 * vectors;
                let a: Vec<f32> = (0..m * width).map(value).collect();
                // `b` stored transposed: value (i, x) at x · n + i.
                let b: Vec<f32> = (0..n * m).map(|i| value(i + 7)).collect();
                let init: Vec<f32> = (0..width).map(|i| value(i + 3)).collect();
                for start in [None, Some(&init[..])] {
                    let mut out = vec![f32::NAN; n * width];
                    let op = Product {
                        a: &a,
                        b: (&b, 1, n),
                        dims: (n, m),
                        width,
                        init: start,
                        out: &mut out,
                    };
                    if !run(op) {
                        continue;
                    }
                    for i in 0..n {
                        for j in 0..width {
                            let first = start.map_or(0.0, |v| v[j]);
                            let want = (0..m)
                                .fold(first, |s, x| b[x * n + i].mul_add(a[x * width + j], s));
                            assert_eq!(out[i * width + j], want, "{name}: n {n} m {m} ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}
