"""Name -> thing registries filled by the ``register_*`` hooks.

Each registry remembers which plugin registered each entry, so a failure inside an entry (a post-processor,
a watermark method) is reported against that plugin. Registries are rebuilt when the set of registered
plugins changes, so a plugin registered late is still seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from provgen.core.errors import PluginError, PluginHookError, ProvgenError, ValidationError

if TYPE_CHECKING:
    from PIL import Image


__all__ = [
    "PostProcessor",
    "Conditioner",
    "Registered",
    "collect",
    "postprocessors",
    "conditioners",
    "models",
    "ModelEntry",
    "watermark_methods",
    "get_watermark_method",
    "resolve_postprocessors",
    "apply_postprocessors",
    "check_plugin_options",
    "MIN_WATERMARK_BITS",
]

MIN_WATERMARK_BITS = 48  # registry watermark ids are 48-bit


@dataclass(frozen=True)
class PostProcessor:
    name: str
    function: Callable[[Image.Image, str], Image.Image]
    description: str = ""
    version: str | None = None
    #: ``validate(args)`` raises ValidationError or ValueError for bad ``args`` (called before the model loads)
    validate: Callable[[str], None] | None = None


#: guidance scale of a request that names none, for a model that registers no scale of its own (diffusers' default)
DEFAULT_GUIDANCE = 7.5


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    description: str = ""
    #: classifier-free guidance scale a request gets when it names none (``None``: the engine's 7.5)
    guidance_scale: float | None = None


@dataclass(frozen=True)
class Conditioner:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Registered:
    """One registry entry and the plugin that registered it."""

    item: Any
    plugin: str


def _plugin_set(pm: pluggy.PluginManager) -> tuple[str, ...]:
    return tuple(sorted(name for name, _ in pm.list_name_plugin()))


def collect(pm: pluggy.PluginManager, hook: str, make: Callable[..., Any],
            key: Callable[[Any], str]) -> dict[str, Registered]:
    """Call ``hook`` on each plugin with a ``register`` callback; cache until the plugin set changes."""
    caches = pm.__dict__.setdefault("provgen_registries", {})
    plugin_set = _plugin_set(pm)
    cached = caches.get(hook)
    if cached is not None and cached[0] == plugin_set:
        return cached[1]
    items: dict[str, Registered] = {}
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        plugin = impl.plugin_name

        def register(*args: Any, _plugin: str = plugin, **kwargs: Any) -> None:
            try:
                item = make(*args, **kwargs)
            except TypeError as error:
                raise PluginHookError(_plugin, hook, error) from error
            name = key(item)
            if name in items:
                raise PluginError(f"`{name}` is registered twice in hook `{hook}`, by plugins "
                                  f"`{items[name].plugin}` and `{_plugin}`; rename one of them")
            items[name] = Registered(item, _plugin)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except ProvgenError:
            raise
        except Exception as error:
            raise PluginHookError(plugin, hook, error) from error
    caches[hook] = (plugin_set, items)
    return items


def postprocessors(pm: pluggy.PluginManager) -> dict[str, Registered]:
    return collect(pm, "register_postprocessors", PostProcessor, lambda p: p.name)


def models(pm: pluggy.PluginManager) -> dict[str, Registered]:
    """Models registered by name (``register_models``)."""
    return collect(pm, "register_models", _model_entry, lambda m: m.name)


def _model_entry(name: str, path: str | Path, description: str = "", guidance_scale: float | None = None) -> ModelEntry:
    """The ``register`` signature of ``register_models``."""
    if guidance_scale is not None and (isinstance(guidance_scale, bool) or not 0 <= float(guidance_scale) <= 100):
        raise ValueError(f"guidance_scale of model {name!r} must be a number from 0 to 100, got {guidance_scale!r}")
    return ModelEntry(name, Path(path), description, None if guidance_scale is None else float(guidance_scale))


def recommended_guidance(pm: pluggy.PluginManager, model: str, path: Path) -> float:
    """The guidance scale for a request that names none: the registered model's (by name, or by its folder when
    the request gave the path), else :data:`DEFAULT_GUIDANCE`."""
    entries = [r.item for r in models(pm).values()]
    for entry in [e for e in entries if e.name == model] + [e for e in entries if e.path.resolve() == path.resolve()]:
        if entry.guidance_scale is not None:
            return entry.guidance_scale
    return DEFAULT_GUIDANCE


def conditioners(pm: pluggy.PluginManager) -> dict[str, Registered]:
    return collect(pm, "register_conditioners", Conditioner, lambda c: c.name)


def watermark_methods(pm: pluggy.PluginManager) -> dict[str, Registered]:
    return collect(pm, "register_watermarks", lambda method: method, lambda m: m.name)


def get_watermark_method(pm: pluggy.PluginManager, name: str) -> Registered:
    """The method used to mark new images; it must carry a 48-bit registry id."""
    methods = watermark_methods(pm)
    if name not in methods:
        raise ValidationError(
            "watermark", f"unknown watermark method {name!r}; available: {', '.join(sorted(methods)) or 'none'}"
        )
    entry = methods[name]
    if getattr(entry.item, "payload_bits", 0) < MIN_WATERMARK_BITS:
        raise PluginHookError(entry.plugin, "register_watermarks", ValueError(
            f"watermark {name!r} carries {getattr(entry.item, 'payload_bits', 0)} bits; "
            f"new images need at least {MIN_WATERMARK_BITS}"))
    return entry


def resolve_postprocessors(pm: pluggy.PluginManager, chain: tuple[str, ...]) -> list[tuple[Registered, str]]:
    """``[(entry, args)]`` for ``NAME[:ARGS]`` items; unknown names are a ValidationError listing the valid ones,
    bad arguments (the post-processor's ``validate``) a ValidationError naming the ``--post`` item."""
    available = postprocessors(pm)
    steps = []
    for item in chain:
        name, _, args = item.partition(":")
        if name not in available:
            raise ValidationError(
                "postprocess", f"`--post {item}`: unknown post-processor {name!r}; "
                f"available: {', '.join(sorted(available)) or 'none'}"
            )
        entry = available[name]
        if entry.item.validate is not None:
            try:
                entry.item.validate(args)
            except (ValidationError, ValueError) as error:
                why = str(error).split(": ", 1)[1] if isinstance(error, ValidationError) else str(error)
                raise ValidationError("postprocess", f"`--post {item}`: {why}") from error
            except ProvgenError:
                raise
            except Exception as error:
                raise PluginHookError(entry.plugin, f"post-processor {name!r} validate", error) from error
        steps.append((entry, args))
    return steps


def apply_postprocessors(pm: pluggy.PluginManager, chain: tuple[str, ...], images: list) -> list:
    """Run the named post-processors in order on every image; failures name the plugin."""
    steps = resolve_postprocessors(pm, chain)
    out = []
    for image in images:
        for entry, args in steps:
            try:
                image = entry.item.function(image, args)
            except ProvgenError:
                raise
            except Exception as error:
                raise PluginHookError(entry.plugin, f"post-processor {entry.item.name!r}", error) from error
        out.append(image)
    return out


def check_plugin_options(pm: pluggy.PluginManager, options: Mapping[str, Any]) -> None:
    """Every key of ``request.plugin_options`` must name a registered conditioner."""
    if not options:
        return
    available = conditioners(pm)
    for name in options:
        if name not in available:
            raise ValidationError("plugin_options", f"no conditioner named {name!r}; installed: "
                                                    f"{', '.join(sorted(available)) or 'none'}")
