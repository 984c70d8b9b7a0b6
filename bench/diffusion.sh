#!/usr/bin/env bash
# pixelfarm's candle engine beside diffusers (PyTorch, CPU) on the same tiny SD-architecture
# weights: same sizes, steps (20), sampler (Euler), guidance (7.5) and batch, PNG encoding
# included. Prints images/s of each, the ratio, and seconds per image by phase.
#
#   python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/requirements-diffusers.txt
#   PIXELFARM_BENCH_PYTHON=/tmp/bench-venv/bin/python bench/diffusion.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PIXELFARM_BENCH_PYTHON:-python3}
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
for cfg in "64 1 48" "64 4 48" "256 1 12" "256 4 12"; do
  read -r size batch images <<<"$cfg"
  args=(--size "$size" --batch "$batch" --images "$images" --steps 20)
  "$bin" run "$dir/tiny" "${args[@]}" >>"$results"
  "$PY" bench/diffusers_bench.py "$dir/tiny" "${args[@]}" 2>/dev/null | tail -1 >>"$results"
done
python3 bench/diffusion_table.py "$results"
echo
echo "ops (ms), candle then PyTorch:"
cargo build --release --locked -p pixelfarm-bench --bin bench-ops 2>/dev/null
target/release/bench-ops
"$PY" bench/ops_torch.py
