"""Helpers shared by the command modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from provgen.core.config import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["emit_json", "settings_from", "json_option", "signing_options"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def signing_options(command: F) -> F:
    """``--cert``/``--key``: an organisation's signing identity instead of the development keys."""
    command = click.option("--key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Private key (PEM) for --cert.")(command)
    return click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="Signing certificate chain (PEM, leaf first) instead of the development keys.")(command)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def settings_from(**overrides: Any) -> Settings:
    return load_settings(**overrides)
