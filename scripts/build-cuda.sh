#!/usr/bin/env bash
# Build with the `cuda` feature on a machine without a system CUDA toolkit or GPU: nvcc, the headers
# and the libraries to link against come from PyPI wheels, and libcuda (the driver, absent here) is
# a stub generated from cudarc's driver bindings whose soname, libcuda.so.1, the target machine's
# driver satisfies at run time. Not run in CI (the kernels take long). Measured on the 2-core dev
# box: the diffusion crate 15m10s from cold; pixelfarm-train-shapes then 25 s more.
#
# Pick the CUDA version of the machine the binary will run on (`nvidia-smi` prints it): candle's
# kernels ship as PTX, which a driver older than the nvcc that wrote it refuses. Default 13.0
# (driver 580, the H100/H200 machines this was run on); cudarc 0.19 knows versions up to 13.4.
#
#   scripts/build-cuda.sh                               # the diffusion crate
#   PACKAGE=pixelfarm-worker scripts/build-cuda.sh      # the GPU worker binary
#   PACKAGE=pixelfarm-shapes scripts/build-cuda.sh      # pixelfarm-train-shapes (GPU training)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh           # A100 (default 90: H100/H200)
#   CUDNN=1 PACKAGE=... scripts/build-cuda.sh           # convolutions through cuDNN (feature cudnn)
#
# At run time the binary needs libcuda.so.1 (the driver), libcublas.so.13, libcurand.so.10 and
# libcudart.so.13 (and with CUDNN=1 libcudnn.so.9) on the loader path: a CUDA runtime image has them; PyTorch's wheels carry them
# too (scripts/train-shapes-gpu.sh finds those).
set -euo pipefail

VENV="${VENV:-/opt/cuda-venv}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"   # H100/H200 = 90; needed when no GPU is visible

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
CUDA_WHEELS="${CUDA_WHEELS:-13.0.*}"
"$VENV/bin/pip" install --quiet "nvidia-cuda-nvcc==$CUDA_WHEELS" "nvidia-cuda-runtime==$CUDA_WHEELS" \
  "nvidia-cuda-crt==$CUDA_WHEELS" "nvidia-nvvm==$CUDA_WHEELS" "nvidia-cuda-nvrtc==$CUDA_WHEELS" \
  "nvidia-cuda-cccl<${CUDA_CCCL_BELOW:-13.1}" \
  "nvidia-cublas==${CUBLAS_WHEELS:-13.0.*}" "nvidia-curand==${CURAND_WHEELS:-10.4.0.*}"
# (cccl: the libcu++ headers (nv/target) that cuda_fp16.h includes; cuBLAS / cuRAND wheels follow
# their own version numbers: 13.0.x and 10.4.0.x are CUDA 13.0's.)

NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")')"
if [ -x "$NV/cu13/bin/nvcc" ]; then
  # CUDA 13 wheels share one tree: nvidia/cu13/{bin,include,lib,nvvm}.
  export CUDA_ROOT="$NV/cu13"
  INCLUDES="-I$NV/cu13/include"
  LIBS=("$NV/cu13/lib")
else
  # CUDA 12 wheels: one tree per package; cuda_runtime / crt headers live beside nvcc's.
  export CUDA_ROOT="$NV/cuda_nvcc"
  INCLUDES="-I$NV/cuda_runtime/include -I$NV/cuda_crt/include -I$NV/cuda_nvcc/include"
  LIBS=("$NV"/*/lib)
fi
export CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} $INCLUDES"

# The link folder: unversioned names for the wheels' libraries, and the libcuda stub.
LINK="$VENV/link"
mkdir -p "$LINK"
for dir in "${LIBS[@]}"; do
  for lib in "$dir"/lib{cublas,cublasLt,curand,nvrtc,cudart}.so.[0-9]*; do
    [ -e "$lib" ] && ln -sf "$lib" "$LINK/$(basename "$lib" | sed 's/\.so\..*/.so/')"
  done
done
CUDARC_VERSION="$(awk '/^name = "cudarc"/{getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)"
cargo fetch --locked >/dev/null
CUDARC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$CUDARC_VERSION" | head -1)"
# stub LIB SONAME PREFIX BINDINGS: a library exporting every PREFIX* function of cudarc's bindings.
stub() {
  grep -o "^pub unsafe fn $3[A-Za-z0-9_]*(" "$4" | sed 's/pub unsafe fn //; s/(//' | sort -u \
    | awk '{print "void " $1 "(void) {}"}' > "$LINK/$1_stub.c"
  cc -shared -fPIC -o "$LINK/$1.so" -Wl,-soname,"$2" "$LINK/$1_stub.c"
}
stub libcuda libcuda.so.1 cu "$CUDARC/src/driver/sys/mod.rs"
FEATURES=cuda
if [ "${CUDNN:-0}" = 1 ]; then
  # cuDNN 9 (cudarc's cudnn-09021 bindings); PyTorch's wheels carry libcudnn.so.9.
  stub libcudnn libcudnn.so.9 cudnn "$CUDARC/src/cudnn/sys/mod.rs"
  FEATURES=cudnn
fi
export LIBRARY_PATH="$LINK:${LIBRARY_PATH:-}"
# cudarc reads the toolkit version from `nvcc --version`; if that fails, set CUDARC_CUDA_VERSION
# yourself (see cudarc's build script for the accepted format).

nvcc --version
cargo build --release -p "${PACKAGE:-pixelfarm-diffusion}" --features "$FEATURES" "$@"
