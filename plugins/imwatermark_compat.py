"""Built-in plugin: invisible-watermark (``imwatermark``) compatible methods, re-implemented in numpy.

Registers ``imwatermark-dwtdct`` and ``imwatermark-dwtdctsvd`` (48-bit id + CRC-16, readable by stock
imwatermark as 8 bytes), and ``imwatermark-rivagan`` only where ``onnxruntime`` and imwatermark's ONNX files are
installed (``pip install --no-deps invisible-watermark onnxruntime``). None of them is the default; choose one
for new images with ``PROVGEN_WATERMARK=imwatermark-dwtdctsvd``. See docs/watermark.md.
"""

from __future__ import annotations

from collections.abc import Callable

from provgen.core.hookspecs import hookimpl

PLUGIN_NAME = "imwatermark-compat"


@hookimpl
def register_watermarks(register: Callable[..., None]) -> None:
    from provgen.provenance.imwatermark_compat import (
        DwtDctSvdWatermark,
        DwtDctWatermark,
        RivaGanWatermark,
        rivagan_available,
    )

    register(DwtDctSvdWatermark())
    register(DwtDctWatermark())
    if rivagan_available():
        register(RivaGanWatermark())
