//! `exp` (and SiLU over it) as plain arithmetic that the compiler vectorises: the SiLU after every
//! group norm and GEGLU's erf take one per value, and the C library's `expf` is a scalar call (it
//! was a fifth of a 256×256 render's time before this, in attention's softmax, which now has an
//! explicit-vector version of its own with fused multiply-adds: `attention::exp_below`).
//!
//! Cody–Waite range reduction to `r ∈ [−ln2/2, ln2/2]` and a degree-6 Taylor polynomial: within
//! 3 ulp of `f32::exp` over the range that matters (tested), the same bits on every x86-64 CPU
//! (no fused multiply-add is formed, so vector and scalar code agree), saturating instead of
//! overflowing.

/// `kernel` run compiled for the best vector instructions this CPU has (AVX-512 or AVX2 + FMA on
/// x86-64 where present; the build's baseline is SSE2), so that its loops over [`exp`] and friends
/// take eight values at a time. The kernel's `with_simd` must be `#[inline(always)]` and call only
/// `#[inline(always)]` code for its loops (closures and generic library functions are not inlined
/// into the target-feature context, and then nothing changes: in attention's kernels a closure
/// made them ten times slower). [`exp`] fuses no multiply-add either way, so its results are the
/// same bits on every CPU; kernels written on `pulp::Simd` vectors may fuse them.
#[inline(always)]
pub(super) fn vectorized<K: pulp::WithSimd>(kernel: K) -> K::Output {
    pulp::Arch::new().dispatch(kernel)
}

/// `e^x`, for `x` clamped to `[−87.3, 88.3]` (so `2^n` stays a normal f32).
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) fn silu(x: f32) -> f32 {
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
pub(super) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Independent accumulators of sums elsewhere, so their loops vectorise.
pub(super) const LANES: usize = 8;

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

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(silu(-1000.0) <= 0.0 && silu(-1000.0) > -1e-30);
        assert!((silu(1000.0) - 1000.0).abs() < 1e-3);
    }
}
