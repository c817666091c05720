"""provgen: generated images that can prove where they came from.

``provgen.generate(request)`` and :class:`provgen.Engine` are the Python API; the subpackages are
``provgen.core``, ``provgen.plugins``, ``provgen.provenance`` and ``provgen.cli``.
"""

from __future__ import annotations

from provgen.core import (
    Engine,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProvgenError,
    generate,
    hookimpl,
)

__all__ = ["Engine", "GeneratedImage", "GenerationRequest", "GenerationResult", "ProvgenError", "generate",
           "hookimpl"]
