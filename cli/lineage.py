"""``provgen lineage``: what an image was made from, or what was made from it."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from provgen.cli._common import emit_json, settings_from

if TYPE_CHECKING:
    from provgen.core.config import Settings
    from provgen.provenance.registry import Registry
    from provgen.provenance.registry.lineage import LineageGraph, LineageNode

__all__ = ["COMMANDS", "lineage", "render_tree"]

FORMATS = ("tree", "json", "prov", "openlineage")
#: same limits as provgen.provenance.registry.lineage (kept here so `provgen --help` imports no database code)
DEFAULT_DEPTH = 10
MAX_DEPTH = 100
_HEX = re.compile(r"[0-9a-f]+")
_PROMPT_EXCERPT = 48
_UNICODE_GLYPHS = {"tee": "├─ ", "last": "└─ ", "pipe": "│  ", "space": "   ", "more": "…", "le": "≤"}
_ASCII_GLYPHS = {"tee": "|- ", "last": "`- ", "pipe": "|  ", "space": "   ", "more": "...", "le": "<="}


@click.command()
@click.argument("target", metavar="ASSET_ID|FILE")
@click.option(
    "--ancestors/--descendants",
    "ancestors",
    default=True,
    help="Walk what it was made from (ancestors, the default) or what was made from it (descendants).",
)
@click.option(
    "--depth",
    type=click.IntRange(1, MAX_DEPTH),
    default=DEFAULT_DEPTH,
    show_default=True,
    help="Hops to walk from ASSET_ID.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="tree (default): an indented tree; json: nodes, edges and generations; prov: a W3C PROV-JSON "
    "document; openlineage: one OpenLineage RunEvent per generation, one JSON object per line.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def lineage(target: str, ancestors: bool, depth: int, fmt: str | None, as_json: bool) -> None:
    """Show the lineage of ASSET_ID or FILE: what it was made from (its ancestors) or, with --descendants,
    what was made from it.

    ASSET_ID is a full asset id or a unique prefix of at least 8 characters. An existing FILE is looked up the
    way `provgen verify` does it (C2PA manifest label, file hash, watermark, perceptual fingerprint); the tree
    says which one found it. See docs/lineage.md for the formats.

    \b
    Examples:
      provgen lineage 3fa2c1d0
      provgen lineage out/3fa2c1d0e5b84c6f9d1a2b3c4d5e6f70.png --depth 3
      provgen lineage 3fa2c1d0 --descendants --json
      provgen lineage 3fa2c1d0 --format prov > lineage.prov.json
    """
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json is short for --format json; it cannot be combined with --format {fmt}")
    fmt = "json" if as_json else (fmt or "tree")
    from provgen.provenance.registry import open_registry
    from provgen.provenance.registry.lineage import lineage as walk

    settings = settings_from()
    registry = open_registry(settings.registry_url, upgrade="blank")
    try:
        root, resolved = _resolve(registry, target, settings)
        graph = walk(registry, root, direction="ancestors" if ancestors else "descendants", depth=depth)
    finally:
        registry.close()
    if fmt == "json":
        emit_json({"resolved": resolved, **graph.to_dict()})
    elif fmt == "prov":
        from provgen.provenance.registry.prov import lineage_to_prov

        emit_json(lineage_to_prov(graph))
    elif fmt == "openlineage":
        from provgen.provenance.registry.prov import lineage_to_openlineage

        for event in lineage_to_openlineage(graph):
            click.echo(json.dumps(event))
    else:
        for line in render_tree(graph, resolved, glyphs=_glyphs()):
            click.echo(line)


def _resolve(registry: Registry, target: str, settings: Settings) -> tuple[str, dict[str, Any]]:
    """(an asset id or prefix, how it was found): an existing file through verify's evidence, else an id."""
    from provgen.core.errors import NotFoundError, ValidationError

    path = Path(target).expanduser()
    if path.is_file():
        from provgen.core.plugins import get_plugin_manager
        from provgen.core.registries import watermark_methods
        from provgen.provenance.trust import trust_anchors_pem
        from provgen.provenance.verify import verify_file

        methods = [entry.item for entry in watermark_methods(get_plugin_manager()).values()]
        report = verify_file(
            path,
            registry=registry,
            methods=methods,
            trust_anchors_pem=trust_anchors_pem(settings),
            max_distance=settings.fingerprint_max_distance,
            max_phash=settings.fingerprint_max_phash,
            max_dhash=settings.fingerprint_max_dhash,
            marking_method=settings.watermark_method,
        )
        if report.asset_id is None:
            why = f" ({report.error})" if report.error else ""
            raise NotFoundError(
                f"`{target}` is not in the registry `{registry.url}`: no C2PA manifest, file hash, watermark or "
                f"fingerprint of it matches a record{why}"
            )
        return report.asset_id, {"input": str(path), "match": report.match, "verdict": report.verdict}
    if path.exists():
        raise ValidationError("ASSET_ID|FILE", f"{str(path)!r} is a directory; give an image file or an asset id")
    if not _HEX.fullmatch(target.strip().lower()):
        raise NotFoundError(
            f"`{target}` is neither an existing file nor an asset id (32 hex characters, or a unique prefix of 8+)"
        )
    return target, {"input": target, "match": "id", "verdict": None}  # resolved (or refused) by the walk


# -- the tree -----------------------------------------------------------------------------------------------


def _glyphs() -> dict[str, str]:
    """Box-drawing characters when stdout can encode them, ASCII otherwise."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "".join(_UNICODE_GLYPHS.values()).encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return _ASCII_GLYPHS
    return _UNICODE_GLYPHS


def render_tree(
    graph: LineageGraph, resolved: dict[str, Any] | None = None, *, glyphs: dict[str, str] = _UNICODE_GLYPHS
) -> list[str]:
    """The lines of an indented tree of ``graph``: a header, the root, then one line per edge walked.

    A node reached again is printed once more with ``(see above)`` instead of its subtree again.
    """
    lines = [_header(graph, resolved, glyphs), _describe(graph.nodes[0], glyphs)]
    by_near: dict[str, list[Any]] = {}
    for edge in graph.edges:
        by_near.setdefault(graph.near_end(edge), []).append(edge)
    shown = {graph.root.id}

    # depth first, with an explicit stack (a long path must not hit Python's recursion limit):
    # (edges from a node, next index, line prefix, whether "more beyond" closes the node)
    stack = [(by_near.get(graph.root.id, []), 0, "", graph.nodes[0].has_more)]
    while stack:
        edges, index, prefix, more = stack[-1]
        if index == len(edges):
            stack.pop()
            if more:
                lines.append(f"{prefix}{glyphs['last']}{glyphs['more']} more beyond --depth {graph.max_depth}")
            continue
        stack[-1] = (edges, index + 1, prefix, more)
        edge = edges[index]
        last = index == len(edges) - 1 and not more
        far = graph.far_end(edge)
        label = f"{prefix}{glyphs['last' if last else 'tee']}{edge.relation}:{edge.role}  "
        if far in shown:
            lines.append(f"{label}{far[:8]}  (see above)")
            continue
        shown.add(far)
        node = graph.node(far)
        lines.append(label + _describe(node, glyphs))
        stack.append((by_near.get(far, []), 0, prefix + glyphs["space" if last else "pipe"], node.has_more))
    if len(graph.nodes) == 1 and not graph.truncated:
        lines.append(f"(no {graph.direction} in the registry)")
    return lines


def _header(graph: LineageGraph, resolved: dict[str, Any] | None, glyphs: dict[str, str]) -> str:
    text = f"{graph.direction} of asset {graph.root.id}"
    if resolved and resolved.get("match") not in (None, "id"):
        text += f", found from {resolved['input']} by {resolved['match']} (verdict: {resolved['verdict']})"
    found = len(graph.nodes) - 1
    noun = graph.direction if found != 1 else graph.direction[:-1]
    return f"{text}; depth {glyphs['le']} {graph.max_depth}: {found} {noun}"


def _describe(node: LineageNode, glyphs: dict[str, str]) -> str:
    asset, generation = node.asset, node.generation
    parts = [asset.id[:8], asset.kind]
    if generation is not None:
        prompt = " ".join(generation.prompt.split())
        if len(prompt) > _PROMPT_EXCERPT:
            prompt = prompt[: _PROMPT_EXCERPT - 1].rstrip() + glyphs["more"]
        parts += [f'"{prompt}"', f"model {_short_model(generation.model_id)}"]
        if asset.seed is not None:
            parts.append(f"seed {asset.seed}")
    else:
        parts.append(asset.path or f"sha256 {asset.sha256[:16]}")
    return "  ".join(parts)


def _short_model(model_id: str) -> str:
    """A local model folder by its name; hub ids as they are."""
    return os.path.basename(model_id.rstrip("/\\")) or model_id if os.path.isabs(model_id) else model_id


COMMANDS = [lineage]
