#!/usr/bin/env bash
# Build with the `cuda` feature on a machine without a system CUDA toolkit: nvcc and the headers
# come from PyPI wheels (CUDA 13.4: the newest cudarc 0.19 knows). Not run in CI (the kernels take
# long). Measured on the 2-core dev box: the diffusion crate 17m36s from cold, sharing the cores.
# Linking a binary also needs libcuda (stub), cuBLAS, cuRAND and NVRTC, which these wheels do not
# carry: on a machine with a full CUDA toolkit (the worker image's devel base) they are there.
#
#   scripts/build-cuda.sh                               # the diffusion crate
#   PACKAGE=pixelfarm-worker scripts/build-cuda.sh      # the GPU worker binary
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh           # A100 (default 90: H100)
set -euo pipefail

VENV="${VENV:-/opt/cuda-venv}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # H100 = 90; needed when no GPU is visible

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# cudarc (candle's CUDA binding) knows toolkits up to 13.4: pin the wheels to a version it knows.
CUDA_WHEELS="${CUDA_WHEELS:-13.4.*}"
"$VENV/bin/pip" install --quiet "nvidia-cuda-nvcc==$CUDA_WHEELS" "nvidia-cuda-runtime==$CUDA_WHEELS" \
  "nvidia-cuda-crt==$CUDA_WHEELS" "nvidia-nvvm==$CUDA_WHEELS" \
  "nvidia-cuda-cccl<${CUDA_CCCL_BELOW:-13.5}"   # libcu++ headers (nv/target) that cuda_fp16.h includes

NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")')"
if [ -x "$NV/cu13/bin/nvcc" ]; then
  # CUDA 13 wheels share one tree: nvidia/cu13/{bin,include,lib,nvvm}.
  export CUDA_ROOT="$NV/cu13"
  INCLUDES="-I$NV/cu13/include"
  LIBS="$NV/cu13/lib"
else
  # CUDA 12 wheels: one tree per package; cuda_runtime / crt headers live beside nvcc's.
  export CUDA_ROOT="$NV/cuda_nvcc"
  INCLUDES="-I$NV/cuda_runtime/include -I$NV/cuda_crt/include -I$NV/cuda_nvcc/include"
  LIBS="$NV/cuda_runtime/lib"
fi
export CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} $INCLUDES"
export LIBRARY_PATH="$LIBS:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}"
# cudarc reads the toolkit version from `nvcc --version`; if that fails, set CUDARC_CUDA_VERSION
# yourself (see cudarc's build script for the accepted format).

nvcc --version
cargo build --release -p "${PACKAGE:-pixelfarm-diffusion}" --features cuda "$@"
