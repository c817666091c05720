"""Built-in plugin: registers the small text-to-image model shipped with provgen as ``shapes``."""

from __future__ import annotations

from collections.abc import Callable

from provgen.core.hookspecs import hookimpl

PLUGIN_NAME = "shapes-model"


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    from provgen.plugins.shapes import MODEL_DIR

    register(
        "shapes",
        MODEL_DIR,
        description="provgen's own small model: coloured shapes on coloured backgrounds (see docs/models/shapes.md)",
    )
