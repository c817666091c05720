"""Helpers shared by the command modules."""

from __future__ import annotations

import json
from typing import Any

import click

from provgen.core.config import Settings, load_settings

__all__ = ["emit_json", "settings_from", "json_option"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def settings_from(**overrides: Any) -> Settings:
    return load_settings(**overrides)
