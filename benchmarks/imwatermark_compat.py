"""Measure the numpy invisible-watermark methods (provgen.provenance.imwatermark_compat); docs/watermark.md.

    python benchmarks/imwatermark_compat.py robustness --size 512
    python benchmarks/imwatermark_compat.py timing --size 1024
    python benchmarks/imwatermark_compat.py unmarked --n 400      # false positives + stock-mark bit accuracy
    python benchmarks/imwatermark_compat.py sdxl --size 1024      # simulated SDXL stock marks

Images: watermark_robustness.py's sets (scikit-image photographs + synthetic generators); no download.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from watermark_robustness import KINDS, image_set, psnr, reencode  # noqa: E402

from provgen.provenance.imwatermark_compat import (  # noqa: E402
    STOCK_MARKS,
    DwtDctSvdWatermark,
    DwtDctWatermark,
    _stock_accuracy,
    bits_from_bytes,
    decode_bits,
    detect_stock_marks,
    message_bytes,
    simulate_sdxl_watermark,
    vote_means,
)

METHODS = (DwtDctSvdWatermark(), DwtDctWatermark())
ATTACKS = {
    "png": lambda im: im,
    "jpeg95": lambda im: reencode(im, "JPEG", quality=95),
    "jpeg90": lambda im: reencode(im, "JPEG", quality=90),
    "jpeg75": lambda im: reencode(im, "JPEG", quality=75),
    "jpeg50": lambda im: reencode(im, "JPEG", quality=50),
    "webp80": lambda im: reencode(im, "WEBP", quality=80),
    "resize0.5-back": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC).resize(
        im.size, Image.Resampling.BICUBIC),
}


def images(size: int, n: int) -> list[tuple[str, Image.Image]]:
    return image_set("dev", size, n) + image_set("held-out", size, n)


def robustness(size: int, n: int) -> None:
    ims = images(size, n)
    payloads = [(0x5A5A_0000_0000 + 7919 * i) % (1 << 48) for i in range(len(ims))]
    print(f"{len(ims)} images at {size}²; cells: exact-payload recovery / mean bit accuracy of the 64-bit word")
    for method in METHODS:
        marked = [method.embed(im, p) for (_, im), p in zip(ims, payloads, strict=True)]
        quality = [psnr(a, b) for (_, a), b in zip(ims, marked, strict=True)]
        print(f"{method.name}: PSNR median {statistics.median(quality):.1f} dB (min {min(quality):.1f})")
        for attack, fn in ATTACKS.items():
            ok, acc, conf = 0, [], []
            for m, p in zip(marked, payloads, strict=True):
                a = fn(m)
                reading = method.decode(a)
                ok += reading is not None and reading.payload == p
                bits = decode_bits(a, 64, method.algorithm)
                acc.append(float(np.mean(np.asarray(bits) == np.asarray(bits_from_bytes(message_bytes(p))))))
                means = vote_means(a, 64, method.algorithm)
                conf.append(float(np.mean(np.abs(2 * means - 1))))
            print(f"  {attack:15s} {ok}/{len(marked)}  acc {np.mean(acc):.3f}  confidence median "
                  f"{statistics.median(conf):.2f} (min {min(conf):.2f})")


def timing(size: int, repeats: int) -> None:
    ims = images(size, 1)
    for method in METHODS:
        emb, dec = [], []
        for _, im in ims:
            for _ in range(repeats):
                t = time.perf_counter()
                m = method.embed(im, 0x123456789ABC)
                emb.append(time.perf_counter() - t)
                t = time.perf_counter()
                method.decode(m)
                dec.append(time.perf_counter() - t)
        print(f"{method.name} {size}²: embed {statistics.median(emb) * 1e3:.1f} ms, "
              f"decode {statistics.median(dec) * 1e3:.1f} ms (median of {len(emb)})")
    st = []
    for _, im in ims:
        t = time.perf_counter()
        detect_stock_marks(im)
        st.append(time.perf_counter() - t)
    print(f"detect_stock_marks {size}²: {statistics.median(st) * 1e3:.1f} ms")


def unmarked(n: int, seed: int) -> None:
    """Unmarked images: CRC passes and confidence of both methods, and the SDXL bit accuracy."""
    rng = np.random.default_rng(seed)
    pool = images(512, 2) + images(1024, 1)
    conf = {m.name: [] for m in METHODS}
    hits = {m.name: 0 for m in METHODS}
    sdxl = []
    for _ in range(n):
        kind = rng.integers(0, 8)
        w, h = int(rng.integers(256, 1100)), int(rng.integers(256, 1100))
        if kind < 4:
            image = list(KINDS.values())[kind](w, h, int(rng.integers(10**6, 2 * 10**6)))
        elif kind == 4:
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        elif kind == 5:
            image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        else:  # a photograph, cropped and/or rescaled and/or re-encoded
            image = pool[int(rng.integers(0, len(pool)))][1]
            if rng.random() < 0.5:
                x0, y0 = int(rng.integers(0, image.width // 4)), int(rng.integers(0, image.height // 4))
                image = image.crop((x0, y0, image.width, image.height))
            if rng.random() < 0.5:
                f = float(rng.uniform(0.6, 1.6))
                image = image.resize((max(256, int(image.width * f)), max(256, int(image.height * f))))
            if rng.random() < 0.5:
                image = reencode(image, "JPEG", quality=int(rng.integers(60, 98)))
        for m in METHODS:
            means = vote_means(image, 64, m.algorithm)
            conf[m.name].append(float(np.mean(np.abs(2 * means - 1))))
            hits[m.name] += m.decode(image) is not None
        sdxl.append(_stock_accuracy(np.asarray(image.convert("RGB")), STOCK_MARKS[0])[0])
    print(f"{n} unmarked images (256-1100 px): readings {hits}")
    for name, c in conf.items():
        c = np.asarray(c)
        print(f"  {name}: confidence median {np.median(c):.2f}, 95th pct {np.percentile(c, 95):.2f}, "
              f"max {c.max():.2f}, share >= 0.3: {np.mean(c >= 0.3):.3f}, >= 0.5: {np.mean(c >= 0.5):.3f}")
    s = np.asarray(sdxl)
    print(f"  SDXL message best bit accuracy (3 readings) on unmarked: median {np.median(s):.3f}, 99th pct "
          f"{np.percentile(s, 99):.3f}, max {s.max():.3f}")


def sdxl(size: int, n: int) -> None:
    ims = images(size, n)
    for attack in ("png", "jpeg95", "resize0.5-back"):
        acc, found = [], 0
        for _, im in ims:
            a = ATTACKS[attack](simulate_sdxl_watermark(im))
            acc.append(_stock_accuracy(np.asarray(a), STOCK_MARKS[0])[0])
            found += bool(detect_stock_marks(a))
        print(f"simulated SDXL mark, {size}², {attack}: bit accuracy median {np.median(acc):.3f} "
              f"(min {min(acc):.3f}); detected {found}/{len(ims)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("robustness", "timing", "unmarked", "sdxl"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=1, help="synthetic images per kind (unmarked: images)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "robustness":
        robustness(args.size, args.n)
    elif args.what == "timing":
        timing(args.size, args.repeats)
    elif args.what == "unmarked":
        unmarked(args.n, args.seed)
    else:
        sdxl(args.size, args.n)


if __name__ == "__main__":
    main()
