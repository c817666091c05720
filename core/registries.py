"""Name -> thing registries filled by the ``register_*`` hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from provgen.core.errors import PluginError, ValidationError
from provgen.core.plugins import call_hook

if TYPE_CHECKING:
    from PIL import Image

    from provgen.provenance.watermark import WatermarkMethod

__all__ = [
    "PostProcessor",
    "Conditioner",
    "postprocessors",
    "conditioners",
    "watermark_methods",
    "get_watermark_method",
    "apply_postprocessors",
]


@dataclass(frozen=True)
class PostProcessor:
    name: str
    function: Callable[[Image.Image, str], Image.Image]
    description: str = ""
    version: str | None = None


@dataclass(frozen=True)
class Conditioner:
    name: str
    description: str = ""


def _cache(pm: pluggy.PluginManager) -> dict[str, Any]:
    cache = getattr(pm, "provgen_registries", None)
    if cache is None:
        cache = {}
        pm.provgen_registries = cache  # type: ignore[attr-defined]
    return cache


def _collect(pm: pluggy.PluginManager, hook: str, make: Callable[..., Any], key: Callable[[Any], str]) -> dict:
    cache = _cache(pm)
    if hook in cache:
        return cache[hook]
    items: dict[str, Any] = {}

    def register(*args: Any, **kwargs: Any) -> None:
        item = make(*args, **kwargs)
        name = key(item)
        if name in items:
            raise PluginError(f"`{name}` is registered twice in hook `{hook}`; plugin names must be unique")
        items[name] = item

    call_hook(pm, hook, register=register)
    cache[hook] = items
    return items


def postprocessors(pm: pluggy.PluginManager) -> dict[str, PostProcessor]:
    return _collect(pm, "register_postprocessors", PostProcessor, lambda p: p.name)


def conditioners(pm: pluggy.PluginManager) -> dict[str, Conditioner]:
    return _collect(pm, "register_conditioners", Conditioner, lambda c: c.name)


def watermark_methods(pm: pluggy.PluginManager) -> dict[str, WatermarkMethod]:
    return _collect(pm, "register_watermarks", lambda method: method, lambda m: m.name)


def get_watermark_method(pm: pluggy.PluginManager, name: str) -> WatermarkMethod:
    methods = watermark_methods(pm)
    if name not in methods:
        raise ValidationError(
            "watermark", f"unknown watermark method {name!r}; available: {', '.join(sorted(methods)) or 'none'}"
        )
    return methods[name]


def apply_postprocessors(pm: pluggy.PluginManager, chain: tuple[str, ...], images: list) -> list:
    """Run the named post-processors in order on every image."""
    if not chain:
        return images
    available = postprocessors(pm)
    steps = []
    for item in chain:
        name, _, args = item.partition(":")
        if name not in available:
            raise ValidationError(
                "postprocess", f"unknown post-processor {name!r}; available: {', '.join(sorted(available)) or 'none'}"
            )
        steps.append((available[name], args))
    out = []
    for image in images:
        for processor, args in steps:
            image = processor.function(image, args)
        out.append(image)
    return out
