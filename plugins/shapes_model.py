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
        # chosen on 100 development prompts (random.Random(5)): guidance 2.5-4 keeps colour, shape and position
        # best for this zero-terminal-SNR model, 7.5 over-saturates (colour 0.77, position 0.90); docs/models/shapes.md
        guidance_scale=3.0,
    )
