"""``provgen registry export`` and ``import`` (placeholder: filled in by the export work)."""

from __future__ import annotations

#: subcommands of ``provgen registry`` defined here
REGISTRY_COMMANDS: list = []
