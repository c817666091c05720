"""Built-in plugin: post-processors ``resize``, ``upscale``, ``sharpen`` and ``color`` (``--post NAME[:ARGS]``).

They run after sampling and before the provenance layer, so the watermark and signature cover their output;
each use is in the recipe and is a ``c2pa.edited`` action of the manifest. Arguments are checked before
the model loads (``ValueError`` here becomes a ``ValidationError`` naming the ``--post`` item).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from provgen.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from PIL import Image

PLUGIN_NAME = "postprocess"

#: largest side a post-processor may produce (as for generated images)
MAX_SIDE = 8192
_SIZE = re.compile(r"(\d+)x(\d+)")
_FACTOR = re.compile(r"(\d+(?:\.\d+)?|\.\d+)x?")
#: ``color`` keys -> PIL.ImageEnhance class name
_ENHANCERS = {"saturation": "Color", "contrast": "Contrast", "brightness": "Brightness"}


def parse_resize(args: str) -> tuple[int, int] | float:
    """``WxH`` (exact size in pixels) or ``Fx`` (scale factor, e.g. ``2x``, ``0.5x``)."""
    text = args.strip().lower()
    if match := _SIZE.fullmatch(text):
        width, height = int(match[1]), int(match[2])
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise ValueError(f"each side must be 1..{MAX_SIDE} pixels, got {width}x{height}")
        return width, height
    if text.endswith("x") and (match := _FACTOR.fullmatch(text)):
        return _factor(match[1], "scale factor")
    raise ValueError(f"expected WIDTHxHEIGHT (e.g. resize:1024x1024) or a factor (e.g. resize:2x), got {args!r}")


def parse_upscale(args: str) -> float:
    """Empty (2) or a factor of at least 1 (``3``, ``1.5x``)."""
    text = args.strip().lower() or "2"
    match = _FACTOR.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a factor such as upscale:2 or upscale:1.5x, got {args!r}")
    factor = _factor(match[1], "upscale factor")
    if factor < 1:
        raise ValueError(f"upscale factor must be at least 1, got {factor:g}; use resize:{factor:g}x to shrink")
    return factor


def parse_sharpen(args: str) -> float:
    """Empty (1.0) or an amount in (0, 5]: the unsharp-mask strength (1.0 = 100 %)."""
    text = args.strip() or "1"
    try:
        amount = float(text)
    except ValueError:
        raise ValueError(f"expected an amount such as sharpen:0.5, got {args!r}") from None
    if not 0 < amount <= 5:
        raise ValueError(f"amount must be in (0, 5], got {text}")
    return amount


def parse_color(args: str) -> dict[str, float]:
    """``KEY=VALUE,...`` with keys saturation, contrast, brightness; values in [0, 5] (1 = unchanged)."""
    if not args.strip():
        raise ValueError(f"expected e.g. color:saturation=1.1,contrast=1.05 (keys: {', '.join(_ENHANCERS)})")
    factors: dict[str, float] = {}
    for part in args.split(","):
        key, sep, value = (s.strip().lower() for s in part.partition("="))
        if not sep or key not in _ENHANCERS:
            raise ValueError(f"{part.strip()!r} is not KEY=VALUE with KEY one of {', '.join(_ENHANCERS)}")
        if key in factors:
            raise ValueError(f"{key} is given twice")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a number") from None
        if not 0 <= number <= 5:
            raise ValueError(f"{key} must be in [0, 5] (1 = unchanged), got {value}")
        factors[key] = number
    return factors


def _factor(text: str, what: str) -> float:
    factor = float(text)
    if not 0 < factor <= 16:
        raise ValueError(f"{what} must be in (0, 16], got {text}")
    return factor


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode in ("RGB", "RGBA") else image.convert("RGB")


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    from PIL import Image

    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    if max(size) > MAX_SIDE:
        raise ValueError(f"scaling {image.width}x{image.height} by {factor:g} exceeds {MAX_SIDE} pixels a side")
    return _rgb(image).resize(size, Image.Resampling.LANCZOS)


def resize(image: Image.Image, args: str) -> Image.Image:
    from PIL import Image

    target = parse_resize(args)
    if isinstance(target, float):
        return _scaled(image, target)
    return _rgb(image).resize(target, Image.Resampling.LANCZOS)


def upscale(image: Image.Image, args: str) -> Image.Image:
    return _scaled(image, parse_upscale(args))


def sharpen(image: Image.Image, args: str) -> Image.Image:
    from PIL import ImageFilter

    amount = parse_sharpen(args)
    return _rgb(image).filter(ImageFilter.UnsharpMask(radius=2, percent=round(amount * 100), threshold=2))


def color(image: Image.Image, args: str) -> Image.Image:
    from PIL import ImageEnhance

    image = _rgb(image)
    for key, factor in parse_color(args).items():  # in the order given
        image = getattr(ImageEnhance, _ENHANCERS[key])(image).enhance(factor)
    return image


@hookimpl
def register_postprocessors(register: Callable[..., None]) -> None:
    register("resize", resize, validate=parse_resize,
             description="resize (Lanczos): resize:WIDTHxHEIGHT, or a factor, resize:2x / resize:0.5x")
    register("upscale", upscale, validate=parse_upscale,
             description="upscale by a factor (Lanczos, no model): upscale (2x), upscale:3, upscale:1.5x")
    register("sharpen", sharpen, validate=parse_sharpen,
             description="unsharp mask: sharpen (1.0) or sharpen:AMOUNT, AMOUNT in (0, 5]")
    register("color", color, validate=parse_color,
             description="colour adjustments: color:saturation=1.1,contrast=1.05,brightness=0.95 (1 = unchanged)")
