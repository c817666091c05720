"""``provgen lineage`` (placeholder: filled in by the lineage work)."""

from __future__ import annotations

COMMANDS: list = []
