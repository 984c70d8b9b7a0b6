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

source "$(dirname "$0")/cuda-env.sh" "$BIN"
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
