"""Calibrate the fingerprint match: pHash and dHash Hamming distances of edited copies vs distinct images.

    python benchmarks/fingerprint_calibration.py [--shapes N] [--json]

Images: scikit-image's photographs (no download), several crops and rescales of each at different places (so
"distinct" includes look-alikes), synthetic textures, and N generations of the shipped ``shapes`` model (many
of them near-duplicates of each other by design: a red circle on blue is a red circle on blue). For each image
it applies the edits ``provgen verify`` must see through (re-encoding, resizing, crops, brightness, contrast,
blur, noise, the watermark) and prints, per edit and per hash, the distance to the original (max and 99th
percentile), and for distinct pairs the smallest distances. Then it picks thresholds: the largest pHash radius
and dHash radius whose combined rule (pHash <= P and dHash <= D) makes no false match among distinct images,
and the recall of each edit under it. The chosen numbers are what ``provgen.core.config`` uses.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import statistics
import sys
from collections.abc import Callable

import imagehash
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


def photographs() -> dict[str, Image.Image]:
    from skimage import data

    # (``cat`` is ``chelsea`` again, so it is left out)
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "camera",
             "coins", "moon", "page", "text", "horse", "retina", "grass", "gravel", "brick", "colorwheel"]
    out = {}
    for name in names:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - an image this scikit-image build lacks
            continue
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.dtype != np.uint8:
            array = (255 * (array - array.min()) / max(float(array.max() - array.min()), 1e-9)).astype(np.uint8)
        image = Image.fromarray(array)
        out[name] = image.convert("RGB")
    return out


def views(images: dict[str, Image.Image], rng: random.Random) -> dict[str, Image.Image]:
    """Each photo at 512² plus three crops of 60% at different places: look-alikes that are distinct images."""
    out = {}
    for name, image in images.items():
        w, h = image.size
        side = min(w, h)
        out[name] = image.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)).resize((512, 512))
        for k in range(3):
            cw, ch = int(w * 0.6), int(h * 0.6)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            out[f"{name}@{k}"] = image.crop((x, y, x + cw, y + ch)).resize((512, 512), Image.LANCZOS)
    return out


def synthetic(count: int, rng: random.Random) -> dict[str, Image.Image]:
    out = {}
    for k in range(count):
        gen = np.random.default_rng(rng.getrandbits(32))
        base = gen.random((8, 8, 3))
        big = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((512, 512), Image.BICUBIC), float)
        big += gen.normal(0, 12, big.shape)
        out[f"synthetic{k}"] = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
    return out


def shapes(count: int) -> dict[str, Image.Image]:
    if count <= 0:
        return {}
    import provgen
    from provgen.plugins.shapes.dataset import sample_prompt

    rng = random.Random(5)
    engine = provgen.Engine(progress=False)
    pipe = engine.load("shapes")[1]
    out = {}
    for k in range(count):
        prompt, _ = sample_prompt(rng)
        image = pipe(prompt, num_inference_steps=20, guidance_scale=6.0,
                     generator=__import__("torch").Generator().manual_seed(k)).images[0]
        out[f"shapes{k}:{prompt}"] = image
    return out


def _jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def edit(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return edit


def _webp(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _crop(fraction: float, corner: bool) -> Callable[[Image.Image], Image.Image]:
    def edit(image: Image.Image) -> Image.Image:
        w, h = image.size
        cw, ch = int(w * fraction**0.5), int(h * fraction**0.5)
        x, y = (0, 0) if corner else ((w - cw) // 2, (h - ch) // 2)
        return image.crop((x, y, x + cw, y + ch))

    return edit


def _noise(image: Image.Image) -> Image.Image:
    array = np.asarray(image, float) + np.random.default_rng(1).normal(0, 5, (image.height, image.width, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def _watermark(image: Image.Image) -> Image.Image:
    from provgen.provenance.wm1 import RobustWatermark

    return RobustWatermark().embed(image, 0x123456789A)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "watermark": _watermark,
    "jpeg 95": _jpeg(95),
    "jpeg 75": _jpeg(75),
    "jpeg 50": _jpeg(50),
    "webp 80": _webp,
    "resize 0.5": lambda im: im.resize((im.width // 2, im.height // 2), Image.BILINEAR),
    "resize 2": lambda im: im.resize((im.width * 2, im.height * 2), Image.LANCZOS),
    "brightness +10%": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "contrast -10%": lambda im: ImageEnhance.Contrast(im).enhance(0.9),
    "blur r=1": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
    "noise 5": _noise,
    "crop 90% centre": _crop(0.9, False),
    "crop 90% corner": _crop(0.9, True),
    "crop 80% corner": _crop(0.8, True),
}
HASHES = {"phash": imagehash.phash, "dhash": imagehash.dhash}
#: the largest pHash radius the registry's band index serves without a scan (store.nearest_fingerprint)
MAX_INDEXED_PHASH = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=40, help="generations of the shipped model to include")
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(3)
    images = {**views(photographs(), rng), **synthetic(args.synthetic, rng), **shapes(args.shapes)}
    names = list(images)
    hashes = {name: {h: fn(image) for h, fn in HASHES.items()} for name, image in images.items()}
    same: dict[str, dict[str, list[int]]] = {edit: {h: [] for h in HASHES} for edit in EDITS}
    pairs_same: dict[str, list[tuple[int, int]]] = {edit: [] for edit in EDITS}
    for name, image in images.items():
        for edit, fn in EDITS.items():
            edited = fn(image)
            d = {h: int(hashes[name][h] - HASHES[h](edited)) for h in HASHES}
            for h in HASHES:
                same[edit][h].append(d[h])
            pairs_same[edit].append((d["phash"], d["dhash"]))
    distinct = [(int(hashes[a]["phash"] - hashes[b]["phash"]), int(hashes[a]["dhash"] - hashes[b]["dhash"]), a, b)
                for a, b in itertools.combinations(names, 2)
                if a.split("@")[0] != b.split("@")[0]]  # crops of one photo overlap: not counted either way

    def false_matches(p: int, d: int) -> int:
        return sum(1 for dp, dd, _, _ in distinct if dp <= p and dd <= d)

    choices = []
    for p in range(4, MAX_INDEXED_PHASH + 1):  # beyond it the registry would scan instead of using its index
        for d in range(4, 33):
            if false_matches(p, d) == 0:
                recall = statistics.mean(
                    statistics.mean(1.0 if dp <= p and dd <= d else 0.0 for dp, dd in pairs_same[e]) for e in EDITS
                )
                choices.append((recall, -p - d, p, d))
    best = max(choices) if choices else None
    phash_only = max((p for p in range(0, 33) if all(dp > p for dp, _, _, _ in distinct)), default=None)
    result = {
        "images": len(images),
        "distinct_pairs": len(distinct),
        "edits": {
            edit: {
                h: {"max": max(v), "p99": sorted(v)[int(0.99 * (len(v) - 1))], "mean": round(statistics.mean(v), 2)}
                for h, v in same[edit].items()
            }
            for edit in EDITS
        },
        "distinct_min": {
            "phash": min(dp for dp, _, _, _ in distinct),
            "dhash": min(dd for _, dd, _, _ in distinct),
            "closest_pairs": [
                {"phash": dp, "dhash": dd, "a": a, "b": b} for dp, dd, a, b in sorted(distinct)[:5]
            ],
        },
        "phash_only_largest_safe_radius": phash_only,
        "chosen": None,
    }
    if best is not None:
        _, _, p, d = best
        result["chosen"] = {
            "phash_max": p,
            "dhash_max": d,
            "recall": {e: round(statistics.mean(1.0 if dp <= p and dd <= d else 0.0 for dp, dd in pairs_same[e]), 3)
                       for e in EDITS},
            "recall_phash_only": {
                e: round(statistics.mean(1.0 if dp <= (phash_only or 0) else 0.0 for dp, _ in pairs_same[e]), 3)
                for e in EDITS
            },
        }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{result['images']} images, {result['distinct_pairs']} distinct pairs")
    print(f"{'edit':18s} {'pHash max/p99':>14s} {'dHash max/p99':>14s}")
    for edit, row in result["edits"].items():
        p, d = row["phash"], row["dhash"]
        print(f"{edit:18s} {p['max']:>7d}/{p['p99']:<6d} {d['max']:>7d}/{d['p99']:<6d}")
    print(f"distinct images: smallest pHash {result['distinct_min']['phash']}, dHash {result['distinct_min']['dhash']}")
    for pair in result["distinct_min"]["closest_pairs"]:
        print(f"   {pair}")
    print(f"pHash alone: largest radius with no false match {phash_only}")
    if result["chosen"]:
        chosen = result["chosen"]
        print(f"chosen: pHash <= {chosen['phash_max']} and dHash <= {chosen['dhash_max']}")
        for edit in EDITS:
            alone = chosen["recall_phash_only"][edit]
            print(f"   {edit:18s} recall {chosen['recall'][edit]:.3f} (pHash alone {alone:.3f})")


if __name__ == "__main__":
    main()
