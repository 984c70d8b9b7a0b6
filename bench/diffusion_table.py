"""Tables of bench/diffusion.sh from its JSON lines: per configuration and engine, the median over
the runs whose steal (share of CPU time given to other machines meanwhile) was at most the limit."""

import json
import statistics
import sys

PHASES = ["text_encode", "denoise", "vae_decode", "png_encode"]
ENGINES = ["pixelfarm", "diffusers"]

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
max_steal = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0

runs = {}
for r in rows:
    runs.setdefault((r["size"], r["batch"], r["images"]), {}).setdefault(r["engine"], []).append(r)


def kept(rs):
    return [r for r in rs if r.get("steal", 0.0) <= max_steal]


def median(rs, key):
    return statistics.median(key(r) for r in rs) if rs else None


def cell(v, fmt):
    return "—" if v is None else format(v, fmt)


print(f"medians of the runs with at most {max_steal:.0%} steal:")
print()
print("| size | batch | images | pixelfarm img/s | diffusers img/s | ratio | runs kept (pixelfarm, diffusers) | steal of kept |")
print("|---|---|---|---|---|---|---|---|")
for (size, batch, n), by_engine in runs.items():
    good = {e: kept(by_engine.get(e, [])) for e in ENGINES}
    a, b = (median(good[e], lambda r: r["images_per_s"]) for e in ENGINES)
    ratio = a / b if a is not None and b is not None else None
    counts = ", ".join(f"{len(good[e])} of {len(by_engine.get(e, []))}" for e in ENGINES)
    steal = max((r.get("steal", 0.0) for e in ENGINES for r in good[e]), default=None)
    print(
        f"| {size}x{size} | {batch} | {n} | {cell(a, '.3f')} | {cell(b, '.3f')} "
        f"| {cell(ratio, '.2f')}x | {counts} | ≤ {cell(steal, '.1%')} |"
    )
print()
print("seconds per image by phase (medians of the kept runs):")
print("| engine | size | batch | " + " | ".join(PHASES) + " |")
print("|---|---|---|" + "---|" * len(PHASES))
for (size, batch, _), by_engine in runs.items():
    for e in ENGINES:
        good = kept(by_engine.get(e, []))
        cells = " | ".join(
            cell(median(good, lambda r: r["seconds_per_image"].get(k, 0.0)), ".4f") for k in PHASES
        )
        print(f"| {e} | {size} | {batch} | {cells} |")
