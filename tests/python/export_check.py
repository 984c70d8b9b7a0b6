"""Read pixelfarm's dataset exports with the tools users load them with, and check them against
the batch's results.jsonl: the rows per split (recomputed here from the documented split rule),
prompts, seeds, variables, image sizes, the init images and masks, the shard size bound, and that
exporting the same batch twice gives the same bytes. It also reads the content credentials of
every image `pixelfarm run` wrote with the Python c2pa package (another build of the C2PA SDK than
the Rust tests').

    python export_check.py PIXELFARM_BIN WORK_DIR    (scripts/export-check runs it)
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import c2pa
import datasets
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

SPLIT = (0.5, 0.25, 0.25)
SHARD_BYTES = 24 * 1024
SIZE = 32
MANIFEST = f"""
name: export-check
model: shapes
idempotency_key: export-check
defaults:
  width: {SIZE}
  height: {SIZE}
  steps: 4
  sampler: euler
  init: {{image: {{key: init.png}}, mask: {{key: mask.png}}, strength: 0.6}}
prompt: "a {{size}} {{color}} {{shape}} on a white background"
vars:
  size: [small, large]
  color: [red, green, blue]
  shape: [circle, square]
seeds: {{base: 7, count: 2}}
"""
NAMES = ("train", "validation", "test")


def split_of(variant_key):
    """The README's rule: sha256 of the variant key, first 8 bytes big-endian, over 2^64."""
    h = int.from_bytes(hashlib.sha256(variant_key.encode()).digest()[:8], "big")
    if h < SPLIT[0] * 2**64:
        return "train"
    if h < (SPLIT[0] + SPLIT[1]) * 2**64:
        return "validation"
    return "test"


def variables(job_key):
    """`size=small,color=red,…@32x32#1` -> {'color': 'red', …} (these values hold no commas)."""
    stem = job_key.rsplit("#", 1)[0].rsplit("@", 1)[0]
    return dict(part.split("=", 1) for part in stem.split(","))


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def run(binary, work, fmt, extra=()):
    """`pixelfarm run` into WORK/out (the same batch every time), its dataset moved to WORK/FMT."""
    cmd = [binary, "run", str(work / "manifest.yaml"), "--out", str(work / "out"),
           "--format", fmt, "--split", ",".join(map(str, SPLIT)), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}")
    print(f"$ pixelfarm run ... --format {fmt}: {r.stdout.strip().splitlines()[-1]}")
    dest = work / fmt
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(work / "out" / "dataset", dest)
    return dest


def expected_rows(work):
    rows = {}
    for line in (work / "out" / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["state"] == "succeeded":
            vkey = r["key"].rsplit("#", 1)[0]
            rows[r["key"]] = {"split": split_of(vkey), "prompt": r["params"]["prompt"],
                              "seed": r["params"]["seed"], "vars": variables(r["key"])}
    return rows


def check_row(fmt, split, row, expected, image, init, mask):
    key = row["job_key"]
    want = expected.get(key)
    check(want is not None, f"{fmt}: {key} is a succeeded job")
    check(want["split"] == split, f"{fmt}: {key} in {split}, the rule says {want['split']}")
    check(row["prompt"] == want["prompt"] and row["seed"] == want["seed"], f"{fmt}: {key} row")
    for name, value in want["vars"].items():
        check(row[f"var_{name}"] == value, f"{fmt}: {key} var_{name}")
    check(row["variant_key"] == key.rsplit("#", 1)[0], f"{fmt}: {key} variant_key")
    sha = row["model_sha256"]
    check(len(sha) == 64 and int(sha, 16) >= 0, f"{fmt}: {key} model_sha256 {sha}")
    check(row["init_strength"] == 0.6, f"{fmt}: {key} init_strength")
    check(image.size == (SIZE, SIZE), f"{fmt}: {key} image is {image.size}")
    for what, img in (("init", init), ("mask", mask)):
        want = Image.open(WORK / f"{what}.png")
        check(img.tobytes() == want.tobytes(), f"{fmt}: {key} {what} is the job's input")


def check_credentials(out, expected):
    """Every image carries a C2PA manifest the c2pa package validates (signed by the TEST ONLY
    development key, so `Valid`, not `Trusted`), stating a model made it, which model, and the
    weights' sha256 the dataset rows name; and the XMP digital source type."""
    source = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    images = sorted((out / "images").rglob("*.png"))
    check(len(images) == len(expected), f"{len(images)} images for {len(expected)} jobs")
    shas = set()
    for path in images:
        with open(path, "rb") as f:
            store = json.loads(c2pa.Reader("image/png", f).json())
        state, status = store.get("validation_state"), store.get("validation_status")
        check(state == "Valid", f"{path.name}: c2pa says {state} {status}")
        manifest = store["manifests"][store["active_manifest"]]
        actions = next(a for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")
        created = actions["data"]["actions"][0]
        check(created["action"] == "c2pa.created", f"{path.name}: {created}")
        check(created["digitalSourceType"] == source, f"{path.name}: {created}")
        check(created["parameters"]["org.pixelfarm.model"] == "shapes", f"{path.name}: {created}")
        shas.add(created["parameters"]["org.pixelfarm.model_sha256"])
        xmp = f'Iptc4xmpExt:DigitalSourceType="{source}"'.encode()
        check(xmp in path.read_bytes(), f"{path.name}: XMP DigitalSourceType")
    print(f"  content credentials: {len(images)} images valid (c2pa {c2pa.__version__})")
    return shas


def summarize(fmt, seen):
    counts = {s: len(seen[s]) for s in NAMES}
    print(f"  {fmt}: {counts}")
    return counts


WORK = Path(sys.argv[2]) if len(sys.argv) == 3 else None


def main():
    binary, work = sys.argv[1], WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    Image.new("RGB", (SIZE, SIZE), (250, 20, 20)).save(work / "init.png")
    mask = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    mask.paste((255, 255, 255), (0, 0, SIZE // 2, SIZE))
    mask.save(work / "mask.png")
    (work / "manifest.yaml").write_text(MANIFEST)

    folder = run(binary, work, "imagefolder")
    expected = expected_rows(work)
    want = {s: sum(1 for r in expected.values() if r["split"] == s) for s in NAMES}
    print(f"  expected from results.jsonl and the split rule: {want}")
    check(sum(want.values()) == 24, "24 succeeded jobs")

    # imagefolder, as users load it.
    ds = datasets.load_dataset("imagefolder", data_dir=str(folder))
    seen = {s: [] for s in NAMES}
    for split in ds:
        for row in ds[split]:
            check_row("imagefolder", split, row, expected, row["image"], row["init"], row["mask"])
            seen[split].append(row["job_key"])
    check(summarize("imagefolder", seen) == want, "imagefolder rows per split")
    shas = {row["model_sha256"] for split in ds for row in ds[split]}
    check(check_credentials(work / "out", expected) == shas, "credentials name the model's sha256")

    # parquet: with pyarrow, and with datasets (the Image features in the file's metadata).
    parquet = run(binary, work, "parquet")
    seen = {s: [] for s in NAMES}
    for split in NAMES:
        path = parquet / f"{split}.parquet"
        if not path.exists():
            continue
        for row in pq.read_table(path).to_pylist():
            imgs = [Image.open(io.BytesIO(row[c]["bytes"])) for c in ("image", "init", "mask")]
            check(row["image"]["path"] == f"{row['job_id']}.png", "parquet image path")
            check_row("parquet", split, row, expected, *imgs)
            seen[split].append(row["job_key"])
        loaded = datasets.load_dataset("parquet", data_files={split: str(path)})[split]
        check(isinstance(loaded.features["image"], datasets.Image), "parquet image feature")
        check(loaded[0]["image"].size == (SIZE, SIZE), "datasets decodes the parquet image")
    check(summarize("parquet", seen) == want, "parquet rows per split")
    again = run(binary, work, "parquet")
    for split in NAMES:
        a, b = parquet / f"{split}.parquet", again / f"{split}.parquet"
        check(a.exists() == b.exists() and (not a.exists() or a.read_bytes() == b.read_bytes()),
              f"parquet {split}: the same batch exports to the same bytes")

    # webdataset: with the webdataset library, and the shards' sizes with tarfile.
    shards = run(binary, work, "webdataset", ["--shard-bytes", f"{SHARD_BYTES // 1024}KiB"])
    seen = {s: [] for s in NAMES}
    for split in NAMES:
        urls = sorted(str(p) for p in shards.glob(f"{split}-*.tar"))
        for path in urls:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                samples = {m.name.split(".", 1)[0] for m in members}
                check(all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members),
                      f"{path}: fixed headers")
            size = os.path.getsize(path)
            check(size <= SHARD_BYTES or len(samples) == 1, f"{path}: {size} bytes")
        if not urls:
            continue
        for s in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
            row = s["json"]
            check(s["__key__"] == row["job_id"], "webdataset key")
            check_row("webdataset", split, row, expected, s["png"], s["init.png"], s["mask.png"])
            seen[split].append(row["job_key"])
        print(f"  webdataset {split}: {len(urls)} shards")
    check(summarize("webdataset", seen) == want, "webdataset rows per split")
    print("export check passed")


if __name__ == "__main__":
    main()
