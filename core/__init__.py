"""provgen.core: the engine, hook specifications, plugin manager, requests, results, errors and settings."""

from __future__ import annotations

from provgen.core.config import Settings, load_settings
from provgen.core.context import GenerationContext, ProvenanceContribution
from provgen.core.engine import Engine, generate
from provgen.core.errors import (
    KeyConfigError,
    ModelLoadError,
    PluginError,
    PluginHookError,
    PluginLoadError,
    PolicyRefused,
    ProvgenError,
    RegistryError,
    SigningError,
    ValidationError,
)
from provgen.core.hookspecs import hookimpl
from provgen.core.policy import PolicyDecision
from provgen.core.request import GenerationRequest
from provgen.core.result import GeneratedImage, GenerationResult

__all__ = [
    "Engine",
    "GeneratedImage",
    "GenerationContext",
    "GenerationRequest",
    "GenerationResult",
    "KeyConfigError",
    "ModelLoadError",
    "PluginError",
    "PluginHookError",
    "PluginLoadError",
    "PolicyDecision",
    "PolicyRefused",
    "ProvenanceContribution",
    "ProvgenError",
    "RegistryError",
    "Settings",
    "SigningError",
    "ValidationError",
    "generate",
    "hookimpl",
    "load_settings",
]
