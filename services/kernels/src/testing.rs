//! Helpers of the kernels' tests: seeded random inputs and comparisons against candle's ops.

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// Standard normal values from a generator seeded with `seed`, plus `mean`.
pub(crate) fn randn(shape: &[usize], seed: u64, mean: f32) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..shape.iter().product())
        .map(|_| StandardNormal.sample(&mut rng))
        .map(|v: f32| v + mean)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest magnitude in `t`.
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    let t = t.abs().unwrap().flatten_all().unwrap();
    t.max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The largest magnitude of `a − b`.
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// Asserts that `ours` and `theirs`, the same function of `vars` computed two ways, agree within
/// `tol` of the larger of 1 and the reference's largest magnitude, in value and in the gradient of
/// a random projection with respect to every var.
pub(crate) fn assert_same(vars: &[&Var], ours: Tensor, theirs: Tensor, tol: f32, case: &str) {
    let close = |a: &Tensor, b: &Tensor| max_diff(a, b) <= tol * max_abs(b).max(1.0);
    assert!(close(&ours, &theirs), "output, {case}");
    let probe = randn(theirs.dims(), 99, 0.0);
    let g1 = (ours * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (theirs * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
        assert!(close(a, b), "gradient of input {i}, {case}");
    }
}
