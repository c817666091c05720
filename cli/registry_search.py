"""``provgen registry search``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from provgen.cli._common import emit_json, json_option, settings_from

_VERDICTS = ("verified", "recovered", "tampered", "unknown")
_KINDS = ("generated", "external")


class _When(click.ParamType):
    """An ISO 8601 date or datetime, UTC when naive; a bad value is a usage error naming the option.

    As an upper bound (``upper=True``) it converts to the first instant *after* the range: the next midnight
    for a bare date (the whole day is included), one microsecond later for a datetime (inclusive).
    """

    name = "DATE"

    def __init__(self, *, upper: bool = False) -> None:
        self.upper = upper

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        from provgen.provenance.registry.search import parse_when

        try:
            return parse_when(str(value), upper=self.upper)
        except ValueError as error:
            self.fail(str(error), param, ctx)


@click.command("search")
@click.option("--prompt", metavar="TEXT", help="Prompt contains TEXT (case-insensitive).")
@click.option("--model", metavar="TEXT", help="Model id (exact), or a prefix of the weights' sha256 (6+ hex).")
@click.option("--plugin", metavar="NAME", help="The plugin NAME took part in the generation.")
@click.option("--user", metavar="NAME", help="Requested by NAME.")
@click.option("--since", type=_When(), help="Created at or after DATE (ISO 8601; UTC unless an offset is given).")
@click.option(
    "--until", type=_When(upper=True), help="Created at or before DATE (a bare date includes that whole day)."
)
@click.option("--verdict", type=click.Choice(_VERDICTS), help="Verdict of the asset's latest recorded verification.")
@click.option("--kind", type=click.Choice(_KINDS), help="Generated images or external input images.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N", help="At most N assets."
)
@json_option
def search(
    prompt: str | None,
    model: str | None,
    plugin: str | None,
    user: str | None,
    since: datetime | None,
    until: datetime | None,
    verdict: str | None,
    kind: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Find assets in the registry; every filter given must match. Newest first.

    \b
    Examples:
      provgen registry search --prompt lighthouse --since 2026-05-01
      provgen registry search --verdict tampered --json
      provgen registry search --plugin grid-watermark --user alice --limit 10
    """
    from provgen.provenance.registry import open_registry
    from provgen.provenance.registry.search import SearchFilters, search_assets

    if since is not None and until is not None and since >= until:
        raise click.UsageError("--since is after --until: nothing can match")
    filters = SearchFilters(
        prompt=prompt,
        model=model,
        plugin=plugin,
        user=user,
        since=since,
        before=until,
        verdict=verdict,
        kind=kind,
        limit=limit,
    )
    store = open_registry(settings_from().registry_url, upgrade="blank")
    try:
        hits = search_assets(store, filters)
    finally:
        store.close()
    if as_json:
        emit_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        click.echo("no matching assets", err=True)
        return
    _print_table(hits)


def _print_table(hits: list[Any]) -> None:
    rows = [
        (
            hit.id[:12],
            hit.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _excerpt(hit.model_id or ("(external)" if hit.kind == "external" else "-"), 32),
            _excerpt(hit.prompt or (hit.path or "-") if hit.kind == "external" else hit.prompt or "-", 48),
            hit.verdict or "-",
        )
        for hit in hits
    ]
    header = ("ID", "CREATED (UTC)", "MODEL", "PROMPT", "VERDICT")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _excerpt(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


#: subcommands of ``provgen registry`` defined here
REGISTRY_COMMANDS: list[click.Command] = [search]
