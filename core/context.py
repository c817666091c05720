"""State shared by the hooks of one generation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

    from provgen.core.config import Settings
    from provgen.core.models import LoadedModel
    from provgen.core.request import GenerationRequest
    from provgen.core.schedulers import SchedulerSpec
    from provgen.provenance.c2pa_io import Ingredient

__all__ = ["GenerationContext", "ProvenanceContribution"]


@dataclass
class ProvenanceContribution:
    """What a plugin adds to the provenance of one generation (see ``provenance_contribution``)."""

    #: merged into the recipe under ``plugins_data[<plugin name>]`` (JSON-serialisable)
    recipe: dict[str, Any] = field(default_factory=dict)
    #: extra C2PA assertions, ``{"label": ..., "data": ...}``
    assertions: list[dict[str, Any]] = field(default_factory=list)
    #: input images recorded as C2PA ingredients
    ingredients: list[Ingredient] = field(default_factory=list)
    #: C2PA actions this plugin performed (``{"action": "c2pa.edited", ...}``), added after ``c2pa.created``
    #: (or ``c2pa.opened``); ``softwareAgent`` defaults to the plugin; ingredients are referenced by label in
    #: ``parameters.ingredientIds``. provgen writes ``c2pa.created``, ``c2pa.opened`` and ``c2pa.watermarked``.
    actions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GenerationContext:
    """Mutable per-request state handed to generation hooks."""

    request: GenerationRequest
    settings: Settings
    plugin_manager: pluggy.PluginManager
    model: LoadedModel
    pipeline: Any
    scheduler: SchedulerSpec
    #: seeds actually used, one per image
    seeds: list[int]
    width: int
    height: int
    call_arguments: dict[str, Any] = field(default_factory=dict)
    #: free space for plugins to pass state between their own hooks, keyed by plugin name
    scratch: dict[str, Any] = field(default_factory=dict)
    #: wall-clock seconds per stage, filled by the engine and the provenance layer
    timings: dict[str, float] = field(default_factory=dict)
    #: ``content_sha256`` of the request as submitted, before the engine filled in defaults that depend on the
    #: loaded model (the guidance scale): a batch job is recorded under what the job asked for
    submitted_sha256: str | None = None
