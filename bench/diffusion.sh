#!/usr/bin/env bash
# pixelfarm's candle engine beside diffusers (PyTorch, CPU) on the same tiny SD-architecture
# weights: same sizes, steps (20), sampler (Euler), guidance (7.5) and batch, PNG encoding
# included. Prints images/s of each, the ratio, and seconds per image by phase.
#
#   python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/requirements-diffusers.txt
#   PIXELFARM_BENCH_PYTHON=/tmp/bench-venv/bin/python bench/diffusion.sh
#
# Each configuration runs ROUNDS times (default 3), the two engines alternating (pixelfarm first
# in odd rounds, diffusers first in even ones), so a slow spell of the host hits both. Every run
# records the share of CPU time the hypervisor gave to other machines meanwhile (steal, from
# /proc/stat); runs above MAX_STEAL (default 0.05) are left out of the medians, and the table
# says how many were kept. CONFIGS="size:batch:images ..." picks the configurations.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PIXELFARM_BENCH_PYTHON:-python3}
ROUNDS=${ROUNDS:-3}
MAX_STEAL=${MAX_STEAL:-0.05}
CONFIGS=${CONFIGS:-"64:1:48 64:4:48 256:1:12 256:4:12"}
"$PY" -c "import torch, diffusers, transformers" 2>/dev/null || {
  echo "error: $PY lacks torch/diffusers/transformers; see the comment at the top of $0" >&2
  exit 1
}
cargo build --release --locked -p pixelfarm-bench --bin bench-diffusion
bin=target/release/bench-diffusion
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bin" write "$dir/tiny" >/dev/null
results="$dir/results.jsonl"

# "steal total" CPU ticks since boot (columns user … steal of the `cpu` line; guest time is
# already inside user).
ticks() { awk '/^cpu /{t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }

# Runs one engine's bench and appends its JSON line with `steal` and `round` added.
measure() {
  local round=$1
  shift
  local s0 t0 s1 t1 line
  read -r s0 t0 < <(ticks)
  # The engines' warnings stay out of the table; a failing run shows them and stops the script.
  if ! line=$("$@" 2>"$dir/stderr" | tail -1); then
    cat "$dir/stderr" >&2
    echo "error: $* failed" >&2
    exit 1
  fi
  read -r s1 t1 < <(ticks)
  python3 -c 'import json, sys
r = json.loads(sys.argv[1])
r["round"], r["steal"] = int(sys.argv[2]), float(sys.argv[3])
print(json.dumps(r))' "$line" "$round" "$(awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" 'BEGIN { print (t > 0 ? s / t : 0) }')" >>"$results"
}

for cfg in $CONFIGS; do
  IFS=: read -r size batch images <<<"$cfg"
  args=(--size "$size" --batch "$batch" --images "$images" --steps 20)
  ours=("$bin" run "$dir/tiny" "${args[@]}")
  theirs=("$PY" bench/diffusers_bench.py "$dir/tiny" "${args[@]}")
  for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then
      measure "$round" "${ours[@]}"
      measure "$round" "${theirs[@]}"
    else
      measure "$round" "${theirs[@]}"
      measure "$round" "${ours[@]}"
    fi
  done
done
python3 bench/diffusion_table.py "$results" "$MAX_STEAL"
echo
echo "ops (ms), candle then PyTorch:"
cargo build --release --locked -p pixelfarm-bench --bin bench-ops 2>/dev/null
target/release/bench-ops
"$PY" bench/ops_torch.py
