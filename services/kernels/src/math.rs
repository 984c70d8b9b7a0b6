//! `exp` (and SiLU over it) as plain arithmetic that the compiler vectorises: the SiLU after every
//! group norm takes one per value, and the C library's `expf` is a scalar call. Attention's softmax and GEGLU's GELU use
//! [`exp_below`] / [`gelu_below`], the same arithmetic written on `pulp` vectors with fused
//! multiply-adds.
//!
//! Cody–Waite range reduction to `r ∈ [−ln2/2, ln2/2]` and a degree-6 Taylor polynomial: within
//! 3 ulp of `f32::exp` over the range that matters (tested), the same bits on every x86-64 CPU
//! (no fused multiply-add is formed, so vector and scalar code agree), saturating instead of
//! overflowing.

/// The widest vector of any CPU the kernels run on, in f32s (AVX-512): buffers whose layout
/// depends on the vector width are sized for it.
pub(crate) const MAX_LANES: usize = 16;

/// `kernel` run compiled for the best vector instructions this CPU has (AVX-512 or AVX2 + FMA on
/// x86-64 where present; the build's baseline is SSE2), so that its loops over [`exp`] and friends
/// take eight values at a time. The kernel's `with_simd` must be `#[inline(always)]` and call only
/// `#[inline(always)]` code for its loops: closures and generic library functions are not inlined
/// into the target-feature context, and their loops then run on the baseline's instructions. [`exp`] fuses no multiply-add either way, so its results are the
/// same bits on every CPU; kernels written on `pulp::Simd` vectors may fuse them.
#[inline(always)]
pub(crate) fn vectorized<K: pulp::WithSimd>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(kernel)
}

/// `e^x`, for `x` clamped to `[−87.3, 88.3]` (so `2^n` stays a normal f32).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a branch or a call.
    const ROUND: f32 = 12_582_912.0;
    // Comparisons written as selects (not `clamp` / `max`, whose NaN rules keep them scalar).
    let x = if x > 88.3 { 88.3 } else { x };
    let x = if x < -87.3 { -87.3 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // `t`'s low mantissa bits hold `2^22 + n`: move `n + 127` into the exponent with integer
    // arithmetic only (an `as i32` conversion would saturate, which does not vectorise).
    let two_n = f32::from_bits(t.to_bits().wrapping_add(127).wrapping_sub(1 << 22) << 23);
    p * two_n
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7; under 5e-7 in f32, tested), over [`exp`].
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let p = 1.061_405_4f32;
    let p = p * t - 1.453_152;
    let p = p * t + 1.421_413_8;
    let p = p * t - 0.284_496_72;
    let p = p * t + 0.254_829_6;
    (1.0 - p * t * exp(-a * a)).copysign(x)
}

/// The exact (erf) GELU, `x · Φ(x)`, as diffusers' GEGLU uses it.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The constants of [`exp_below`], splatted once a kernel.
pub(crate) struct ExpConsts<S: pulp::Simd> {
    floor: S::f32s,
    log2e: S::f32s,
    round: S::f32s,
    ln2_hi: S::f32s,
    ln2_lo: S::f32s,
    poly: [S::f32s; 7],
    bias: S::u32s,
    shift: S::u32s,
}

impl<S: pulp::Simd> ExpConsts<S> {
    #[inline(always)]
    pub(crate) fn new(simd: S) -> Self {
        const POLY: [f32; 7] = [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ];
        ExpConsts {
            floor: simd.splat_f32s(-87.3),
            log2e: simd.splat_f32s(std::f32::consts::LOG2_E),
            // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
            round: simd.splat_f32s(12_582_912.0),
            // −ln 2, split so that `n · LN2_HI` is exact for the `n` that occur.
            ln2_hi: simd.splat_f32s(-0.693_359_4),
            ln2_lo: simd.splat_f32s(2.121_944_4e-4),
            poly: POLY.map(|c| simd.splat_f32s(c)),
            // `t`'s low mantissa bits hold `2^22 + n`: `n + 127` moves into the exponent.
            bias: simd.splat_u32s(127u32.wrapping_sub(1 << 22)),
            shift: simd.splat_u32s(23),
        }
    }
}

/// `e^x` for `x ≤ 0` (an attention score less its column's max, GEGLU's `−x²`), clamped below at
/// `e^−87.3`, a whole `pulp` vector at a time.
///
/// The same Cody–Waite reduction and degree-6 polynomial as [`exp`], but with fused multiply-adds
/// where the CPU has them (about a third of the instructions per value) and only the lower clamp.
#[inline(always)]
pub(crate) fn exp_below<S: pulp::Simd>(simd: S, k: &ExpConsts<S>, x: S::f32s) -> S::f32s {
    let x = simd.max_f32s(x, k.floor);
    let t = simd.mul_add_f32s(x, k.log2e, k.round);
    let n = simd.sub_f32s(t, k.round);
    let r = simd.mul_add_f32s(n, k.ln2_lo, simd.mul_add_f32s(n, k.ln2_hi, x));
    let mut p = k.poly[0];
    for &c in &k.poly[1..] {
        p = simd.mul_add_f32s(p, r, c);
    }
    let bits = simd.add_u32s(simd.transmute_u32s_f32s(t), k.bias);
    let two_n = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(bits, k.shift));
    simd.mul_f32s(p, two_n)
}

/// The exact (erf) GELU of a vector: [`gelu`]'s formula on `pulp` vectors, with [`exp_below`].
#[inline(always)]
pub(crate) fn gelu_below<S: pulp::Simd>(simd: S, k: &ExpConsts<S>, x: S::f32s) -> S::f32s {
    let z = simd.mul_f32s(x, simd.splat_f32s(std::f32::consts::FRAC_1_SQRT_2));
    let a = simd.abs_f32s(z);
    let t = simd.div_f32s(
        simd.splat_f32s(1.0),
        simd.mul_add_f32s(a, simd.splat_f32s(0.327_591_1), simd.splat_f32s(1.0)),
    );
    let mut p = simd.splat_f32s(1.061_405_4);
    for c in [-1.453_152, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        p = simd.mul_add_f32s(p, t, simd.splat_f32s(c));
    }
    let e = exp_below(simd, k, simd.neg_f32s(simd.mul_f32s(a, a)));
    let erf_abs = simd.sub_f32s(simd.splat_f32s(1.0), simd.mul_f32s(simd.mul_f32s(p, t), e));
    let sign = simd.and_u32s(simd.transmute_u32s_f32s(z), simd.splat_u32s(0x8000_0000));
    let erf = simd.transmute_f32s_u32s(simd.or_u32s(simd.transmute_u32s_f32s(erf_abs), sign));
    simd.mul_f32s(
        simd.mul_f32s(simd.splat_f32s(0.5), x),
        simd.add_f32s(simd.splat_f32s(1.0), erf),
    )
}

/// Independent accumulators of sums elsewhere, so their loops vectorise.
pub(crate) const LANES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_three_ulp_of_std() {
        let mut worst = (0, 0.0);
        let mut x = -87.0f32;
        while x < 88.0 {
            let u = ulps(exp(x), x.exp());
            if u > worst.0 {
                worst = (u, x);
            }
            x += 0.001_3;
        }
        assert!(worst.0 <= 3, "{} ulp at {}", worst.0, worst.1);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn gelu_is_the_erf_gelu() {
        // erf against its series `2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))` in f64, where it converges.
        let series = |x: f64| {
            let (mut term, mut total) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        };
        let mut x = -4.0f32;
        while x < 4.0 {
            let want = series(f64::from(x));
            assert!(
                (f64::from(erf(x)) - want).abs() < 5e-7,
                "erf({x}): {}",
                f64::from(erf(x)) - want
            );
            let g = 0.5 * f64::from(x) * (1.0 + series(f64::from(x) / 2f64.sqrt()));
            assert!((f64::from(gelu(x)) - g).abs() < 1e-6, "gelu({x})");
            x += 0.013;
        }
        assert_eq!(gelu(-30.0), -0.0);
        assert_eq!(gelu(30.0), 30.0);
    }

    /// `exp_below` on every vector width the CPU runs, against `f32::exp` over the scores' range.
    #[test]
    fn the_vector_exp_is_within_three_ulp() {
        struct Exps<'a>(&'a mut [f32]);
        impl pulp::WithSimd for Exps<'_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) {
                let k = ExpConsts::new(simd);
                let (head, tail) = S::as_mut_simd_f32s(self.0);
                for v in head {
                    *v = exp_below(simd, &k, *v);
                }
                let e = exp_below(simd, &k, simd.partial_load_f32s(tail));
                simd.partial_store_f32s(tail, e);
            }
        }
        let xs: Vec<f32> = (0..70_001).map(|i| -87.0 * i as f32 / 70_000.0).collect();
        let mut es = xs.clone();
        vectorized(Exps(&mut es));
        for (&x, &e) in xs.iter().zip(&es) {
            let ulps = (e.to_bits() as i64 - x.exp().to_bits() as i64).unsigned_abs();
            assert!(ulps <= 3, "exp({x}): {e} is {ulps} ulp from {}", x.exp());
        }
        let mut below = [-1000.0f32];
        vectorized(Exps(&mut below));
        assert!(below[0] > 0.0 && below[0] < 1e-37);
    }

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(silu(-1000.0) <= 0.0 && silu(-1000.0) > -1e-30);
        assert!((silu(1000.0) - 1000.0).abs() < 1e-3);
    }
}
