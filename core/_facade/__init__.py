"""provgen: generated images that can prove where they came from.

``provgen.generate(request)``, :class:`provgen.Engine` and ``provgen.batch(requests)`` are the Python API; the
subpackages are ``provgen.core``, ``provgen.plugins``, ``provgen.provenance`` and ``provgen.cli``;
``provgen.testing`` is the pytest plugin for plugin authors' tests (fixtures and a conformance check; not
imported here).
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
from provgen.core.batch import BatchSummary, JobResult, batch

__all__ = ["BatchSummary", "Engine", "GeneratedImage", "GenerationRequest", "GenerationResult", "JobResult",
           "ProvgenError", "batch", "generate", "hookimpl"]
