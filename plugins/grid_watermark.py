"""Built-in plugin: the default invisible watermark, ``provgen-grid/1`` (numpy, no model downloads)."""

from __future__ import annotations

from collections.abc import Callable

from provgen.core.hookspecs import hookimpl

PLUGIN_NAME = "grid-watermark"


@hookimpl
def register_watermarks(register: Callable[..., None]) -> None:
    from provgen.provenance.watermark import GridWatermark

    register(GridWatermark())
