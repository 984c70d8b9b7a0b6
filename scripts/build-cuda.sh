#!/usr/bin/env bash
# Build pixelfarm-diffusion with the `cuda` feature on a machine without a system CUDA toolkit:
# nvcc and the headers come from PyPI wheels. Not run in CI (the kernels take a long time).
#
#   scripts/build-cuda.sh            # release build of the diffusion crate with CUDA
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
set -euo pipefail

VENV="${VENV:-/opt/cuda-venv}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # H100 = 90; needed when no GPU is visible

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt

NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")')"
export CUDA_ROOT="$NV/cuda_nvcc"
export CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
# cuda_runtime / crt headers live in sibling wheels: make nvcc and cudarc see them.
INCLUDES="-I$NV/cuda_runtime/include -I$NV/cuda_crt/include -I$NV/cuda_nvcc/include"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} $INCLUDES"
export LIBRARY_PATH="$NV/cuda_runtime/lib:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$NV/cuda_runtime/lib:${LD_LIBRARY_PATH:-}"
# cudarc reads the toolkit version from `nvcc --version`; if that fails, set CUDARC_CUDA_VERSION
# yourself (see cudarc's build script for the accepted format). Untested here: no CUDA build in CI.

nvcc --version
cargo build --release -p pixelfarm-diffusion --features cuda "$@"
