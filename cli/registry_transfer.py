"""``provgen registry export`` and ``provgen registry import``."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from provgen.cli._common import emit_json, json_option, settings_from
from provgen.core.errors import RegistryError


@contextmanager
def _output(out: Path | None) -> Iterator[IO[str]]:
    """UTF-8 text to ``out`` (written next to it and renamed into place when complete) or to stdout."""
    if out is None:
        binary = getattr(sys.stdout, "buffer", None)
        if binary is None:  # a text-only stdout (some embedders): write to it as it is
            yield sys.stdout
            return
        sys.stdout.flush()
        stream = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
        try:
            yield stream
        finally:
            stream.flush()
            stream.detach()  # leave stdout open
        return
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as stream:
            yield stream
        os.replace(partial, out)
    except OSError as error:
        raise RegistryError(f"cannot write the export to {out}: {error.strerror or error}") from error
    finally:
        partial.unlink(missing_ok=True)


@click.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "prov"]),
    default="jsonl",
    show_default=True,
    help="jsonl: every record, audit entry and checkpoint (re-importable); prov: one W3C PROV-JSON document.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to FILE instead of stdout (only complete exports appear under this name).",
)
def export(fmt: str, out: Path | None) -> None:
    """Export the whole registry for an auditor (see docs/registry_export.md).

    \b
    Examples:
      provgen registry export --out registry.jsonl
      provgen registry export --format prov --out registry.prov.jsonld
    """
    from provgen.provenance.registry import open_registry

    writer: Callable[[Any, IO[str]], Any]
    if fmt == "prov":
        try:
            from provgen.provenance.registry.prov import write_registry_prov
        except ImportError as error:
            raise RegistryError(f"PROV export is not available in this provgen: {error}") from error
        writer = write_registry_prov
    else:
        from provgen.provenance.registry.transfer import export_jsonl

        writer = export_jsonl
    store = open_registry(settings_from().registry_url, upgrade="blank")
    try:
        with _output(out) as stream:
            writer(store, stream)
    finally:
        store.close()
    if out is not None:
        click.echo(f"exported {store.url} to {out}", err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def import_(file: Path, as_json: bool) -> None:
    """Import FILE, a `provgen registry export` (jsonl), into the registry: all or nothing.

    The registry must be blank, or hold an earlier copy of the same registry (then only what is new is
    added). Refused, with nothing written, if FILE is not an export or is corrupt or truncated, if its audit
    chain does not extend the registry's, if ids collide, or if the audit chain does not verify afterwards.
    """
    from provgen.provenance.registry import open_registry
    from provgen.provenance.registry.transfer import import_jsonl

    store = open_registry(settings_from().registry_url, upgrade="blank")
    try:
        with file.open("rb") as stream:
            result = import_jsonl(store, stream, source=str(file))
    except OSError as error:
        raise RegistryError(f"cannot read {file}: {error.strerror or error}") from error
    finally:
        store.close()
    if as_json:
        emit_json(result.to_dict())
        return
    added = (
        ", ".join(f"{count} {_NAMES[name][count != 1]}" for name, count in result.inserted.items() if count)
        or "nothing new"
    )
    updated = sum(result.updated.values())
    click.echo(f"imported {file} into {store.url}: {added}" + (f"; {updated} records updated" if updated else ""))
    click.echo(
        f"audit chain verified: {result.records_verified} records, head entry {result.head_seq} {result.head_hash}"
    )


#: record type -> (singular, plural)
_NAMES = {
    "generation": ("generation", "generations"),
    "asset": ("asset", "assets"),
    "edge": ("lineage edge", "lineage edges"),
    "verification": ("verification", "verifications"),
    "audit": ("audit entry", "audit entries"),
    "checkpoint": ("checkpoint", "checkpoints"),
}

#: subcommands of ``provgen registry`` defined here
REGISTRY_COMMANDS: list[click.Command] = [export, import_]
