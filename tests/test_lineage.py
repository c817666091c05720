"""The lineage graph (provgen.provenance.registry.lineage), its PROV-JSON / OpenLineage export and
``provgen lineage``, on SQLite and PostgreSQL (``db_url``), plus one end-to-end run through ``provgen generate``
with a plugin that contributes a controlnet input."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from provgen.cli import lineage as cli_lineage
from provgen.cli.main import cli
from provgen.core import ProvenanceContribution, hookimpl
from provgen.core.errors import NotFoundError, ValidationError
from provgen.core.plugins import make_plugin_manager, reset_plugin_manager
from provgen.provenance.c2pa_io import Ingredient
from provgen.provenance.registry import Asset, Generation, LineageEdge, Registry, open_registry
from provgen.provenance.registry import lineage as lineage_module
from provgen.provenance.registry.lineage import ancestors, descendants, lineage, walk_statement
from provgen.provenance.registry.models import new_id
from provgen.provenance.registry.prov import lineage_to_openlineage, lineage_to_prov, write_registry_prov
from tests.factories import fake_generation

MODEL = "org/tiny-model"

# -- building graphs through the Registry API ----------------------------------------------------------------


def png_bytes(seed: int) -> bytes:
    image = Image.effect_mandelbrot((48, 48), (-2 + seed / 10, -1.25, 0.5, 1.25), 24).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Builder:
    """Adds one-image generations (and their edges) to a registry: one transaction per :meth:`add`, or one
    for many inside ``with builder.batch():``."""

    registry: Registry
    names: dict[str, str] = field(default_factory=dict)  # name -> asset id
    session: Session | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self.registry.transaction() as session:
            self.session = session
            try:
                yield
            finally:
                self.session = None

    def _transaction(self) -> AbstractContextManager[Session]:
        return nullcontext(self.session) if self.session is not None else self.registry.transaction()

    def add(
        self,
        name: str,
        *,
        prompt: str | None = None,
        parents: tuple[tuple[str, str, str], ...] = (),
        inputs: tuple[tuple[bytes, str, str], ...] = (),
    ) -> str:
        """``parents``: (name, relation, role) of existing assets; ``inputs``: (data, source, role) of
        external inputTo images, recorded with ``record_input``."""
        asset_id, watermark_id = self.registry.new_ids()
        generation_id = new_id()
        with self._transaction() as session:
            generation = fake_generation(
                id=generation_id,
                model_id=MODEL,
                prompt=prompt or f"image {name}",
                height=64,
                recipe={"software": {"provgen": "0.1.0"}},
                plugins=[],
                asset_fields=[
                    {
                        "id": asset_id,
                        "watermark_id": watermark_id,
                        "seed": 2**63 - 1,
                        "height": 64,
                        "manifest_store": b"c2pa",
                    }
                ],
            )
            session.add(generation)
            for parent, relation, role in parents:
                session.add(
                    LineageEdge(
                        parent_id=self.names[parent],
                        child_id=asset_id,
                        generation_id=generation_id,
                        relation=relation,
                        role=role,
                    )
                )
            for data, source, role in inputs:
                external = self.registry.record_input(session, data=data, path=source)
                session.flush()
                self.names.setdefault(source, external.id)
                session.add(
                    LineageEdge(
                        parent_id=external.id,
                        child_id=asset_id,
                        generation_id=generation_id,
                        relation="inputTo",
                        role=role,
                    )
                )
        self.names[name] = asset_id
        return asset_id

    def edge(
        self, parent: str, child: str, relation: str = "parentOf", role: str = "init_image", generation_id=None
    ) -> None:
        """A hand-made edge (by default with no generation)."""
        with self.registry.transaction() as session:
            session.add(
                LineageEdge(
                    parent_id=self.names[parent],
                    child_id=self.names[child],
                    generation_id=generation_id,
                    relation=relation,
                    role=role,
                )
            )

    def ids(self, *names: str) -> set[str]:
        return {self.names[name] for name in names}


CHAIN = [f"c{i}" for i in range(21)]  # c0 <- c1 <- ... <- c20 (parentOf), c0 made with the external input X


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


@pytest.fixture
def world(registry: Registry) -> Builder:
    """A chain of depth 20 over an external input, and a diamond with a double edge."""
    build = Builder(registry)
    with build.batch():
        _build_world(build)
    return build


def _build_world(build: Builder) -> None:
    build.add(
        "c0",
        prompt="a lighthouse at dusk, oil on canvas, dramatic sky, seagulls, long exposure",
        inputs=((png_bytes(1), "/inputs/X.png", "controlnet"),),
    )
    build.names["X"] = build.names["/inputs/X.png"]
    for i in range(1, 21):
        build.add(f"c{i}", parents=((f"c{i - 1}", "parentOf", "init_image"),))
    build.add("top")
    build.add("left", parents=(("top", "parentOf", "init_image"),))
    build.add("right", parents=(("top", "parentOf", "init_image"),))
    build.add(
        "bottom",
        parents=(
            ("left", "parentOf", "init_image"),
            ("left", "inputTo", "reference"),
            ("right", "inputTo", "ip_adapter"),
        ),
    )


# -- the walk ----------------------------------------------------------------------------------------------------


def test_chain_of_depth_20_ancestors_descendants_and_depth_limits(registry: Registry, world: Builder) -> None:
    tail, head, external = world.names["c20"], world.names["c0"], world.names["X"]

    graph = ancestors(registry, tail, depth=10)
    assert graph.root.id == tail and graph.direction == "ancestors" and graph.max_depth == 10
    assert graph.asset_ids == world.ids(*CHAIN[10:])
    assert [node.depth for node in graph.nodes] == list(range(11))  # root first, then by depth
    assert [node.id for node in graph.nodes if node.has_more] == [world.names["c10"]] and graph.truncated
    assert len(graph.edges) == 10 and {e.relation for e in graph.edges} == {"parentOf"}
    assert all(graph.far_end(e) == graph.nodes[e.depth].id for e in graph.edges)

    whole = ancestors(registry, tail[:10], depth=21)  # a unique prefix works too
    assert whole.asset_ids == world.ids(*CHAIN, "X") and not whole.truncated
    assert whole.node(external).depth == 21 and whole.node(external).asset.kind == "external"
    assert whole.node(external).generation is None and whole.node(head).generation.prompt.startswith("a lighthouse")
    [input_edge] = [e for e in whole.edges if e.parent_id == external]
    assert (input_edge.relation, input_edge.role, input_edge.child_id) == ("inputTo", "controlnet", head)
    assert input_edge.generation_id == whole.node(head).asset.generation_id
    assert ancestors(registry, tail, depth=20).node(head).has_more  # X lies just beyond

    down = descendants(registry, external, depth=100)
    assert down.asset_ids == world.ids(*CHAIN, "X") and not down.truncated
    assert {node.id: node.depth for node in down.nodes} == {world.names[f"c{i}"]: i + 1 for i in range(21)} | {
        external: 0
    }
    short = descendants(registry, head, depth=5)
    assert short.asset_ids == world.ids(*CHAIN[:6]) and short.node(world.names["c5"]).has_more
    assert len(ancestors(registry, external).nodes) == 1  # nothing above X
    assert lineage(registry, head, direction="descendants", depth=1).asset_ids == world.ids("c0", "c1")


def test_diamond_and_double_edges_give_each_node_once(registry: Registry, world: Builder) -> None:
    graph = ancestors(registry, world.names["bottom"], depth=10)
    assert graph.asset_ids == world.ids("bottom", "left", "right", "top")
    assert graph.node(world.names["top"]).depth == 2 and not graph.truncated
    assert sorted((e.relation, e.role) for e in graph.edges) == [
        ("inputTo", "ip_adapter"),
        ("inputTo", "reference"),
        ("parentOf", "init_image"),
        ("parentOf", "init_image"),
        ("parentOf", "init_image"),
    ]
    assert len({e.id for e in graph.edges}) == 5
    # edges of one level: parentOf before inputTo
    assert [e.relation for e in graph.edges if e.depth == 1] == ["parentOf", "inputTo", "inputTo"]
    one = ancestors(registry, world.names["bottom"], depth=1)
    assert one.asset_ids == world.ids("bottom", "left", "right")
    assert {n.id for n in one.nodes if n.has_more} == world.ids("left", "right")
    assert descendants(registry, world.names["top"]).asset_ids == world.ids("top", "left", "right", "bottom")
    # an edge attributed to a generation none of the nodes came from: that generation is loaded too
    other = registry.get_asset(world.names["c5"]).generation_id
    world.edge("X", "top", relation="inputTo", role="style", generation_id=other)
    graph = ancestors(registry, world.names["top"])
    assert graph.asset_ids == world.ids("top", "X") and set(graph.generations) == {graph.root.generation_id, other}
    assert lineage_to_prov(graph)["used"][f"_:used/{graph.edges[0].id}"]["prov:activity"] == (
        f"provgen:generation/{other}"
    )


def test_cycles_terminate_and_list_each_node_once(registry: Registry, world: Builder) -> None:
    world.edge("c20", "c0", role="loop")  # c0 <- c20 closes the chain into a cycle
    world.edge("bottom", "bottom", relation="componentOf", role="self")  # and a self-loop
    graph = ancestors(registry, world.names["c20"], depth=100)
    assert graph.asset_ids == world.ids(*CHAIN, "X")
    assert len(graph.edges) == 22 and len(graph.nodes) == 22  # 20 chain edges, X's edge, the loop back to root
    assert not graph.truncated
    middle = ancestors(registry, world.names["c10"], depth=100)
    assert middle.asset_ids == world.ids(*CHAIN, "X")
    assert middle.node(world.names["c11"]).depth == 20  # reached round the loop; c10 is not walked again
    down = descendants(registry, world.names["X"], depth=100)  # the cycle is not through the root
    assert down.asset_ids == world.ids(*CHAIN, "X") and len(down.edges) == 22
    with registry.session() as session:  # the SQL itself is bounded: one row per (edge, depth) at most
        rows = session.execute(walk_statement("descendants"), {"root_id": world.names["X"], "depth": 100}).all()
    assert len(rows) == len({(row.id, row.depth) for row in rows}) <= 22 * 100
    looped = ancestors(registry, world.names["bottom"], depth=100)
    assert looped.asset_ids == world.ids("bottom", "left", "right", "top")
    assert any(e.parent_id == e.child_id == world.names["bottom"] for e in looped.edges)


def test_one_recursive_query_and_one_in_query(registry: Registry, world: Builder) -> None:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append(statement)

    engine = registry.read_engine  # lineage reads go through Registry.read
    event.listen(engine, "before_cursor_execute", record)
    try:
        graph = ancestors(registry, world.names["c20"], depth=20)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(graph.nodes) == 21
    assert sum("lineage_edges" in s for s in statements) == 1
    assert sum("RECURSIVE" in s.upper() for s in statements) == 1
    assert len(statements) == 2, statements  # the walk, then the root and the assets reached
    statements.clear()
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert len(ancestors(registry, world.names["c20"][:12], depth=20).nodes) == 21
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) <= 4, statements  # a prefix is resolved first (the asset, its siblings)


def test_bad_arguments_and_unknown_ids(registry: Registry, world: Builder) -> None:
    for depth in (0, 101, "3", True):
        with pytest.raises(ValidationError, match="depth"):
            ancestors(registry, world.names["c1"], depth=depth)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="direction"):
        lineage(registry, world.names["c1"], direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no asset `0123456789abcdef`"):
        ancestors(registry, "0123456789abcdef")
    with pytest.raises(NotFoundError, match="no asset `0123456789ABCDEF0123456789abcdef`"):
        descendants(registry, "0123456789ABCDEF0123456789abcdef")  # a full id, checked by the walk itself
    with pytest.raises(NotFoundError, match="no asset `not-an-id`"):
        ancestors(registry, "not-an-id")
    assert ancestors(registry, world.names["c1"].upper()).root.id == world.names["c1"]
    assert cli_lineage.MAX_DEPTH == lineage_module.MAX_DEPTH
    assert cli_lineage.DEFAULT_DEPTH == lineage_module.DEFAULT_DEPTH


# -- PROV-JSON and OpenLineage ---------------------------------------------------------------------------------

#: PROV-JSON relation -> the attributes that name other records, and the section each must be declared in
REFERENCES = {
    "wasGeneratedBy": {"prov:entity": "entity", "prov:activity": "activity"},
    "used": {"prov:activity": "activity", "prov:entity": "entity"},
    "wasDerivedFrom": {"prov:generatedEntity": "entity", "prov:usedEntity": "entity", "prov:activity": "activity"},
    "wasAssociatedWith": {"prov:activity": "activity", "prov:agent": "agent"},
}


def check_prov_structure(document: dict) -> None:
    assert document["prefix"] == {"provgen": "urn:provgen:"}
    assert set(document) <= {"prefix", "entity", "activity", "agent", *REFERENCES}
    for section, references in REFERENCES.items():
        for key, record in document.get(section, {}).items():
            assert key.startswith("_:"), key
            for attribute, target in references.items():
                if attribute in record:
                    assert record[attribute] in document[target], (section, key, attribute)
            assert set(references) - {"prov:activity"} <= set(record) or section == "wasDerivedFrom"
    for key in (*document.get("entity", {}), *document.get("activity", {}), *document.get("agent", {})):
        assert key.startswith("provgen:"), key


def parse_with_prov_library(text: str):  # type: ignore[no-untyped-def]
    model = pytest.importorskip("prov.model")
    return model.ProvDocument.deserialize(content=text, format="json")


def test_prov_json_of_a_lineage_graph(registry: Registry, world: Builder) -> None:
    graph = ancestors(registry, world.names["c2"], depth=10)
    document = lineage_to_prov(graph)
    check_prov_structure(document)
    head, external = world.names["c0"], world.names["X"]
    entities, activities = document["entity"], document["activity"]
    assert set(entities) == {f"provgen:asset/{asset_id}" for asset_id in graph.asset_ids}
    x = entities[f"provgen:asset/{external}"]
    assert x["provgen:kind"] == "external" and x["provgen:path"] == "/inputs/X.png" and x["provgen:format"] == "png"
    assert x["provgen:sha256"] == hashlib.sha256(png_bytes(1)).hexdigest() and "provgen:watermarkId" not in x
    c0 = entities[f"provgen:asset/{head}"]
    assert c0["provgen:kind"] == "generated" and len(c0["provgen:watermarkId"]) == 12
    assert len(activities) == 3 and len(document["wasGeneratedBy"]) == 3
    generation = graph.node(head).asset.generation
    activity = activities[f"provgen:generation/{generation.id}"]
    assert activity["provgen:prompt"].startswith("a lighthouse") and activity["provgen:modelId"] == MODEL
    assert activity["provgen:seed"] == {"$": str(2**63 - 1), "type": "xsd:long"}
    assert activity["provgen:steps"] == 2 and activity["provgen:scheduler"] == "EulerDiscreteScheduler"
    assert activity["prov:startTime"].endswith("+00:00") and activity["provgen:modelHash"] == generation.model_hash
    [used_x] = [u for u in document["used"].values() if u["prov:entity"] == f"provgen:asset/{external}"]
    assert used_x == {
        "prov:activity": f"provgen:generation/{generation.id}",
        "prov:entity": f"provgen:asset/{external}",
        "prov:role": "controlnet",
        "provgen:relation": "inputTo",
    }
    assert len(document["used"]) == 3 and len(document["wasDerivedFrom"]) == 2  # inputTo is no derivation
    agents = document["agent"]
    assert agents["provgen:agent/alice@example.org"]["prov:label"] == "alice@example.org"
    assert agents["provgen:software/provgen/0.1.0"]["prov:type"] == {"$": "prov:SoftwareAgent", "type": "xsd:QName"}
    assert len(document["wasAssociatedWith"]) == 6

    parsed = parse_with_prov_library(json.dumps(document))
    from prov.model import ProvActivity, ProvAgent, ProvEntity, ProvUsage

    assert len(list(parsed.get_records(ProvEntity))) == 4 and len(list(parsed.get_records(ProvActivity))) == 3
    assert len(list(parsed.get_records(ProvAgent))) == 2 and len(list(parsed.get_records(ProvUsage))) == 3


def test_openlineage_run_events(registry: Registry, world: Builder) -> None:
    graph = ancestors(registry, world.names["bottom"], depth=10)
    events = lineage_to_openlineage(graph)
    assert len(events) == 4  # one per generation: top, left, right, bottom
    generations = {g.id: g for g in graph.generations.values()}
    for run_event in events:
        assert run_event["eventType"] == "COMPLETE"
        assert run_event["schemaURL"] == "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
        assert run_event["producer"].startswith("urn:provgen:")
        generation = generations[uuid.UUID(run_event["run"]["runId"]).hex]
        assert run_event["eventTime"] == generation.created_at.isoformat()
        assert run_event["job"] == {"namespace": "provgen", "name": MODEL}
        facet = run_event["run"]["facets"]["provgen_generation"]
        assert facet["prompt"] == generation.prompt and facet["_producer"] and facet["_schemaURL"]
        for dataset in run_event["inputs"] + run_event["outputs"]:
            assert dataset["namespace"] == "provgen" and dataset["name"] in graph
            assert dataset["facets"]["provgen_asset"]["sha256"] == graph.node(dataset["name"]).asset.sha256
        [output] = run_event["outputs"]
        assert graph.node(output["name"]).asset.generation_id == generation.id
    [last] = [e for e in events if e["outputs"][0]["name"] == world.names["bottom"]]
    inputs = {d["name"]: d["inputFacets"]["provgen_input"]["usages"] for d in last["inputs"]}
    assert inputs == {
        world.names["left"]: [
            {"relation": "parentOf", "role": "init_image"},
            {"relation": "inputTo", "role": "reference"},
        ],
        world.names["right"]: [{"relation": "inputTo", "role": "ip_adapter"}],
    }
    [first] = [e for e in events if e["outputs"][0]["name"] == world.names["top"]]
    assert first["inputs"] == []


def test_write_registry_prov_exports_everything(registry: Registry, world: Builder) -> None:
    world.edge("c20", "c0", role="loop")  # an edge with no generation: a derivation without activity
    out = io.StringIO()
    count = write_registry_prov(registry, out)
    document = json.loads(out.getvalue())
    check_prov_structure(document)
    with registry.session() as session:
        assets = session.scalars(select(Asset.id)).all()
        generations = session.scalars(select(Generation.id)).all()
        edges = session.scalars(select(LineageEdge)).all()
    assert count == len(assets) == len(document["entity"]) == 26  # 21 chain + X + 4 diamond
    assert set(document["activity"]) == {f"provgen:generation/{g}" for g in generations}
    assert len(document["wasGeneratedBy"]) == 25 and len(document["wasAssociatedWith"]) == 2 * 25
    assert len(document["used"]) == len(edges) - 1
    assert len(document["wasDerivedFrom"]) == sum(e.relation == "parentOf" for e in edges)
    [loop] = [d for d in document["wasDerivedFrom"].values() if d.get("provgen:role") == "loop"]
    assert "prov:activity" not in loop
    assert set(document["agent"]) == {"provgen:agent/alice@example.org", "provgen:software/provgen/0.1.0"}
    # the subgraph export and the whole export describe a record the same way
    graph = ancestors(registry, world.names["c1"])
    for section in ("entity", "activity"):
        for key, record in lineage_to_prov(graph)[section].items():
            assert document[section][key] == record
    parsed = parse_with_prov_library(out.getvalue())
    from prov.model import ProvEntity

    assert len(list(parsed.get_records(ProvEntity))) == 26


# -- provgen lineage ------------------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["lineage", *args])
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def cli_world(world: Builder, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Builder:
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", db_url)
    return world


def test_cli_formats(cli_world: Builder) -> None:
    names = cli_world.names
    code, out, err = run(names["c3"][:8], "--format", "json", "--depth", "2")
    assert code == 0, err
    data = json.loads(out)
    assert data["resolved"] == {"input": names["c3"][:8], "match": "id", "verdict": None}
    assert [n["id"] for n in data["nodes"]] == [names["c3"], names["c2"], names["c1"]] and data["truncated"]
    assert data["nodes"][2]["has_more"] and data["edges"][0]["relation"] == "parentOf"
    assert {g["id"] for g in data["generations"]} == {n["generation_id"] for n in data["nodes"]}
    assert json.loads(run(names["c3"][:8], "--json", "--depth", "2")[1]) == data  # --json is --format json

    code, out, _ = run(names["c2"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"ancestors of asset {names['c2']}; depth ≤ 10: 3 ancestors"
    assert lines[1].startswith(f'{names["c2"][:8]}  generated  "image c2"  model {MODEL}')
    assert lines[2].startswith(f"└─ parentOf:init_image  {names['c1'][:8]}  generated")
    assert lines[4] == f"      └─ inputTo:controlnet  {names['X'][:8]}  external  /inputs/X.png"
    assert '"a lighthouse at dusk, oil on canvas, dramatic s…"' in lines[3]

    code, out, _ = run(names["bottom"], "--format", "tree")
    assert code == 0
    assert out.splitlines()[1:] == [
        f'{names["bottom"][:8]}  generated  "image bottom"  model {MODEL}  seed {2**63 - 1}',
        f'├─ parentOf:init_image  {names["left"][:8]}  generated  "image left"  model {MODEL}  seed {2**63 - 1}',
        f'│  └─ parentOf:init_image  {names["top"][:8]}  generated  "image top"  model {MODEL}  seed {2**63 - 1}',
        f'├─ inputTo:ip_adapter  {names["right"][:8]}  generated  "image right"  model {MODEL}  seed {2**63 - 1}',
        f"│  └─ parentOf:init_image  {names['top'][:8]}  (see above)",
        f"└─ inputTo:reference  {names['left'][:8]}  (see above)",
    ]

    ascii_lines = cli_lineage.render_tree(
        ancestors(cli_world.registry, names["bottom"]), glyphs=cli_lineage._ASCII_GLYPHS
    )  # what a terminal that cannot encode box drawing gets
    assert ascii_lines[1:3] == [out.splitlines()[1], out.splitlines()[2].replace("├─", "|-")]
    assert ascii_lines[0].endswith("depth <= 10: 3 ancestors") and ascii_lines[-1].startswith("`- inputTo:reference")
    assert all(line.isascii() for line in ascii_lines)

    code, out, _ = run(names["X"], "--descendants", "--depth", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"descendants of asset {names['X']}; depth ≤ 2: 2 descendants")
    assert lines[1] == f"{names['X'][:8]}  external  /inputs/X.png"
    assert lines[2].startswith(f"└─ inputTo:controlnet  {names['c0'][:8]}  generated")
    assert lines[-1] == "      └─ … more beyond --depth 2"

    code, out, _ = run(names["c1"], "--format", "prov")
    assert code == 0
    check_prov_structure(json.loads(out))
    code, out, _ = run(names["c1"], "--format", "openlineage")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["eventType"] for e in events] == ["COMPLETE", "COMPLETE"]


def test_cli_errors(cli_world: Builder) -> None:
    code, out, err = run("0123456789abcdef0123456789abcdef")
    assert code == 1 and out == "" and "no asset `0123456789abcdef0123456789abcdef`" in err
    code, _, err = run("no-such-file.png")
    assert code == 1 and "neither an existing file nor an asset id" in err
    for bad in ("0", "101", "ten"):
        code, _, err = run(cli_world.names["c1"], "--depth", bad)
        assert code == 2 and "--depth" in err
    code, _, err = run(cli_world.names["c1"], "--json", "--format", "tree")
    assert code == 2 and "--json" in err
    code, _, err = run(cli_world.names["c1"], "--format", "dot")
    assert code == 2 and "--format" in err


# -- end to end: provgen generate with a plugin input, then provgen lineage FILE ---------------------------------

SIZE = ["--steps", "2", "-W", "64", "-H", "64"]


def test_generate_with_plugin_input_then_lineage_of_the_file(tiny_sd_dir: Path, tmp_path: Path) -> None:
    control = png_bytes(5)
    inputs: list[Ingredient] = [
        Ingredient(
            title="pose.png",
            mime="image/png",
            data=control,
            relationship="inputTo",
            role="controlnet",
            source="/some/path.png",
        )
    ]

    class ControlInput:
        name = "test-controlnet"

        @hookimpl
        def provenance_contribution(self, context):  # type: ignore[no-untyped-def]
            return ProvenanceContribution(ingredients=list(inputs))

    pm = make_plugin_manager(load_entrypoints=False)
    pm.register(ControlInput(), name="test-controlnet")
    reset_plugin_manager(pm)  # what `provgen generate` below uses; the autouse fixture resets it afterwards

    def generate(prompt: str, seed: int) -> dict:
        result = CliRunner().invoke(
            cli,
            [
                "generate",
                prompt,
                "--model",
                str(tiny_sd_dir),
                *SIZE,
                "--seed",
                str(seed),
                "--out",
                str(tmp_path / "out"),
                "--json",
                "--quiet",
            ],
        )
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["images"][0]

    first = generate("a red cube on a table", 3)
    # the second generation edits the first image (parentOf/init_image) under the same controlnet input
    inputs.append(
        Ingredient(
            title="first.png",
            mime="image/png",
            data=Path(first["path"]).read_bytes(),
            relationship="parentOf",
            role="init_image",
            source=first["path"],
        )
    )
    second = generate("the same cube, now blue", 4)

    from provgen.core.config import load_settings

    with open_registry(load_settings().registry_url) as registry:
        external = registry.find_by_sha256(hashlib.sha256(control).hexdigest())
        assert external is not None and external.kind == "external" and external.path == "/some/path.png"
        assert external.generation_id is None and external.format == "png"
        with registry.session() as session:
            edges = session.scalars(select(LineageEdge).order_by(LineageEdge.created_at)).all()
            assert sorted((e.parent_id, e.child_id, e.relation, e.role) for e in edges) == sorted(
                [
                    (external.id, first["asset_id"], "inputTo", "controlnet"),
                    (external.id, second["asset_id"], "inputTo", "controlnet"),
                    (first["asset_id"], second["asset_id"], "parentOf", "init_image"),
                ]
            )
        assert all(e.generation_id == registry.get_asset(e.child_id).generation_id for e in edges)

    code, out, err = run(second["path"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        f"ancestors of asset {second['asset_id']}, found from {second['path']} by manifest "
        "(verdict: verified); depth ≤ 10: 2 ancestors"
    )
    assert lines[1].startswith(f'{second["asset_id"][:8]}  generated  "the same cube, now blue"  model tiny-sd')
    assert lines[2].startswith(f'├─ parentOf:init_image  {first["asset_id"][:8]}  generated  "a red cube on a')
    assert lines[3] == f"│  └─ inputTo:controlnet  {external.id[:8]}  external  /some/path.png"
    assert lines[4] == f"└─ inputTo:controlnet  {external.id[:8]}  (see above)"

    # a copy without its manifest or exact bytes is still found, by its watermark
    copy = tmp_path / "copy.png"
    Image.open(second["path"]).convert("RGB").save(copy)
    code, out, err = run(str(copy), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["resolved"] == {"input": str(copy), "match": "watermark", "verdict": "recovered"}
    assert data["root"] == second["asset_id"]
    assert {n["id"] for n in data["nodes"]} == {second["asset_id"], first["asset_id"], external.id}

    code, out, _ = run(first["path"], "--descendants", "--format", "openlineage")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["outputs"][0]["name"] for e in events] == [first["asset_id"], second["asset_id"]]
    run_event = events[1]
    assert [d["name"] for d in run_event["inputs"]] == [first["asset_id"]]
    assert run_event["outputs"][0]["name"] == second["asset_id"]

    unrelated = tmp_path / "unrelated.png"
    Image.effect_mandelbrot((64, 64), (-2, -1.25, 0.5, 1.25), 64).convert("RGB").save(unrelated)
    code, _, err = run(str(unrelated))
    assert code == 1 and "is not in the registry" in err
