"""Caption grammar and renderer for the shapes model.

``sample_prompt(rng) -> (caption, spec)`` draws a random caption and its spec; ``render(spec, size)`` draws
the spec anti-aliased (drawn at 4x with Pillow, downsampled with LANCZOS). Both are deterministic: the
caption depends only on the ``random.Random`` state, and a spec carries its own jitter seed.
"""

from __future__ import annotations

import math
import random
from typing import Any

from PIL import Image, ImageDraw

#: colour name -> RGB; chosen far apart in RGB (smallest pairwise distance ~110, blue/purple)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 220, 30),
    "cyan": (0, 200, 220),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "star", "cross")
#: size word -> shape extent as a fraction of the image side ("" = no size word)
SIZES = {"small": 0.30, "": 0.42, "large": 0.54}
#: position phrase -> (x, y) centre as a fraction of the image side ("" = centred, position not stated)
_L, _C, _R = 0.26, 0.5, 0.74
POSITIONS: dict[str, tuple[float, float]] = {
    "": (_C, _C),
    "center": (_C, _C),
    "left": (_L, _C),
    "right": (_R, _C),
    "top": (_C, _L),
    "bottom": (_C, _R),
    "top left": (_L, _L),
    "top right": (_R, _L),
    "bottom left": (_L, _R),
    "bottom right": (_R, _R),
}
#: every word the grammar can produce (the tokenizer gives each one a single token)
WORDS = sorted(
    {"a", "on", "background", ",", "small", "large", "center", "left", "right", "top", "bottom", *COLOURS, *SHAPES}
)

P_POSITION = 0.7  # share of captions that state a position
P_SIZE = 0.6  # share of captions with a size word


def caption_of(spec: dict[str, Any]) -> str:
    size = spec["size"] + " " if spec["size"] else ""
    text = f"a {size}{spec['colour']} {spec['shape']} on a {spec['background']} background"
    return text + (f", {spec['position']}" if spec["position"] else "")


def sample_prompt(rng: random.Random) -> tuple[str, dict[str, Any]]:
    colour = rng.choice(COLOURS)
    background = rng.choice([c for c in COLOURS if c != colour])
    spec = {
        "colour": colour,
        "background": background,
        "shape": rng.choice(SHAPES),
        "size": rng.choice(["small", "large"]) if rng.random() < P_SIZE else "",
        "position": rng.choice([p for p in POSITIONS if p]) if rng.random() < P_POSITION else "",
        "seed": rng.randrange(2**31),  # jitter of position and size
    }
    return caption_of(spec), spec


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of a shape inscribed in a circle of radius ``r`` (squares/crosses: half side ``r``)."""
    if shape == "square":
        s = r * 0.82
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":  # equilateral, apex up, centred on its bounding box
        h = 2 * r * 0.85
        w = h * 2 / math.sqrt(3)
        return [(cx, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.42
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a) + r * 0.1))
        return pts
    if shape == "cross":  # plus sign, arm width 0.38 of the side
        s, t = r * 0.9, r * 0.9 * 0.38
        return [
            (cx - t, cy - s),
            (cx + t, cy - s),
            (cx + t, cy - t),
            (cx + s, cy - t),
            (cx + s, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + s),
            (cx - t, cy + s),
            (cx - t, cy + t),
            (cx - s, cy + t),
            (cx - s, cy - t),
            (cx - t, cy - t),
        ]
    raise ValueError(shape)


def render(spec: dict[str, Any], size: int = 64) -> Image.Image:
    jitter = random.Random(spec.get("seed", 0))
    big = size * 4
    img = Image.new("RGB", (big, big), PALETTE[spec["background"]])
    draw = ImageDraw.Draw(img)
    fx, fy = POSITIONS[spec["position"]]
    extent = SIZES[spec["size"]] * jitter.uniform(0.92, 1.08)
    cx = (fx + jitter.uniform(-0.035, 0.035)) * big
    cy = (fy + jitter.uniform(-0.035, 0.035)) * big
    r = extent * big / 2
    colour = PALETTE[spec["colour"]]
    if spec["shape"] == "circle":
        draw.ellipse([cx - r * 0.92, cy - r * 0.92, cx + r * 0.92, cy + r * 0.92], fill=colour)
    else:
        draw.polygon(_polygon(spec["shape"], cx, cy, r), fill=colour)
    return img.resize((size, size), Image.LANCZOS)
