//! The promises the kernels make together: an image's result does not depend on the thread count,
//! and no kernel reads a scratch value it has not written.

use candle_core::{Tensor, Var};

use crate::attention::attention;
use crate::conv::conv2d;
use crate::group_norm::group_norm;
use crate::parallel::with_scratch;
use crate::testing::randn;

/// Output and gradients of `f(x, p)` as raw values, computed on a rayon pool of `threads`.
fn run_on(
    threads: usize,
    x: &Tensor,
    p: &Tensor,
    f: fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (x, p) = (Var::from_tensor(x).unwrap(), Var::from_tensor(p).unwrap());
        let y = f(&x, &p).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        [&y, grads.get(&x).unwrap(), grads.get(&p).unwrap()]
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    })
}

/// The kernels read no scratch value they have not written: with every pool thread's scratch
/// full of NaN first, each op that uses it (im2col, Winograd and direct convolutions,
/// attention) gives the bits it gives on a pool whose scratch is new.
#[test]
fn stale_scratch_changes_no_bit() {
    let ops = || -> Vec<Vec<f32>> {
        let conv = |size: usize, seed: u64| {
            let x = randn(&[2, 8, size, size], seed, 0.0);
            let w = randn(&[6, 8, 3, 3], seed + 1, 0.0);
            conv2d(&x, &w, 1, 1).unwrap()
        };
        let attention = {
            let (q, k) = (randn(&[2, 70, 32], 7, 0.0), randn(&[2, 90, 32], 8, 0.0));
            attention(&q, &k, &randn(&[2, 90, 48], 9, 0.0), 2, 0.25).unwrap()
        };
        // Below 32×32 im2col, from 32×32 direct, from 64×64 Winograd.
        [conv(12, 1), conv(40, 3), conv(64, 5), attention]
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    let pool = || {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    };
    let clean = pool().install(ops);
    let stale = pool();
    stale.broadcast(|_| with_scratch(1 << 20, |s| s.fill(f32::NAN)));
    let after_nan = stale.install(ops);
    assert!(clean.iter().flatten().all(|v| v.is_finite()));
    assert_eq!(clean, after_nan);
}

/// The thread count changes no bit of outputs or gradients — for a batch of 21 images (three
/// chunks of parameter gradients, the last one short) and for one image whose tiles (64 channels
/// of 48×48: several tiles) spread over the threads.
#[test]
fn outputs_and_gradients_are_the_same_bits_on_one_or_three_threads() {
    let conv = |x: &Tensor, w: &Tensor| conv2d(x, w, 1, 1);
    let pointwise = |x: &Tensor, w: &Tensor| conv2d(x, w, 1, 0);
    let norm = |x: &Tensor, g: &Tensor| group_norm(x, g, &g.ones_like()?, 4, 1e-5);
    for shape in [[21, 16, 10, 10], [1, 64, 48, 48]] {
        let x = randn(&shape, 1, 0.0);
        let c = shape[1];
        let w = randn(&[8, c, 3, 3], 2, 0.0);
        assert_eq!(run_on(1, &x, &w, conv), run_on(3, &x, &w, conv));
        let w = randn(&[8, c, 1, 1], 2, 0.0);
        assert_eq!(run_on(1, &x, &w, pointwise), run_on(3, &x, &w, pointwise));
        let gamma = randn(&[c], 3, 1.0);
        assert_eq!(run_on(1, &x, &gamma, norm), run_on(3, &x, &gamma, norm));
    }
}
