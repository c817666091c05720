"""``provgen models list``."""

from __future__ import annotations

import json

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.group()
def models() -> None:
    """Models provgen knows by name (shipped, or registered by plugins)."""


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """List named models: name, pipeline class, size, content hash (sha256) and folder."""
    from provgen.core.models import model_content_hash
    from provgen.core.plugins import get_plugin_manager
    from provgen.core.registries import models as registered_models

    settings = settings_from()
    rows = []
    for name, entry in sorted(registered_models(get_plugin_manager()).items()):
        path = entry.item.path
        index = json.loads((path / "model_index.json").read_text())
        files = [p for p in path.rglob("*") if p.is_file()]
        rows.append({
            "name": name,
            "default": name == settings.default_model,
            "pipeline_class": index.get("_class_name"),
            "size_mb": round(sum(p.stat().st_size for p in files) / 2**20, 2),
            "sha256": model_content_hash(path, settings.cache_dir / "model-hashes.json"),
            "path": str(path),
            "plugin": entry.plugin,
            "description": entry.item.description,
            "guidance_scale": entry.item.guidance_scale,
        })
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        mark = " (default)" if row["default"] else ""
        guidance = "" if row["guidance_scale"] is None else f", guidance {row['guidance_scale']:g}"
        click.echo(f"{row['name']}{mark}: {row['pipeline_class']}, {row['size_mb']} MB{guidance}, "
                   f"sha256 {row['sha256']}")
        click.echo(f"    {row['description']}  [{row['path']}]")


COMMANDS = [models]
