"""``provgen registry``."""

from __future__ import annotations

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.group()
def registry() -> None:
    """Query the lineage registry (PROVGEN_REGISTRY_URL)."""


@registry.command("show")
@click.argument("asset_id")
@json_option
def show(asset_id: str, as_json: bool) -> None:
    """Show the record of ASSET_ID (full id or a unique prefix of 8+ characters)."""
    from provgen.provenance.registry import open_registry

    store = open_registry(settings_from().registry_url, upgrade="blank")
    try:
        summary = store.asset_summary(store.get_asset(asset_id))
    finally:
        store.close()
    if as_json:
        emit_json(summary)
        return
    _print_tree(summary)


def _print_tree(data: dict, indent: int = 0) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{' ' * indent}{key}:")
            _print_tree(value, indent + 2)
        else:
            click.echo(f"{' ' * indent}{key}: {value}")


def _attach_subcommands() -> None:
    """Subcommands that live in their own modules (one job each)."""
    from provgen.cli import registry_audit, registry_search, registry_transfer

    for module in (registry_audit, registry_search, registry_transfer):
        for command in module.REGISTRY_COMMANDS:
            registry.add_command(command)


_attach_subcommands()

COMMANDS = [registry]
