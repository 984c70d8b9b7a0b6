#!/usr/bin/env bash
# Train the shapes model on a CUDA GPU inside a wall-clock budget: a calibration run measures the
# seconds per step, the real run plans its step count (and learning-rate decay) to fit the budget,
# then the EMA weights are exported as a model folder. The binary is a `cuda` build of
# pixelfarm-train-shapes (scripts/build-cuda.sh with PACKAGE=pixelfarm-shapes); CUDA's libraries may
# come from PyPI wheels (as PyTorch installs them), which this script finds.
#
#   scripts/train-shapes-gpu.sh BIN OUT_DIR [BUDGET_SECONDS] [extra train flags...]
#
# OUT_DIR gets run/ (checkpoint, resumable), shapes/ (the model folder), train.log, calibrate.log,
# eval-cuda.log and eval-cuda.png (the gate prompts rendered by the engine on the GPU).
set -euo pipefail

BIN="$1"
OUT="$2"
BUDGET="${3:-360}"
shift $(( $# < 3 ? $# : 3 ))
BATCH="${BATCH:-256}"
LR="${LR:-1.5e-3}"
SEED="${SEED:-5}"
DATA_THREADS="${DATA_THREADS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}"

# CUDA libraries installed as Python wheels (nvidia/cu13/lib, nvidia/*/lib) and the driver's libcuda.
if command -v python3 >/dev/null; then
  for d in $(python3 - <<'EOF' 2>/dev/null
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
roots = list(nvidia.__path__)
dirs = {os.path.dirname(p) for r in roots for p in glob.glob(r + "/**/lib*.so*", recursive=True)}
print("\n".join(sorted(dirs)))
EOF
  ); do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
  [ -e "$d/libcuda.so.1" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH
if ldd "$BIN" | grep "not found"; then
  echo "missing libraries for $BIN (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

mkdir -p "$OUT"
COMMON=(--device cuda --batch "$BATCH" --lr "$LR" --seed "$SEED" --data-threads "$DATA_THREADS" "$@")

# Calibration: 100 steps in a scratch folder; the last 75 of them give the pace (the first ones
# load CUDA modules).
rm -rf "$OUT/calibrate"
"$BIN" train --out "$OUT/calibrate" --steps 100 --warmup 10 --checkpoint-every 1000 "${COMMON[@]}" \
  | tee "$OUT/calibrate.log"
t25=$(awk '/^step 25 /{for(i=1;i<=NF;i++) if($i=="total") print $(i-2)}' "$OUT/calibrate.log")
t100=$(awk '/^step 100 /{for(i=1;i<=NF;i++) if($i=="total") print $(i-2)}' "$OUT/calibrate.log")
rm -rf "$OUT/calibrate"
pace=$(python3 -c "print(max(($t100 - $t25) / 75, 1e-3))")
STEPS=$(python3 -c "print(int(0.93 * $BUDGET / $pace) // 100 * 100)")
DECAY=$(( STEPS * 6 / 10 ))
WARMUP=$(( STEPS / 50 ))
echo "pace ${pace} s/step -> ${STEPS} steps in ${BUDGET} s (cosine from ${DECAY}, warm-up ${WARMUP})"

"$BIN" train --out "$OUT/run" --steps "$STEPS" --decay-start "$DECAY" --warmup "$WARMUP" \
  --lr-min 1e-5 --checkpoint-every 500 --minutes "$(python3 -c "print($BUDGET / 60 + 0.5)")" \
  "${COMMON[@]}" | tee "$OUT/train.log"
"$BIN" export --out "$OUT/run" --model-dir "$OUT/shapes"
# The trained model through the production engine on the GPU (f16): the gate prompts, seeds 1-3.
if ! "$BIN" eval --models "$OUT" --device cuda --seeds 3 --sheet "$OUT/eval-cuda.png" \
  | tee "$OUT/eval-cuda.log"; then
  echo "eval on cuda failed (the model folder is written)" >&2
fi
