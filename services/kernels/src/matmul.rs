//! One gemm call on f32 slices with explicit strides, single-threaded: the kernels split their
//! work over the pool themselves (per image and tile), so every product is one task's.

/// `dst (m × n, row stride dst_rs) = [dst +] a (m × k) · b (k × n)`, strides in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_into(
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
pub(crate) unsafe fn matmul_to_ptr(
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
