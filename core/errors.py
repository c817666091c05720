"""The one error hierarchy of provgen.

Every error a user can cause or fix is a :class:`ProvgenError`. The CLI maps these to click errors in one
place (``provgen.cli.main``) so users never see a traceback for them. Messages name the bad argument in
backticks and say what to do.
"""

from __future__ import annotations

__all__ = [
    "ProvgenError",
    "ValidationError",
    "ModelLoadError",
    "PluginError",
    "PluginLoadError",
    "PluginHookError",
    "RegistryError",
    "NotFoundError",
    "JobAlreadyDone",
    "KeyConfigError",
    "SigningError",
    "WatermarkError",
    "InputImageError",
    "PolicyRefused",
    "ReattachError",
    "OutputError",
]


class ProvgenError(Exception):
    """Base class of every error provgen raises on purpose."""

    #: process exit status the CLI uses for this error (2 = usage error, 1 = failure)
    exit_code: int = 1


class ValidationError(ProvgenError):
    """A request or argument is invalid; the message names the field and what to do."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"`{field}`: {message}")


class ModelLoadError(ProvgenError):
    """A model could not be found or loaded."""

    exit_code = 2


class PluginError(ProvgenError):
    """Base class for plugin problems."""


class PluginLoadError(PluginError):
    """A plugin could not be imported or registered; the plugin is named in the message."""


class PluginHookError(PluginError):
    """A plugin raised while one of its hooks ran; names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        self.plugin, self.hook, self.error = plugin, hook, error
        super().__init__(f"plugin `{plugin}` failed in hook `{hook}`: {type(error).__name__}: {error}")


class RegistryError(ProvgenError):
    """The lineage registry cannot be reached, is at the wrong schema, or refused a write."""


class JobAlreadyDone(RegistryError):
    """A generation was about to be registered under a batch job key that is already done (another run, or a
    run before a crash, committed it first); nothing of this one was written."""

    def __init__(self, job_key: str, generation_id: str | None = None) -> None:
        self.job_key, self.generation_id = job_key, generation_id
        by = f" by generation {generation_id}" if generation_id else ""
        super().__init__(f"job `{job_key}` is already done{by}; nothing was written")


class NotFoundError(ProvgenError):
    """A record that was asked for does not exist."""


class KeyConfigError(ProvgenError):
    """Signing keys or certificates are missing, unreadable or unsuitable for C2PA."""

    exit_code = 2


class SigningError(ProvgenError):
    """C2PA signing failed."""


class WatermarkError(ProvgenError):
    """A watermark could not be embedded (e.g. image too small) or a method is unknown."""


class InputImageError(ProvgenError):
    """A file given as an image is missing, corrupt or not an image."""


class PolicyRefused(ProvgenError):
    """A policy plugin refused the request (hook ``check_policy``); the refusal is recorded in the registry."""

    exit_code = 3

    def __init__(self, plugin: str, reason: str, refusal_id: str | None = None) -> None:
        self.plugin, self.reason, self.refusal_id = plugin, reason, refusal_id
        recorded = f" (recorded as refusal {refusal_id})" if refusal_id else ""
        super().__init__(f"refused by policy plugin `{plugin}`: {reason}{recorded}")


class ReattachError(ProvgenError):
    """``verify --reattach`` cannot re-attach a manifest to this file (nothing was written)."""

    exit_code = 2


class OutputError(ProvgenError):
    """An output file could not be written (disk full, file too large, no permission); nothing of the generation
    was kept: no file, no record."""
