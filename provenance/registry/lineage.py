"""The lineage graph of an asset: its ancestors (what it was made from) or descendants (what was made from it).

.. code-block:: python

    graph = ancestors(registry, "3fa2c1d0", depth=10)
    for node in graph.nodes:              # the root first (depth 0), then by depth
        print(node.depth, node.asset.id, node.generation and node.generation.prompt)
    for edge in graph.edges:              # parent_id -relation/role-> child_id
        print(edge.parent_id, edge.relation, edge.role, edge.child_id)

Each walk is ONE recursive CTE over ``lineage_edges`` (``select(...).cte(recursive=True)``), which follows the
indexed ``child_id`` (ancestors) or ``parent_id`` (descendants) column one hop per level, on SQLite and
PostgreSQL alike; the root and the assets reached, with their generations, are then loaded with ``IN`` queries
(one per 500 assets, plus one for generations named only by an edge): two queries for a full id, two more to
resolve an id prefix first. No Python loop issues a query per level.

Cycles cannot occur through ``provgen generate`` (an image exists before anything is made from it) but can be
written by hand or by an import. The walk is safe on them: it stops at ``depth`` hops; the CTE is a ``UNION``
(not ``UNION ALL``) of ``(edge, depth)`` rows, so no edge is expanded twice at the same depth and the work is
bounded by (edges reached x depth) however the paths cross; an edge that leads back to the root is reported
but the root is never walked again. The result lists every node and edge once, at the smallest depth at which
the walk reached it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Integer, Select, String, bindparam, case, exists, false, literal_column, select
from sqlalchemy.orm import Session, defer, joinedload, raiseload

from provgen.core.errors import NotFoundError, ValidationError
from provgen.provenance.registry.models import Asset, Generation, LineageEdge
from provgen.provenance.registry.store import generation_fields

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, FromClause

    from provgen.provenance.registry.store import Registry

__all__ = [
    "DEFAULT_DEPTH",
    "DIRECTIONS",
    "MAX_DEPTH",
    "GraphEdge",
    "LineageGraph",
    "LineageNode",
    "ancestors",
    "descendants",
    "lineage",
    "walk_statement",
]

Direction = Literal["ancestors", "descendants"]
DIRECTIONS: tuple[Direction, ...] = ("ancestors", "descendants")
#: hops walked when no depth is given
DEFAULT_DEPTH = 10
#: the deepest walk allowed
MAX_DEPTH = 100
#: ids per ``IN (...)`` when loading the assets reached
_IN_CHUNK = 500
_FULL_ID = re.compile(r"[0-9a-f]{32}")
#: edge order within a level: the edited image first, then conditioning inputs, then components
_RELATION_ORDER = {"parentOf": 0, "inputTo": 1, "componentOf": 2}


@dataclass(frozen=True)
class GraphEdge:
    """One lineage edge reached by a walk: ``parent`` was used (``relation``, ``role``) to make ``child``."""

    id: str
    parent_id: str
    child_id: str
    relation: str
    role: str
    #: the generation that used ``parent`` to make ``child`` (None on hand-made edges)
    generation_id: str | None
    #: hops from the root to the far end of this edge (1: the edge touches the root)
    depth: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "child_id": self.child_id,
            "relation": self.relation,
            "role": self.role,
            "generation_id": self.generation_id,
            "depth": self.depth,
        }


@dataclass(frozen=True)
class LineageNode:
    """One asset of a lineage graph.

    ``asset`` is detached and loaded without its manifest bytes (``manifest_store``) and with its generation
    but not the generation's other images (``generation.assets``); touching either raises (the root too, unless
    it was given as an :class:`Asset` or found by an id prefix). ``registry.get_asset(id)`` has everything.
    """

    asset: Asset
    #: hops from the root (0 for the root itself)
    depth: int
    #: the asset has more lineage beyond the depth limit, not walked
    has_more: bool = False

    @property
    def id(self) -> str:
        return self.asset.id

    @property
    def generation(self) -> Generation | None:
        return self.asset.generation

    def to_dict(self) -> dict[str, Any]:
        asset = self.asset
        return {
            "id": asset.id,
            "kind": asset.kind,
            "depth": self.depth,
            "has_more": self.has_more,
            "generation_id": asset.generation_id,
            "batch_index": asset.batch_index,
            "seed": asset.seed,
            "sha256": asset.sha256,
            "watermark_id": f"{asset.watermark_id:012x}" if asset.watermark_id is not None else None,
            "format": asset.format,
            "width": asset.width,
            "height": asset.height,
            "size_bytes": asset.size_bytes,
            "path": asset.path,
            "manifest_label": asset.manifest_label,
            "created_at": _iso(asset.created_at),
        }


@dataclass
class LineageGraph:
    """The result of a walk: the root, the assets reached, the edges between them and their generations."""

    root: Asset
    direction: Direction
    #: the depth limit the walk ran with
    max_depth: int
    #: the root first, then by depth and id
    nodes: list[LineageNode]
    #: by depth, then relation, role and ids
    edges: list[GraphEdge]
    #: every generation of a node or named by an edge, by id
    generations: dict[str, Generation]
    _by_id: dict[str, LineageNode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {node.id: node for node in self.nodes}

    def node(self, asset_id: str) -> LineageNode:
        """The node of ``asset_id`` (a full id); :class:`KeyError` if the walk did not reach it."""
        return self._by_id[asset_id]

    def __contains__(self, asset_id: object) -> bool:
        return asset_id in self._by_id

    @property
    def asset_ids(self) -> set[str]:
        """The ids of every node, the root included."""
        return set(self._by_id)

    @property
    def truncated(self) -> bool:
        """Some node has lineage beyond the depth limit."""
        return any(node.has_more for node in self.nodes)

    def near_end(self, edge: GraphEdge) -> str:
        """The end of ``edge`` nearer the root (the child when walking ancestors)."""
        return edge.child_id if self.direction == "ancestors" else edge.parent_id

    def far_end(self, edge: GraphEdge) -> str:
        """The end of ``edge`` farther from the root (the parent when walking ancestors)."""
        return edge.parent_id if self.direction == "ancestors" else edge.child_id

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: root, direction, depth, truncated, nodes, edges, generations (times in ISO 8601 UTC)."""
        return {
            "root": self.root.id,
            "direction": self.direction,
            "depth": self.max_depth,
            "truncated": self.truncated,
            "nodes": [node.to_dict() for node in self.nodes],
            "edges": [edge.to_dict() for edge in self.edges],
            "generations": [generation_fields(g) for g in sorted(self.generations.values(), key=_by_time)],
        }


def _by_time(generation: Generation) -> tuple[datetime, str]:
    return generation.created_at, generation.id


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# -- queries ----------------------------------------------------------------------------------------------


def ancestors(registry: Registry, asset: str | Asset, *, depth: int = DEFAULT_DEPTH) -> LineageGraph:
    """What ``asset`` was made from, up to ``depth`` hops; see :func:`lineage`."""
    return lineage(registry, asset, direction="ancestors", depth=depth)


def descendants(registry: Registry, asset: str | Asset, *, depth: int = DEFAULT_DEPTH) -> LineageGraph:
    """What was made from ``asset``, up to ``depth`` hops; see :func:`lineage`."""
    return lineage(registry, asset, direction="descendants", depth=depth)


def lineage(
    registry: Registry, asset: str | Asset, *, direction: Direction = "ancestors", depth: int = DEFAULT_DEPTH
) -> LineageGraph:
    """The ancestors or descendants of ``asset`` (an :class:`Asset`, its id or a unique id prefix).

    :param depth: hops to walk, 1..:data:`MAX_DEPTH`; nodes with more lineage beyond it get ``has_more``.
    :raises NotFoundError: no such asset (or an ambiguous prefix).
    :raises ValidationError: a bad ``direction`` or ``depth``.
    :raises RegistryError: the registry could not be read.
    """
    if direction not in DIRECTIONS:
        raise ValidationError("direction", f"must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValidationError("depth", f"must be an integer in 1..{MAX_DEPTH}, got {depth!r}")
    root: Asset | None = None
    if isinstance(asset, str):
        root_id = asset.strip().lower()
        if not _FULL_ID.fullmatch(root_id):  # a prefix: resolved (or refused) first
            root = registry.get_asset(asset)
            root_id = root.id
    else:
        root, root_id = asset, asset.id

    def read(session: Session) -> tuple[Asset, list[GraphEdge], dict[str, int], set[str], dict[str, Asset], dict]:
        rows = session.execute(walk_statement(direction), {"root_id": root_id, "depth": depth}).all()
        edges, node_depth, flagged = _collect(rows, root_id, direction)
        # a full id is checked here, loaded with the others: two queries in all
        assets = _load_assets(session, [key for key in node_depth if root is None or key != root_id])
        start = root if root is not None else assets.pop(root_id, None)
        if start is None:
            raise NotFoundError(f"no asset `{asset}` in the registry `{registry.url}`")
        generations = {a.generation.id: a.generation for a in (start, *assets.values()) if a.generation is not None}
        missing = sorted({e.generation_id for e in edges if e.generation_id is not None} - generations.keys())
        if missing:  # only edges whose generation is not their child's (hand-made data)
            stmt = select(Generation).where(Generation.id.in_(missing)).options(raiseload(Generation.assets))
            generations.update((g.id, g) for g in session.scalars(stmt))
        return start, edges, node_depth, flagged, assets, generations

    # autocommit reads without a ping (see Registry.read): two statements, no BEGIN/ROLLBACK round trips
    root, edges, node_depth, flagged, assets, generations = registry.read(
        "reading the lineage of an asset from the registry", read
    )
    nodes = [LineageNode(root, 0, False)]
    for asset_id in sorted(node_depth, key=lambda key: (node_depth[key], key)):
        if asset_id != root.id and asset_id in assets:
            level = node_depth[asset_id]
            nodes.append(LineageNode(assets[asset_id], level, asset_id in flagged and level == depth))
    edges.sort(key=lambda e: (e.depth, _RELATION_ORDER.get(e.relation, 9), e.role, e.child_id, e.parent_id, e.id))
    return LineageGraph(
        root=root, direction=direction, max_depth=depth, nodes=nodes, edges=edges, generations=generations
    )


@cache
def walk_statement(direction: Direction) -> Select[Any]:
    """The one recursive query of a walk, with the parameters ``root_id`` and ``depth``: rows of
    ``lineage_edges`` columns plus ``depth`` and ``has_more``, once per ``(edge, depth)``, ordered by depth.

    ``has_more`` is true on rows at the depth limit whose far end has edges not walked. Built once per
    direction (building it costs more than running it on an indexed registry):
    ``session.execute(walk_statement("ancestors"), {"root_id": asset_id, "depth": 10})``.
    """
    if direction not in DIRECTIONS:
        raise ValidationError("direction", f"must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    table = LineageEdge.__table__
    root_id, depth = bindparam("root_id", type_=String()), bindparam("depth", type_=Integer())

    def columns(edges: FromClause) -> tuple[ColumnElement[Any], ...]:
        c = edges.c
        return c.id, c.parent_id, c.child_id, c.relation, c.role, c.generation_id

    def near(edges: FromClause) -> ColumnElement[Any]:
        return edges.c.child_id if direction == "ancestors" else edges.c.parent_id

    def far(edges: FromClause) -> ColumnElement[Any]:
        return edges.c.parent_id if direction == "ancestors" else edges.c.child_id

    seed = select(*columns(table), literal_column("1").label("depth")).where(near(table) == root_id)
    walk = seed.cte("lineage_walk", recursive=True)
    step = table.alias("step")
    walk = walk.union(
        select(*columns(step), (walk.c.depth + literal_column("1")).label("depth"))
        .select_from(step.join(walk, near(step) == far(walk)))
        .where(walk.c.depth < depth, far(walk) != root_id)  # never walk the root again
    )
    beyond = table.alias("beyond")
    has_more = case((walk.c.depth >= depth, exists().where(near(beyond) == far(walk))), else_=false())
    return select(*columns(walk), walk.c.depth, has_more.label("has_more")).order_by(walk.c.depth, walk.c.id)


def _collect(
    rows: Sequence[Any], root_id: str, direction: Direction
) -> tuple[list[GraphEdge], dict[str, int], set[str]]:
    """(edges at their smallest depth, node id -> smallest depth, node ids flagged ``has_more``)."""
    edges: dict[str, GraphEdge] = {}
    node_depth = {root_id: 0}
    flagged: set[str] = set()
    for row in rows:  # ordered by depth: the first sighting is the shallowest
        if row.id not in edges:
            edges[row.id] = GraphEdge(
                row.id, row.parent_id, row.child_id, row.relation, row.role, row.generation_id, row.depth
            )
        far = row.parent_id if direction == "ancestors" else row.child_id
        node_depth.setdefault(far, row.depth)
        if row.has_more:
            flagged.add(far)
    return list(edges.values()), node_depth, flagged


def _load_assets(session: Session, ids: Sequence[str]) -> dict[str, Asset]:
    """The assets ``ids`` with their generations (joined), without manifest bytes or generation siblings."""
    found: dict[str, Asset] = {}
    for chunk in _chunks(ids, _IN_CHUNK):
        found.update((a.id, a) for a in session.scalars(_assets_statement(), {"ids": list(chunk)}))
    return found


@cache
def _assets_statement() -> Select[Any]:
    return (
        select(Asset)
        .where(Asset.id.in_(bindparam("ids", expanding=True)))
        .options(defer(Asset.manifest_store, raiseload=True), joinedload(Asset.generation).raiseload(Generation.assets))
    )


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
