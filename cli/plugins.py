"""``provgen plugins list`` and ``provgen schedulers list``."""

from __future__ import annotations

import click

from provgen.cli._common import emit_json, json_option


@click.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@json_option
def plugins_list(as_json: bool) -> None:
    """List plugins: name, version, distribution, hooks, enabled."""
    from provgen.core.plugins import get_plugin_manager, plugin_infos

    infos = plugin_infos(get_plugin_manager())
    if as_json:
        emit_json([info.to_dict() for info in infos])
        return
    for info in infos:
        state = "builtin" if info.builtin else ("enabled" if info.enabled else "disabled")
        click.echo(f"{info.name} {info.version} ({info.distribution}, {state}): {', '.join(info.hooks) or '-'}")


@click.group()
def schedulers() -> None:
    """Inspect noise schedulers."""


@schedulers.command("list")
@click.option("--model", "-m", default=None,
              help="Model name, folder or cached hub id (default: PROVGEN_MODEL, else `shapes`).")
@json_option
def schedulers_list(model: str | None, as_json: bool) -> None:
    """List the schedulers that work with MODEL, by short name and by class name."""
    from provgen.core.engine import Engine

    engine = Engine(progress=False, device="cpu", dtype="float32")
    model = model or engine.settings.default_model
    if model is None:
        raise click.UsageError("Missing option '--model' (or set PROVGEN_MODEL).")
    choices = engine.schedulers(model)
    rows = [{"name": name, "class": c.spec.class_name, "config": c.spec.config,
             "description": c.spec.description, "available": c.available, "reason": c.reason}
            for name, c in sorted(choices.items(), key=lambda item: (item[0] != item[0].lower(), item[0]))]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        note = "" if row["available"] else f"  [unavailable: {row['reason']}]"
        click.echo(f"{row['name']:<24} {row['class']:<34} {row['description']}{note}")


COMMANDS = [plugins, schedulers]
