//! Which tensors the CPU kernels take, and their f32 values.
//!
//! A kernel runs on CPU tensors of f32 only; any other device or dtype goes to candle's own ops
//! (cuDNN / candle kernels on CUDA). The fused forward-only paths also need that no gradient is
//! tracked, since they have no backward.

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, bail};

/// Whether the fast CPU path applies to these tensors.
pub(crate) fn on_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Whether the fused forward-only path applies: the fast CPU path, and no gradient to track
/// through any of the tensors (inference).
pub(crate) fn cpu_inference(ts: &[&Tensor]) -> bool {
    on_cpu_f32(ts) && !ts.iter().any(|t| t.track_op())
}

/// The f32 values of a contiguous CPU tensor.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{what} must be a contiguous f32 tensor"),
    }
}

/// Calls `f` with the f32 values of `tensors` (`None` stays `None`), each made contiguous, for the
/// forward-only paths that work on several CPU tensors outside a candle custom op (which takes at
/// most three): the caller has checked [`cpu_inference`].
pub(crate) fn with_cpu_values<R>(
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
