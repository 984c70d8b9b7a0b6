#!/usr/bin/env bash
# pixelfarm's CUDA engine beside diffusers (fp16, PyTorch's SDPA attention) on the same GPU and the
# same full-size random weights (SD 1.5 at 512², SDXL at 1024², batch 1 and 8, 25 Euler steps,
# guidance 7.5): images/s of each and the ratio, peak GPU memory, seconds per image by phase, and
# one image per family rendered by both from pixelfarm's initial noise, compared pixel by pixel.
# Written to fit one device call of under ten minutes; results go to $OUT (or ./gpu-results):
# results.jsonl (one line per run or failure), parity.jsonl, table.md, log.txt, env.txt.
#
# Builds of the engine to compare, each `.gpu/bench-diffusion-NAME` (or that name + `.xz`, which
# is unpacked first: the stripped binary is 56 MB, 7 MB packed, and the device call carries 64 MiB):
#   base    PACKAGE=pixelfarm-bench scripts/build-cuda.sh --no-default-features --bin bench-diffusion
#   others  the same build of a change, or with CUDNN=1 (convolutions through cuDNN)
# `base` renders every configuration in CONFIGS and the parity images; the others (VARIANTS)
# render VARIANT_CONFIGS after that, each in the same run as the base figures it is measured
# against. diffusers and importlib_metadata travel as wheels in .whl (docs/benchmarks.md, "GPU runs").
#
#   bench/gpu.sh                                        # on the GPU machine
#   DEVICE=cpu STEPS=2 CONFIGS="sd15:64:1:1 sdxl:64:2:2" PARITY="sd15:64 sdxl:64" VARIANTS= \
#     PIXELFARM_BENCH_PYTHON=/tmp/bench-venv/bin/python bench/gpu.sh   # dry run on a CPU
#
# CONFIGS and VARIANT_CONFIGS are "family:size:batch:images ...", PARITY "family:size ...". Each
# engine run is stopped after LIMIT seconds; no run starts after DEADLINE seconds from the start
# (the rest are listed as skipped), so a slow engine costs its own figures, not the others'.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-./gpu-results}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-25}
CONFIGS=${CONFIGS:-"sd15:512:1:4 sd15:512:8:16 sdxl:1024:1:2 sdxl:1024:8:8"}
PARITY=${PARITY:-"sd15:512 sdxl:1024"}
VARIANTS=${VARIANTS-cudnn}
VARIANT_CONFIGS=${VARIANT_CONFIGS:-"sd15:512:8:16 sdxl:1024:1:2"}
WEIGHTS=${WEIGHTS:-/tmp/pixelfarm-weights}
LIMIT=${LIMIT:-180}
DEADLINE=${DEADLINE:-470}
PY=${PIXELFARM_BENCH_PYTHON:-python3}
START=$SECONDS
mkdir -p "$RESULTS" "$WEIGHTS"
log="$RESULTS/log.txt"
results="$RESULTS/results.jsonl"
parity="$RESULTS/parity.jsonl"
: >"$results"
: >"$parity"
: >"$log"
say() { echo "[$((SECONDS - START))s] $*" | tee -a "$log"; }

# diffusers (and importlib_metadata) travel as wheels: the GPU machine has torch, no diffusers.
if ! "$PY" -c "import diffusers" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch, diffusers, transformers" || { say "error: $PY lacks torch/diffusers/transformers"; exit 1; }
# The engine builds, unpacked where packed.
bin_of() {
  local f=.gpu/bench-diffusion-$1
  if [ ! -x "$f" ] && [ -e "$f.xz" ]; then
    mkdir -p "$WEIGHTS/bin"
    "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$f.xz" "$WEIGHTS/bin/$1" && chmod +x "$WEIGHTS/bin/$1"
    f=$WEIGHTS/bin/$1
  fi
  realpath "$f"
}
BIN=$(bin_of base)
[ -x "$BIN" ] || { say "error: no base build (.gpu/bench-diffusion-base[.xz])"; exit 1; }
[ "$DEVICE" = cuda ] && source scripts/cuda-env.sh "$BIN"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null
  "$PY" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  echo "nproc $(nproc)"
} >"$RESULTS/env.txt" 2>&1
cat "$RESULTS/env.txt"

# Peak GPU memory in use while "$@" runs (MiB, the whole device as nvidia-smi sees it; 0 on a CPU).
peak_of() {
  local mem="$WEIGHTS/mem.log" poller=""
  : >"$mem"
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$mem" 2>/dev/null &
    poller=$!
  fi
  timeout "$LIMIT" "$@"
  local rc=$?
  [ -n "$poller" ] && kill "$poller" 2>/dev/null && wait "$poller" 2>/dev/null
  PEAK=$(sort -n "$mem" | tail -1)
  return $rc
}

# One engine run, labelled ENGINE in the results: its JSON line gets the peak memory; a failure is
# recorded with its stderr's end.
measure() {
  local engine=$1 what="$1 $2"
  shift 2
  if ((SECONDS - START > DEADLINE)); then
    say "skipped (deadline): $what"
    echo "{\"run\": \"$what\", \"skipped\": \"deadline\"}" >>"$results"
    return
  fi
  say "start $what"
  local out="$WEIGHTS/out.json" err="$WEIGHTS/err.txt"
  if peak_of "$@" >"$out" 2>"$err"; then
    "$PY" -c 'import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
r["peak_gpu_mib"] = int(sys.argv[2] or 0)
r["engine"] = sys.argv[3]
print(json.dumps(r))' "$out" "${PEAK:-0}" "$engine" | tee -a "$results"
  else
    local rc=$?
    say "FAILED ($rc) $what"
    tail -20 "$err" | tee -a "$log"
    "$PY" -c 'import json, sys; print(json.dumps({"run": sys.argv[1], "exit": int(sys.argv[2]), "stderr": sys.argv[3]}))' \
      "$what" "$rc" "$(tail -c 2000 "$err")" >>"$results"
  fi
  cat "$err" >>"$log"
}

# The weights: written here by pixelfarm's deterministic writer (the same files on every machine).
families=$(for c in $CONFIGS $PARITY; do echo "${c%%:*}"; done | sort -u)
for f in $families; do
  if [ ! -s "$WEIGHTS/$f/registry-entry.yaml" ]; then
    say "writing $f"
    "$BIN" write "$WEIGHTS/$f" --family "$f" >>"$log" 2>&1 || { say "error: cannot write $f"; exit 1; }
  fi
  du -sh "$WEIGHTS/$f" | tee -a "$log"
done

# One configuration ("family:size:batch:images") with pixelfarm build BUILD labelled ENGINE, and
# with diffusers unless NO_DIFFUSERS is set; the two alternate which goes first (by $i), so a
# warming or throttling GPU hits both.
i=0
config() {
  local engine=$1 build=$2 cfg=$3 family size batch images
  IFS=: read -r family size batch images <<<"$cfg"
  local args=(--size "$size" --batch "$batch" --images "$images" --steps "$STEPS" --warmup-steps 2
    --device "$DEVICE")
  local ours=("$build" run "$WEIGHTS/$family" "${args[@]}")
  local theirs=("$PY" bench/diffusers_bench.py "$WEIGHTS/$family" --family "$family" "${args[@]}")
  if [ -n "${NO_DIFFUSERS:-}" ]; then
    measure "$engine" "$cfg" "${ours[@]}"
  elif ((i++ % 2)); then
    measure diffusers "$cfg" "${theirs[@]}"
    measure "$engine" "$cfg" "${ours[@]}"
  else
    measure "$engine" "$cfg" "${ours[@]}"
    measure diffusers "$cfg" "${theirs[@]}"
  fi
}
for cfg in $CONFIGS; do
  config pixelfarm "$BIN" "$cfg"
done

for p in $PARITY; do
  IFS=: read -r family size <<<"$p"
  if ((SECONDS - START > DEADLINE)); then
    say "skipped (deadline): parity $p"
    continue
  fi
  say "parity $p"
  common=(--size "$size" --steps "$STEPS" --guidance 7.5 --device "$DEVICE")
  if timeout "$LIMIT" "$BIN" parity "$WEIGHTS/$family" "${common[@]}" >"$WEIGHTS/ours.json" 2>>"$log" &&
    timeout "$LIMIT" "$PY" bench/diffusers_bench.py "$WEIGHTS/$family" --family "$family" "${common[@]}" \
      --parity "$WEIGHTS/ours.json" 2>>"$log" | tee -a "$parity"; then
    :
  else
    say "FAILED parity $p"
  fi
done

# The variants, each beside the base figures of the same run (no diffusers: it ran above).
for v in $VARIANTS; do
  build=$(bin_of "$v")
  if [ ! -x "$build" ] || { [ "$DEVICE" = cuda ] && ldd "$build" | grep "not found" | tee -a "$log"; }; then
    say "skipped variant $v: no runnable .gpu/bench-diffusion-$v"
    continue
  fi
  for cfg in $VARIANT_CONFIGS; do
    NO_DIFFUSERS=1 config "pixelfarm+$v" "$build" "$cfg"
  done
done

{
  echo "# bench/gpu.sh, $(date -u +%F): $(sed -n 3,4p "$RESULTS/env.txt" | tr '\n' ' ')"
  echo
  "$PY" bench/diffusion_table.py "$results"
  echo
  echo "parity (pixelfarm's image against diffusers' from the same initial noise, 8-bit values):"
  echo
  echo "| family | size | device | dtype | max abs diff | mean abs diff | share within 2 | control: image shifted 1 px |"
  echo "|---|---|---|---|---|---|---|---|"
  "$PY" -c 'import json, sys
for line in open(sys.argv[1]):
    p = json.loads(line)
    cells = [p["family"], p["size"], p["device"], p["dtype"], p["max_abs_diff"],
             format(p["mean_abs_diff"], ".2f"), format(p["pixels_within_2"], ".1%"),
             format(p["control_mean_abs_diff_of_a_shifted_image"], ".2f")]
    print("| " + " | ".join(map(str, cells)) + " |")' "$parity"
  failed=$(grep -c '"exit"\|"skipped"' "$results")
  echo
  echo "runs failed or skipped: $failed (results.jsonl has their stderr)"
} >"$RESULTS/table.md"
say "done"
cat "$RESULTS/table.md"
