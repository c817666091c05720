"""Lineage as W3C PROV-JSON and OpenLineage RunEvents.

* :func:`lineage_to_prov`: a :class:`~provgen.provenance.registry.lineage.LineageGraph` as one PROV-JSON
  document (https://www.w3.org/Submission/prov-json/);
* :func:`write_registry_prov`: the whole registry as one PROV-JSON document, streamed section by section;
* :func:`lineage_to_openlineage`: one ``COMPLETE`` OpenLineage RunEvent per generation of a graph
  (https://openlineage.io/spec, schema 2-0-2).

The PROV mapping: every asset is an ``entity`` ``provgen:asset/<id>``; every generation an ``activity``
``provgen:generation/<id>``; the requester an ``agent`` ``provgen:agent/<requester>`` and provgen itself a
``prov:SoftwareAgent`` ``provgen:software/provgen/<version>``, both ``wasAssociatedWith`` the generation;
``wasGeneratedBy`` links an image to its generation; each lineage edge is a ``used`` (the generation used the
parent, with ``prov:role``) and, for ``parentOf`` edges (the image edited) or edges with no generation, also a
``wasDerivedFrom`` (child from parent). The namespace ``provgen`` is ``urn:provgen:``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError

from provgen.provenance.registry import db
from provgen.provenance.registry.models import Asset, Generation, LineageEdge

if TYPE_CHECKING:
    from provgen.provenance.registry.lineage import LineageGraph
    from provgen.provenance.registry.store import Registry

__all__ = [
    "PROVGEN_NAMESPACE",
    "OPENLINEAGE_NAMESPACE",
    "OPENLINEAGE_SCHEMA_URL",
    "lineage_to_prov",
    "lineage_to_openlineage",
    "write_registry_prov",
    "asset_qname",
    "generation_qname",
    "run_id",
]

#: the namespace URI of the ``provgen:`` prefix in PROV documents
PROVGEN_NAMESPACE = "urn:provgen:"
#: PROV-JSON sections in the order they are written
SECTIONS = ("entity", "activity", "agent", "wasGeneratedBy", "used", "wasDerivedFrom", "wasAssociatedWith")
#: OpenLineage: the namespace of provgen's jobs and datasets
OPENLINEAGE_NAMESPACE = "provgen"
OPENLINEAGE_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
#: OpenLineage: where provgen's custom facets are described (docs/lineage.md; no schema is published)
FACET_SCHEMA_URL = "urn:provgen:openlineage:facets:1#/$defs/"
#: rows fetched per round trip when streaming the whole registry
_STREAM_BATCH = 2000

Record = tuple[str, str, dict[str, Any]]  # (section, id, attributes)


# -- ids and values -----------------------------------------------------------------------------------------


def asset_qname(asset_id: str) -> str:
    """The PROV id of an asset: ``provgen:asset/<id>``."""
    return f"provgen:asset/{asset_id}"


def generation_qname(generation_id: str) -> str:
    """The PROV id of a generation: ``provgen:generation/<id>``."""
    return f"provgen:generation/{generation_id}"


def requester_qname(requester: str) -> str:
    """The PROV id of a requester: ``provgen:agent/<requester, percent-encoded>``."""
    return f"provgen:agent/{quote(requester, safe='@.-_~') or '%20'}"


def software_qname(version: str | None) -> str:
    """The PROV id of the provgen release that made a generation."""
    return f"provgen:software/provgen/{quote(version, safe='.-_~+')}" if version else "provgen:software/provgen"


def run_id(generation_id: str) -> str:
    """The OpenLineage ``runId`` of a generation: its 32-hex id read as a UUID."""
    return str(uuid.UUID(hex=generation_id))


def _qname_value(name: str) -> dict[str, str]:
    return {"$": name, "type": "xsd:QName"}


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _compact(attributes: dict[str, Any]) -> dict[str, Any]:
    """PROV-JSON has no null: attributes without a value are left out."""
    return {key: value for key, value in attributes.items() if value is not None}


@cache
def _provgen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("provgen")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def producer() -> str:
    """The OpenLineage ``producer`` URI of events made by this provgen."""
    return f"urn:provgen:producer:provgen:{_provgen_version()}"


def _software_version(generation: Generation) -> str | None:
    software = (generation.recipe or {}).get("software") if isinstance(generation.recipe, dict) else None
    value = software.get("provgen") if isinstance(software, dict) else None
    return str(value) if value else None


# -- PROV records (from ORM objects or rows with the same attribute names) -----------------------------------


def _entity(asset: Any) -> Record:
    return (
        "entity",
        asset_qname(asset.id),
        _compact(
            {
                "prov:type": _qname_value(
                    "provgen:GeneratedImage" if asset.kind == "generated" else "provgen:ExternalInput"
                ),
                "provgen:kind": asset.kind,
                "provgen:sha256": asset.sha256,
                "provgen:format": asset.format,
                "provgen:path": asset.path,
                "provgen:watermarkId": f"{asset.watermark_id:012x}" if asset.watermark_id is not None else None,
                "provgen:width": asset.width,
                "provgen:height": asset.height,
                "provgen:sizeBytes": asset.size_bytes,
                "provgen:manifestLabel": asset.manifest_label,
                "provgen:createdAt": _time(asset.created_at),
            }
        ),
    )


def _activity(generation: Any, software_version: str | None) -> Record:
    return (
        "activity",
        generation_qname(generation.id),
        _compact(
            {
                "prov:type": _qname_value("provgen:Generation"),
                "prov:startTime": _time(generation.created_at),
                "provgen:prompt": generation.prompt,
                "provgen:negativePrompt": generation.negative_prompt,
                "provgen:modelId": generation.model_id,
                "provgen:modelHash": generation.model_hash,
                "provgen:pipelineClass": generation.pipeline_class,
                "provgen:scheduler": generation.scheduler,
                # 64-bit seeds do not fit JSON numbers everywhere: a typed literal keeps them exact
                "provgen:seed": {"$": str(generation.seed), "type": "xsd:long"},
                "provgen:steps": generation.num_inference_steps,
                "provgen:guidanceScale": generation.guidance_scale,
                "provgen:width": generation.width,
                "provgen:height": generation.height,
                "provgen:numImages": generation.num_images,
                "provgen:softwareVersion": software_version,
            }
        ),
    )


def _associations(generation_id: str, requester: str, software_version: str | None) -> Iterator[Record]:
    activity = generation_qname(generation_id)
    yield (
        "wasAssociatedWith",
        f"_:assoc/{generation_id}/requester",
        {"prov:activity": activity, "prov:agent": requester_qname(requester), "prov:role": "requester"},
    )
    yield (
        "wasAssociatedWith",
        f"_:assoc/{generation_id}/software",
        {"prov:activity": activity, "prov:agent": software_qname(software_version), "prov:role": "generator"},
    )


def _requester_agent(requester: str) -> Record:
    return "agent", requester_qname(requester), {"prov:label": requester}


def _software_agent(version: str | None) -> Record:
    return (
        "agent",
        software_qname(version),
        _compact(
            {
                "prov:type": _qname_value("prov:SoftwareAgent"),
                "prov:label": f"provgen {version}" if version else "provgen",
                "provgen:version": version,
            }
        ),
    )


def _generated_by(asset_id: str, generation_id: str, created_at: datetime) -> Record:
    return (
        "wasGeneratedBy",
        f"_:wgb/{asset_id}",
        {
            "prov:entity": asset_qname(asset_id),
            "prov:activity": generation_qname(generation_id),
            "prov:time": _time(created_at),
        },
    )


def _edge_records(edge: Any) -> Iterator[Record]:
    """``used`` when the edge belongs to a generation; ``wasDerivedFrom`` for ``parentOf`` or no generation.

    An edge without a generation (written by hand or imported) is not attributed to any activity.
    """
    used, derived = _used(edge), _derived(edge)
    if used is not None:
        yield used
    if derived is not None:
        yield derived


def _used(edge: Any) -> Record | None:
    if edge.generation_id is None:
        return None
    return (
        "used",
        f"_:used/{edge.id}",
        {
            "prov:activity": generation_qname(edge.generation_id),
            "prov:entity": asset_qname(edge.parent_id),
            "prov:role": edge.role,
            "provgen:relation": edge.relation,
        },
    )


def _derived(edge: Any) -> Record | None:
    if edge.relation != "parentOf" and edge.generation_id is not None:
        return None
    return (
        "wasDerivedFrom",
        f"_:derived/{edge.id}",
        _compact(
            {
                "prov:generatedEntity": asset_qname(edge.child_id),
                "prov:usedEntity": asset_qname(edge.parent_id),
                "prov:activity": generation_qname(edge.generation_id) if edge.generation_id else None,
                "provgen:relation": edge.relation,
                "provgen:role": edge.role,
            }
        ),
    )


def _document(records: Iterable[Record]) -> dict[str, Any]:
    document: dict[str, Any] = {"prefix": {"provgen": PROVGEN_NAMESPACE}}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, key, attributes in records:
        sections[section][key] = attributes
    document.update((name, body) for name, body in sections.items() if body)
    return document


# -- a lineage graph --------------------------------------------------------------------------------------


def lineage_to_prov(graph: LineageGraph) -> dict[str, Any]:
    """``graph`` as a PROV-JSON document (a dict; ``json.dumps`` it)."""
    return _document(_graph_records(graph))


def _graph_records(graph: LineageGraph) -> Iterator[Record]:
    for node in graph.nodes:
        yield _entity(node.asset)
    requesters: set[str] = set()
    versions: set[str | None] = set()
    generations = sorted(graph.generations.values(), key=lambda g: (g.created_at, g.id))
    for generation in generations:
        version = _software_version(generation)
        yield _activity(generation, version)
        yield from _associations(generation.id, generation.requester, version)
        requesters.add(generation.requester)
        versions.add(version)
    for requester in sorted(requesters):
        yield _requester_agent(requester)
    for version in sorted(versions, key=lambda v: v or ""):
        yield _software_agent(version)
    for node in graph.nodes:
        if node.asset.generation_id is not None:
            yield _generated_by(node.id, node.asset.generation_id, node.asset.created_at)
    for edge in graph.edges:
        yield from _edge_records(edge)


def lineage_to_openlineage(graph: LineageGraph) -> list[dict[str, Any]]:
    """One OpenLineage ``COMPLETE`` RunEvent per generation of ``graph``, oldest first.

    ``inputs`` are the assets the generation used and ``outputs`` the images it made, as far as the graph
    reaches (a walk of ancestors holds only the images of a batch that lead to the root).
    """
    used: dict[str, dict[str, list[dict[str, str]]]] = {}  # generation id -> parent id -> usages
    for edge in graph.edges:
        if edge.generation_id is not None:
            usage = {"relation": edge.relation, "role": edge.role}
            used.setdefault(edge.generation_id, {}).setdefault(edge.parent_id, []).append(usage)
    made: dict[str, list[Any]] = {}  # generation id -> nodes it made
    for node in graph.nodes:
        if node.asset.generation_id is not None:
            made.setdefault(node.asset.generation_id, []).append(node)
    events = []
    for generation in sorted(graph.generations.values(), key=lambda g: (g.created_at, g.id)):
        inputs = used.get(generation.id, {})
        outputs = made.get(generation.id, [])
        events.append(
            {
                "eventType": "COMPLETE",
                "eventTime": _time(generation.created_at),
                "run": {"runId": run_id(generation.id), "facets": {"provgen_generation": _run_facet(generation)}},
                "job": {"namespace": OPENLINEAGE_NAMESPACE, "name": generation.model_id},
                "inputs": [
                    {
                        **_dataset(graph.node(parent_id).asset),
                        "inputFacets": {"provgen_input": _facet("InputFacet", {"usages": usages})},
                    }
                    for parent_id, usages in sorted(inputs.items())
                    if parent_id in graph
                ],
                "outputs": [_dataset(node.asset) for node in sorted(outputs, key=lambda n: n.asset.batch_index or 0)],
                "producer": producer(),
                "schemaURL": OPENLINEAGE_SCHEMA_URL,
            }
        )
    return events


def _facet(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"_producer": producer(), "_schemaURL": FACET_SCHEMA_URL + name, **fields}


def _dataset(asset: Asset) -> dict[str, Any]:
    return {
        "namespace": OPENLINEAGE_NAMESPACE,
        "name": asset.id,
        "facets": {
            "provgen_asset": _facet(
                "AssetFacet",
                {
                    "sha256": asset.sha256,
                    "kind": asset.kind,
                    "format": asset.format,
                    "path": asset.path,
                    "watermarkId": f"{asset.watermark_id:012x}" if asset.watermark_id is not None else None,
                    "width": asset.width,
                    "height": asset.height,
                },
            )
        },
    }


def _run_facet(generation: Generation) -> dict[str, Any]:
    return _facet(
        "GenerationRunFacet",
        {
            "generationId": generation.id,
            "requester": generation.requester,
            "modelId": generation.model_id,
            "modelHash": generation.model_hash,
            "pipelineClass": generation.pipeline_class,
            "scheduler": generation.scheduler,
            "prompt": generation.prompt,
            "negativePrompt": generation.negative_prompt,
            "seed": generation.seed,
            "steps": generation.num_inference_steps,
            "guidanceScale": generation.guidance_scale,
            "width": generation.width,
            "height": generation.height,
            "numImages": generation.num_images,
            "softwareVersion": _software_version(generation),
        },
    )


# -- the whole registry -----------------------------------------------------------------------------------


def write_registry_prov(registry: Registry, out: TextIO) -> int:
    """Write the whole registry (every asset, generation and edge) to ``out`` as ONE PROV-JSON document.

    Streams: each section is one query read in batches and written a record per line as it comes, so memory
    stays flat however large the registry; all queries read one consistent snapshot (one transaction,
    REPEATABLE READ on PostgreSQL). Returns the number of entities (assets) written.
    :raises RegistryError: the registry could not be read.
    """
    engine = registry.engine
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return _write_sections(conn, out)
    except DBAPIError as exc:
        raise db.translate_error(exc, engine, "exporting the registry as PROV from the registry") from exc


def _write_sections(conn: Connection, out: TextIO) -> int:
    def stream(stmt: Any) -> Iterator[Any]:
        yield from conn.execute(stmt.execution_options(yield_per=_STREAM_BATCH))

    software = Generation.recipe[("software", "provgen")].as_string().label("software_version")
    requesters: set[str] = set()
    versions: set[str | None] = set()

    def activities() -> Iterator[Record]:
        stmt = select(*_GENERATION_COLUMNS, software).order_by(Generation.id)
        for row in stream(stmt):
            requesters.add(row.requester)
            versions.add(row.software_version or None)
            yield _activity(row, row.software_version or None)

    def agents() -> Iterator[Record]:
        for requester in sorted(requesters):
            yield _requester_agent(requester)
        for version in sorted(versions, key=lambda v: v or ""):
            yield _software_agent(version)

    def generated_by() -> Iterator[Record]:
        stmt = (
            select(Asset.id, Asset.generation_id, Asset.created_at)
            .where(Asset.generation_id.is_not(None))
            .order_by(Asset.id)
        )
        for row in stream(stmt):
            yield _generated_by(row.id, row.generation_id, row.created_at)

    def edge_records(convert: Callable[[Any], Record | None]) -> Iterator[Record]:
        stmt = select(
            LineageEdge.id,
            LineageEdge.parent_id,
            LineageEdge.child_id,
            LineageEdge.relation,
            LineageEdge.role,
            LineageEdge.generation_id,
        ).order_by(LineageEdge.id)
        for row in stream(stmt):
            record = convert(row)
            if record is not None:
                yield record

    def associations() -> Iterator[Record]:
        for row in stream(select(Generation.id, Generation.requester, software).order_by(Generation.id)):
            yield from _associations(row.id, row.requester, row.software_version or None)

    sections: list[tuple[str, Callable[[], Iterable[Record]]]] = [
        ("entity", lambda: (_entity(row) for row in stream(select(*_ASSET_COLUMNS).order_by(Asset.id)))),
        ("activity", activities),
        ("agent", agents),
        ("wasGeneratedBy", generated_by),
        ("used", lambda: edge_records(_used)),
        ("wasDerivedFrom", lambda: edge_records(_derived)),
        ("wasAssociatedWith", associations),
    ]
    out.write('{\n"prefix": ' + json.dumps({"provgen": PROVGEN_NAMESPACE}))
    entities = 0
    for name, records in sections:
        written = _write_section(out, name, records())
        if name == "entity":
            entities = written
    out.write("\n}\n")
    return entities


def _write_section(out: TextIO, name: str, records: Iterable[Record]) -> int:
    encode = _ENCODER.encode
    count = 0
    for _, key, attributes in records:
        out.write("," if count else f",\n{encode(name)}: {{")
        out.write(f"\n  {encode(key)}: {encode(attributes)}")
        count += 1
    if count:
        out.write("\n}")
    return count


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # ASCII-only: safe on any text stream
_ASSET_COLUMNS = (
    Asset.id,
    Asset.kind,
    Asset.sha256,
    Asset.format,
    Asset.path,
    Asset.watermark_id,
    Asset.width,
    Asset.height,
    Asset.size_bytes,
    Asset.manifest_label,
    Asset.created_at,
)
_GENERATION_COLUMNS = (
    Generation.id,
    Generation.created_at,
    Generation.requester,
    Generation.prompt,
    Generation.negative_prompt,
    Generation.model_id,
    Generation.model_hash,
    Generation.pipeline_class,
    Generation.scheduler,
    Generation.seed,
    Generation.num_inference_steps,
    Generation.guidance_scale,
    Generation.width,
    Generation.height,
    Generation.num_images,
)
