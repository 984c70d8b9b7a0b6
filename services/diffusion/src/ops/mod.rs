//! CPU kernels for the layers that dominate the networks pixelfarm trains and renders on a CPU:
//! convolution (bias fused in) and group norm (with their backward); for inference, group norm
//! fused with SiLU, attention, and GEGLU's gate.
//!
//! candle 0.11's CPU versions are slow — conv2d is im2col with NCHW copies around one large
//! gemm and its input gradient a scalar `conv_transpose2d` loop, group norm a chain of ~10
//! separate tensor ops each way, attention three full-size tensor ops per head, `exp` and `erf`
//! scalar C-library calls. These ops do each pass in one go (gemm for the products; bias, SiLU and
//! softmax fused in; `exp` / `erf` vectorised, with AVX2 where the CPU has it: `math`) and keep
//! two properties the engine promises:
//!
//! - work is split over images, tiles of output rows, groups of channels and blocks of queries,
//!   never inside a sum, so an image's result is the same whatever batch it rides in and whatever
//!   the thread count;
//! - sums over the batch (parameter gradients) are taken per fixed chunk of images and the chunks
//!   added in order, so gradients are reproducible bit for bit.
//!
//! Other devices and dtypes fall back to candle's own ops (cuDNN / candle kernels on CUDA).

mod attention;
mod broadcast;
mod conv;
mod direct;
mod geglu;
mod group_norm;
mod linear;
mod math;
mod transpose;
mod upsample;
mod winograd;

pub use attention::attention;
pub use conv::{Conv2d, conv2d, conv2d_im2col};
pub use group_norm::{GroupNorm, group_norm, group_norm_silu};
pub use linear::Linear;
pub use transpose::transpose_last;
pub use upsample::upsample_nearest2d;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, bail};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Images per partial parameter gradient (fixed, so the summation order never depends on threads).
const GRAD_CHUNK: usize = 8;

/// Whether the fast CPU path applies to these tensors.
fn on_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Whether the fused forward-only path applies: the fast CPU path, and no gradient to track
/// through any of the tensors (inference).
fn cpu_inference(ts: &[&Tensor]) -> bool {
    on_cpu_f32(ts) && !ts.iter().any(|t| t.track_op())
}

/// The f32 values of a contiguous CPU tensor.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{what} must be a contiguous f32 tensor"),
    }
}

/// Calls `f` with the f32 values of `tensors` (`None` stays `None`), each made contiguous, for the
/// forward-only paths that work on several CPU tensors outside a candle custom op (which takes at
/// most three): the caller has checked [`cpu_inference`].
fn with_cpu_values<R>(
    tensors: &[Option<&Tensor>],
    f: impl FnOnce(&[Option<&[f32]>]) -> R,
) -> Result<R> {
    let owned = tensors
        .iter()
        .map(|t| t.map(Tensor::contiguous).transpose())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = owned
        .iter()
        .map(|t| t.as_ref().map(Tensor::storage_and_layout))
        .collect();
    let values = guards
        .iter()
        .map(|g| {
            g.as_ref()
                .map(|(s, l)| match &**s {
                    Storage::Cpu(c) => f32_slice(c, l, "input"),
                    _ => bail!("input must be on the CPU"),
                })
                .transpose()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(f(&values))
}

/// An output buffer shared by parallel tasks that each write their own block of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each user dereferences the pointer only at the elements of one task's own block.
#[allow(unsafe_code)]
unsafe impl Send for OutPtr {}
#[allow(unsafe_code)]
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `offset` places in.
    ///
    /// # Safety
    /// As `pointer::add`: `offset` must stay inside the buffer.
    #[allow(unsafe_code)]
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// A buffer of `len` values that parallel tasks fill through an [`OutPtr`], each its own disjoint
/// block, without zeroing it first. `vec![0; len]` zeroes the whole buffer on the calling thread
/// before the tasks start, a serial memset of memory every task then overwrites, while the
/// pool's other threads wait (6.5 % of a 256×256 render's samples).
///
/// # Safety
/// When `fill` returns, every one of the `len` values must have been written through the pointer,
/// and none read before it was written.
#[allow(unsafe_code)]
unsafe fn filled(len: usize, fill: impl FnOnce(OutPtr)) -> Vec<f32> {
    let mut y = Vec::<f32>::with_capacity(len);
    fill(OutPtr(y.as_mut_ptr()));
    // SAFETY: the capacity is at least `len`, and `fill` has written all `len` values (the
    // caller's promise).
    unsafe { y.set_len(len) };
    y
}

/// `len` values computed in parallel, block `i` (`block` values, the last one shorter) by
/// `fill(i, values)`. Each task zeroes its own block just before (in parallel, and in cache when
/// `fill` writes it) instead of [`filled`]'s unsafe promise that every value gets written.
fn par_blocks(len: usize, block: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut y = Vec::<f32>::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .for_each(|(i, values)| {
            values.fill(MaybeUninit::new(0.0));
            // SAFETY: every value of the block was initialised just above, and `MaybeUninit<f32>`
            // has the layout of `f32`.
            #[allow(unsafe_code)]
            let values = unsafe { &mut *(std::ptr::from_mut(values) as *mut [f32]) };
            fill(i, values);
        });
    // SAFETY: the blocks together are the first `len` values of the capacity, all initialised.
    #[allow(unsafe_code)]
    unsafe {
        y.set_len(len);
    }
    y
}

thread_local! {
    /// Each pool thread's working buffer for the kernels' tasks (im2col columns, Winograd
    /// transforms, attention blocks, padded images), kept between tasks and calls so it is
    /// neither allocated nor zeroed again: every task writes each value it reads first.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the first `len` values of this thread's scratch buffer (grown when shorter),
/// holding whatever an earlier task left there. `f` must not start parallel work: a task this
/// thread picked up meanwhile would find the buffer taken (a panic, not a data race).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|s| {
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// A parameter gradient summed over the batch reproducibly: `a` and `b` hold per-image blocks of
/// `a_len` and `b_len` values; `partial` turns a fixed chunk of [`GRAD_CHUNK`] images (their blocks
/// of `a` and of `b`) into `len` values, chunks run in parallel, and their results are added in
/// chunk order.
fn sum_over_images(
    (a, a_len): (&[f32], usize),
    (b, b_len): (&[f32], usize),
    len: usize,
    partial: impl Fn(&[f32], &[f32]) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = a
        .par_chunks(GRAD_CHUNK * a_len)
        .zip(b.par_chunks(GRAD_CHUNK * b_len))
        .map(|(a, b)| partial(a, b))
        .collect();
    let mut total = vec![0f32; len];
    for part in partials {
        total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
    }
    total
}

/// `dst (m × n, row stride dst_rs) = [dst +] a (m × k) · b (k × n)`, strides in elements.
#[allow(clippy::too_many_arguments)]
fn matmul_into(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    assert!(m > 0 && n > 0, "gemm: empty operand");
    assert!(dst.len() > (m - 1) * dst_rs + n - 1, "gemm: dst too short");
    // SAFETY: the assert above keeps every element the product writes inside `dst`, which is
    // borrowed mutably, so no one else reads or writes it.
    #[allow(unsafe_code)]
    unsafe {
        matmul_to_ptr(
            (m, n, k),
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            a,
            a_strides,
            b,
            b_strides,
        );
    }
}

/// [`matmul_into`] into a block of a buffer that other threads write other blocks of at the same
/// time (so no `&mut` slice of the whole buffer may exist).
///
/// # Safety
/// `dst` must be valid for writes at every `r · dst_rs + c` (`r < m`, `c < n`), and no one else
/// may read or write those elements during the call.
#[allow(clippy::too_many_arguments, unsafe_code)]
unsafe fn matmul_to_ptr(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(m > 0 && n > 0 && k > 0, "gemm: empty operand");
    assert!(a.len() > last(m, a_rs, k, a_cs), "gemm: lhs too short");
    assert!(b.len() > last(k, b_rs, n, b_cs), "gemm: rhs too short");
    // SAFETY: the asserts above keep every index the strides reach inside the two operands; the
    // caller vouches for `dst`, which therefore overlaps neither (they are only read).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            ::gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// Standard normal values from the job RNG, plus `mean`.
    pub(super) fn randn(shape: &[usize], seed: u64, mean: f32) -> Tensor {
        let v = crate::rng::JobRng::new(seed).normals(shape.iter().product());
        let v: Vec<f32> = v.into_iter().map(|v| v + mean).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs(t: &Tensor) -> f32 {
        let t = t.abs().unwrap().flatten_all().unwrap();
        t.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap())
    }

    /// Asserts that `ours` and `theirs`, the same function of `vars` computed two ways, agree within
    /// `tol` of the larger of 1 and the reference's largest magnitude, in value and in the gradient of
    /// a random projection with respect to every var.
    pub(super) fn assert_same(vars: &[&Var], ours: Tensor, theirs: Tensor, tol: f32, case: &str) {
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

    /// Every block gets its index and its length (the last one short), and together they are
    /// the whole buffer; an empty buffer runs no block.
    #[test]
    fn par_blocks_hands_out_every_block_once() {
        let y = super::par_blocks(10, 4, |i, values| {
            assert_eq!(values.len(), if i == 2 { 2 } else { 4 });
            assert!(values.iter().all(|&v| v == 0.0));
            for (j, v) in values.iter_mut().enumerate() {
                *v = (i * 4 + j) as f32;
            }
        });
        assert_eq!(y, (0..10).map(|v| v as f32).collect::<Vec<_>>());
        assert!(super::par_blocks(0, 4, |_, _| panic!("no block")).is_empty());
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
                super::conv2d(&x, &w, 1, 1).unwrap()
            };
            let attention = {
                let (q, k) = (randn(&[2, 70, 32], 7, 0.0), randn(&[2, 90, 32], 8, 0.0));
                super::attention(&q, &k, &randn(&[2, 90, 48], 9, 0.0), 2, 0.25).unwrap()
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
        stale.broadcast(|_| super::with_scratch(1 << 20, |s| s.fill(f32::NAN)));
        let after_nan = stale.install(ops);
        assert!(clean.iter().flatten().all(|v| v.is_finite()));
        assert_eq!(clean, after_nan);
    }

    /// The promise of this module: the thread count changes no bit of outputs or gradients —
    /// for a batch of 21 images (three chunks of parameter gradients, the last one short) and for
    /// one image whose tiles (64 channels of 48×48: several tiles) spread over the threads.
    #[test]
    fn outputs_and_gradients_are_the_same_bits_on_one_or_three_threads() {
        let conv = |x: &Tensor, w: &Tensor| super::conv2d(x, w, 1, 1);
        let pointwise = |x: &Tensor, w: &Tensor| super::conv2d(x, w, 1, 0);
        let norm = |x: &Tensor, g: &Tensor| super::group_norm(x, g, &g.ones_like()?, 4, 1e-5);
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
}
