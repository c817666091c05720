"""Built-in plugin: the default invisible watermark, ``provgen-wm/1`` (numpy, no model downloads).

It survives crops as well as re-encoding and resizing (see docs/watermark.md). The older ``provgen-grid/1``
stays registered by ``provgen.plugins.grid_watermark`` so that images marked with it still verify.
"""

from __future__ import annotations

from collections.abc import Callable

from provgen.core.hookspecs import hookimpl

PLUGIN_NAME = "wm1-watermark"


@hookimpl
def register_watermarks(register: Callable[..., None]) -> None:
    from provgen.provenance.wm1 import RobustWatermark

    register(RobustWatermark())
