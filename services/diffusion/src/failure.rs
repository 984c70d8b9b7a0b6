//! Render errors classified by the variant candle raised, never by their text: a failing device
//! is worth another attempt, anything else fails the same way every time.

use candle_core::Error as Candle;
use pixelfarm_core::{Error, ErrorKind};

/// The kind of a candle error raised while rendering, through any backtrace, context or path
/// wrappers around it.
///
/// - `Transient`: candle's `Cuda` variant, device trouble — out of device memory, a driver,
///   cuBLAS or cuRAND failure, a lost device. A later attempt can succeed (the worker's batcher
///   also halves its batches after one, so the retry asks for less memory).
/// - `Permanent`: everything else (shapes, dtypes, a kernel's own checks): the same job on the
///   same model fails the same way on every attempt.
///
/// Running out of host memory is not an error candle returns: the allocator aborts the process,
/// and the job's lease expiring puts it back in the queue like any other lost worker.
pub(crate) fn kind(e: &Candle) -> ErrorKind {
    match e {
        Candle::WithBacktrace { inner, .. }
        | Candle::Context { inner, .. }
        | Candle::WithPath { inner, .. } => kind(inner),
        Candle::Cuda(_) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// A candle error raised while rendering, with its [`kind`].
pub(crate) fn render_error(e: Candle) -> Error {
    Error::with_source(kind(&e), "diffusion failed", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use std::backtrace::Backtrace;

    fn device_error(text: &str) -> Candle {
        Candle::Cuda(Box::new(std::io::Error::other(text.to_string())))
    }

    fn wrapped(e: Candle) -> Candle {
        Candle::WithBacktrace {
            inner: Box::new(e.context("in the unet").with_path("unet.safetensors")),
            backtrace: Box::new(Backtrace::disabled()),
        }
    }

    #[test]
    fn device_errors_are_transient_however_wrapped() {
        for e in [
            device_error("CUDA_ERROR_OUT_OF_MEMORY"),
            device_error("CUBLAS_STATUS_EXECUTION_FAILED"),
            wrapped(device_error("CUDA_ERROR_LAUNCH_FAILED")),
        ] {
            assert_eq!(render_error(e).kind(), ErrorKind::Transient);
        }
    }

    #[test]
    fn other_errors_are_permanent_whatever_their_text_says() {
        let cpu = Device::Cpu;
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &cpu).unwrap();
        let b = Tensor::zeros((4, 5), candle_core::DType::F32, &cpu).unwrap();
        let shape = a.matmul(&b).unwrap_err();
        for e in [
            shape,
            Candle::Msg("cuda out of memory while allocating".into()),
            wrapped(Candle::Msg("alloc failed".into())),
        ] {
            assert_eq!(render_error(e).kind(), ErrorKind::Permanent);
        }
    }
}
