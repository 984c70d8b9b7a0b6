"""Tables of bench/diffusion.sh and bench/gpu.sh from their JSON lines: per configuration (family,
size, batch, images) and engine (pixelfarm, its variants `pixelfarm+NAME`, diffusers), the median
over the runs whose steal (share of CPU time given to other machines meanwhile; CPU runs only) was
at most the limit, the ratio to diffusers in the same configuration, and the peak GPU memory where
it was measured."""

import json
import statistics
import sys

PHASES = ["text_encode", "denoise", "vae_decode", "png_encode"]

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
max_steal = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0

runs = {}
for r in rows:
    if "images_per_s" not in r:
        continue  # a failed or skipped run: bench/gpu.sh counts those itself
    key = (r.get("family", "tiny"), r["size"], r["batch"], r["images"])
    runs.setdefault(key, {}).setdefault(r["engine"], []).append(r)
gpu = any("peak_gpu_mib" in r for r in rows)


def kept(rs):
    return [r for r in rs if r.get("steal", 0.0) <= max_steal]


def median(rs, key):
    return statistics.median(key(r) for r in rs) if rs else None


def cell(v, fmt):
    return "—" if v is None else format(v, fmt)


def engines(by_engine):
    # pixelfarm first, its variants next, diffusers last.
    return sorted(by_engine, key=lambda e: (e == "diffusers", e != "pixelfarm", e))


print(f"medians of the runs with at most {max_steal:.0%} steal; ratio = images/s over diffusers':")
print()
print("| family | size | batch | images | engine | img/s | ratio | runs kept | steal of kept |" + (" peak GPU MiB |" if gpu else ""))
print("|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""))
for (family, size, batch, n), by_engine in runs.items():
    base = median(kept(by_engine.get("diffusers", [])), lambda r: r["images_per_s"])
    for e in engines(by_engine):
        good = kept(by_engine[e])
        ips = median(good, lambda r: r["images_per_s"])
        ratio = ips / base if ips is not None and base and e != "diffusers" else None
        steal = max((r.get("steal", 0.0) for r in good), default=None)
        mem = f" {cell(max((r.get('peak_gpu_mib', 0) for r in good), default=None), 'd')} |" if gpu else ""
        print(
            f"| {family} | {size}x{size} | {batch} | {n} | {e} | {cell(ips, '.3f')} "
            f"| {cell(ratio, '.2f')}{'x' if ratio is not None else ''} | {len(good)} of {len(by_engine[e])} "
            f"| ≤ {cell(steal, '.1%')} |{mem}"
        )
print()
print("seconds per image by phase (medians of the kept runs):")
print("| engine | family | size | batch | " + " | ".join(PHASES) + " |")
print("|---|---|---|---|" + "---|" * len(PHASES))
for (family, size, batch, _), by_engine in runs.items():
    for e in engines(by_engine):
        good = kept(by_engine[e])
        cells = " | ".join(
            cell(median(good, lambda r: r["seconds_per_image"].get(k, 0.0)), ".4f") for k in PHASES
        )
        print(f"| {e} | {family} | {size} | {batch} | {cells} |")
