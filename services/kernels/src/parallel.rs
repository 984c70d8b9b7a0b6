//! How the kernels share work over rayon's pool: output buffers that tasks fill block by block,
//! each pool thread's scratch buffer, and parameter gradients summed over the batch in a fixed
//! order.

use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Images per partial parameter gradient (fixed, so the summation order never depends on threads).
const GRAD_CHUNK: usize = 8;

/// An output buffer shared by parallel tasks that each write their own block of it.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);
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
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

/// A buffer of `len` values that parallel tasks fill through an [`OutPtr`], each its own disjoint
/// block, without zeroing it first. `vec![0; len]` zeroes the whole buffer on the calling thread
/// before the tasks start, a serial memset of memory every task then overwrites, while the
/// pool's other threads wait.
///
/// # Safety
/// When `fill` returns, every one of the `len` values must have been written through the pointer,
/// and none read before it was written.
#[allow(unsafe_code)]
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(OutPtr)) -> Vec<f32> {
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
pub(crate) fn par_blocks(
    len: usize,
    block: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
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
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
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
pub(crate) fn sum_over_images(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block gets its index and its length (the last one short), and together they are
    /// the whole buffer; an empty buffer runs no block.
    #[test]
    fn par_blocks_hands_out_every_block_once() {
        let y = par_blocks(10, 4, |i, values| {
            assert_eq!(values.len(), if i == 2 { 2 } else { 4 });
            assert!(values.iter().all(|&v| v == 0.0));
            for (j, v) in values.iter_mut().enumerate() {
                *v = (i * 4 + j) as f32;
            }
        });
        assert_eq!(y, (0..10).map(|v| v as f32).collect::<Vec<_>>());
        assert!(par_blocks(0, 4, |_, _| panic!("no block")).is_empty());
    }
}
