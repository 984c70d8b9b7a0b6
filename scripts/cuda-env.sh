# Sourced by the scripts that run CUDA builds (bench/gpu.sh, scripts/train-shapes-gpu.sh): puts
# CUDA's libraries on LD_LIBRARY_PATH, those installed as Python wheels (nvidia/cu13/lib,
# nvidia/*/lib, as PyTorch installs them) and the driver's libcuda, then checks that BIN (the
# argument) finds every library it links.
if command -v python3 >/dev/null; then
  for d in $(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
roots = list(nvidia.__path__)
dirs = {os.path.dirname(p) for r in roots for p in glob.glob(r + "/**/lib*.so*", recursive=True)}
print("\n".join(sorted(dirs)))
PY
  ); do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
  [ -e "$d/libcuda.so.1" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
if ldd "$1" | grep "not found"; then
  echo "missing libraries for $1 (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2
  exit 1
fi
