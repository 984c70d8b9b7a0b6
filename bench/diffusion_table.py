"""Tables of bench/diffusion.sh from its JSON lines (pixelfarm, then diffusers, per configuration)."""

import json
import sys

PHASES = ["text_encode", "denoise", "vae_decode", "png_encode"]

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("| size | batch | images | pixelfarm img/s | diffusers img/s | ratio |")
print("|---|---|---|---|---|---|")
for ours, theirs in zip(rows[::2], rows[1::2]):
    size, batch, n = ours["size"], ours["batch"], ours["images"]
    a, b = ours["images_per_s"], theirs["images_per_s"]
    print(f"| {size}x{size} | {batch} | {n} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
print()
print("seconds per image by phase:")
print("| engine | size | batch | " + " | ".join(PHASES) + " |")
print("|---|---|---|" + "---|" * len(PHASES))
for r in rows:
    p = r["seconds_per_image"]
    cells = " | ".join(f"{p.get(k, 0.0):.4f}" for k in PHASES)
    print(f"| {r['engine']} | {r['size']} | {r['batch']} | {cells} |")
