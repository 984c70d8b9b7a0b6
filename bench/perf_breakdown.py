"""Where a pixelfarm render's CPU time goes, by kernel, from a `perf record --call-graph dwarf`
profile: each sample is put in the first category whose pattern appears in its stack (so samples
on rayon worker threads count for the op that spawned them); idle pool threads are their own line.

    perf record --call-graph dwarf,32768 -F 250 -o /tmp/render.perf \\
        target/release/bench-diffusion run DIR --size 256 --batch 1 --images 1 --steps 10
    python3 bench/perf_breakdown.py /tmp/render.perf
"""

import collections
import subprocess
import sys

CATEGORIES = [
    ("attention (ops)", "ops::attention"),
    # Winograd and direct before im2col: their forwards are called from `ops::conv`'s.
    ("Winograd convolution (ops)", "ops::winograd"),
    ("direct convolution (ops)", "ops::direct"),
    ("im2col convolution (ops)", "ops::conv"),
    ("linear layers (ops)", "ops::linear"),
    ("group norm (ops)", "ops::group_norm"),
    ("geglu (ops)", "ops::geglu"),
    ("layer norm (candle)", "layer_norm"),
    ("matmul (candle linears)", "matmul"),
    ("upsample (candle)", "upsample"),
    ("concat (candle)", "Tensor::cat"),
    ("strided copies (candle)", "copy_strided"),
    ("binary ops: adds, products (candle)", "binary_map"),
    ("unary ops (candle)", "unary_map"),
    ("model load, sha256", "LoadedModel::load"),
]


def samples(path):
    """Each sample's stack as a list of frame strings, innermost first."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,tid,ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    stack = None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if stack is not None:
                yield stack
            stack = []
        elif stack is not None:
            stack.append(line.strip())
    if stack is not None:
        yield stack


def main():
    counts, total = collections.Counter(), 0
    for stack in samples(sys.argv[1]):
        total += 1
        joined = " | ".join(stack)
        for name, pattern in CATEGORIES:
            if pattern in joined:
                counts[name] += 1
                break
        else:
            # rayon's workers and candle's own pool (`candle_core::utils`, whose spin loop often
            # unwinds only to the thread's entry) waiting for work.
            pool = "rayon" in joined or "candle_core::utils" in joined or (
                stack and "__rust_begin_short_backtrace" in stack[0]
            )
            idle = pool and not any("pixelfarm" in f for f in stack)
            counts["threads without work (rayon's and candle's pools)" if idle else "other"] += 1
    for name, n in counts.most_common():
        print(f"{100 * n / total:6.1f} %  {name}")
    print(f"({total} samples)")


if __name__ == "__main__":
    main()
