"""provgen: generated images that can prove where they came from.

``provgen.generate(request)`` and :class:`provgen.Engine` are the Python API; the subpackages are
``provgen.core``, ``provgen.plugins``, ``provgen.provenance`` and ``provgen.cli``; ``provgen.testing`` is the
pytest plugin for plugin authors' tests (fixtures and a conformance check; not imported here).
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
