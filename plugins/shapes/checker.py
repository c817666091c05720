"""Read shape colour, background colour, shape class and position back from an image, by code.

* background: median of the border pixels, nearest palette colour;
* shape mask: pixels far (> 60 in RGB) from that background colour; shape colour: nearest palette colour
  of the median of the mask's core (pixels that are far from the background *and* from the mask edge);
* position: robust bounding-box centre of the mask in thirds of the image ("top left", "center", ...);
* shape class: nearest template (cosine similarity) of the soft mask cropped to its bounding box and resized
  to 24x24; the templates are averages of clean renders (``_templates``), so the checker calibrates itself.

``check(image, spec)`` returns booleans; ``read(image)`` returns what was read; ``clean_accuracy(n)``
measures the checker on clean renders.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
from PIL import Image

from provgen.plugins.shapes.dataset import COLOURS, PALETTE, SHAPES, render, sample_prompt

_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
_T = 24  # template side


def _nearest(rgb: np.ndarray) -> str:
    return COLOURS[int(np.argmin(((_RGB - rgb[None]) ** 2).sum(1)))]


def _descriptor(soft: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(soft > 0.5)
    if len(xs) < 4:
        return None
    crop = soft[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((_T, _T), Image.BILINEAR)
    v = np.asarray(img, dtype=np.float32).ravel() / 255.0
    v = v - v.mean()
    return v / (np.linalg.norm(v) + 1e-8)


def _analyse(image: Image.Image) -> dict[str, Any]:
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = a.shape
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb)
    dist = np.sqrt(((a - np.array(PALETTE[background], dtype=np.float32)) ** 2).sum(-1))
    mask = dist > 60
    out: dict[str, Any] = {
        "background": background,
        "colour": None,
        "shape": None,
        "position": None,
        "area": float(mask.mean()),
    }
    if mask.sum() < 4:
        return out
    core = mask & (dist > np.percentile(dist[mask], 50))
    colour_rgb = np.median(a[core if core.sum() >= 2 else mask], axis=0)
    out["colour"] = _nearest(colour_rgb)
    # soft mask: fraction of the way from the background colour to the shape colour
    span = np.linalg.norm(np.array(PALETTE[out["colour"]], np.float32) - np.array(PALETTE[background], np.float32))
    soft = np.clip(dist / max(span, 1.0), 0, 1)
    ys, xs = np.nonzero(mask)
    # robust bounding-box centre (2nd..98th percentile of the mask): a triangle's centroid sits low
    cx = (np.percentile(xs, 2) + np.percentile(xs, 98) + 1) / 2 / w
    cy = (np.percentile(ys, 2) + np.percentile(ys, 98) + 1) / 2 / h
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    out["position"] = (row + " " + col).strip() or "center"
    d = _descriptor(soft)
    if d is not None:
        names, temps = _templates()
        out["shape"] = names[int(np.argmax(temps @ d))]
    out["centroid"] = (float(cx), float(cy))
    return out


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[tuple[str, ...], np.ndarray]:
    """Average descriptor of each shape over clean renders of every size and position (seeded)."""
    rng = random.Random(1234)
    acc = {s: [] for s in SHAPES}
    while min(len(v) for v in acc.values()) < 40:
        _, spec = sample_prompt(rng)
        if len(acc[spec["shape"]]) >= 40:
            continue
        a = np.asarray(render(spec, 64), dtype=np.float32)
        dist = np.sqrt(((a - np.array(PALETTE[spec["background"]], np.float32)) ** 2).sum(-1))
        span = np.linalg.norm(
            np.array(PALETTE[spec["colour"]], np.float32) - np.array(PALETTE[spec["background"]], np.float32)
        )
        d = _descriptor(np.clip(dist / span, 0, 1))
        acc[spec["shape"]].append(d)
    temps = np.stack([np.mean(acc[s], axis=0) for s in SHAPES])
    temps = temps - temps.mean(1, keepdims=True)
    return SHAPES, temps / np.linalg.norm(temps, axis=1, keepdims=True)


def read(image: Image.Image) -> dict[str, Any]:
    return _analyse(image)


def _expected_position(spec: dict[str, Any]) -> str:
    return spec["position"] or "center"


def check(image: Image.Image, spec: dict[str, Any]) -> dict[str, bool | None]:
    """Booleans for colour, background, shape; position is None when the caption states none."""
    got = _analyse(image)
    return {
        "colour": got["colour"] == spec["colour"],
        "background": got["background"] == spec["background"],
        "shape": got["shape"] == spec["shape"],
        "position": (got["position"] == _expected_position(spec)) if spec["position"] else None,
    }


class Tally:
    """``check`` results summed over images: each field's accuracy (position over the prompts that state one)
    and shape accuracy per shape class."""

    def __init__(self) -> None:
        self.n = self.n_position = 0
        self.hits = {"colour": 0, "background": 0, "shape": 0, "position": 0}
        self.per_shape: dict[str, list[int]] = {}

    def add(self, result: dict[str, bool | None], spec: dict[str, Any]) -> None:
        self.n += 1
        for k in ("colour", "background", "shape"):
            self.hits[k] += bool(result[k])
        if result["position"] is not None:
            self.n_position += 1
            self.hits["position"] += result["position"]
        shape = self.per_shape.setdefault(spec["shape"], [0, 0])
        shape[0] += bool(result["shape"])
        shape[1] += 1

    def accuracy(self) -> dict[str, float]:
        return {k: v / max(1, self.n_position if k == "position" else self.n) for k, v in self.hits.items()}

    def shape_by_class(self) -> dict[str, float]:
        return {k: round(hits / n, 3) for k, (hits, n) in sorted(self.per_shape.items())}


def clean_accuracy(n: int = 1000, seed: int = 99, size: int = 64) -> dict[str, float]:
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(n):
        _, spec = sample_prompt(rng)
        tally.add(check(render(spec, size), spec), spec)
    return tally.accuracy() | {"n": n}


if __name__ == "__main__":
    import json

    print(json.dumps(clean_accuracy()))
