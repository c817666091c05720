"""``provgen registry search`` (placeholder: filled in by the search work)."""

from __future__ import annotations

#: subcommands of ``provgen registry`` defined here
REGISTRY_COMMANDS: list = []
