"""``provgen registry export`` / ``import`` and provgen.provenance.registry.transfer, on SQLite and PostgreSQL.

No mocks: real registries, real chains and checkpoints, and one round trip with images from the tiny model.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, text

from provgen.cli.main import cli
from provgen.core.errors import RegistryError
from provgen.provenance.registry import Asset, Fingerprint, Generation, Registry, head_revision, jobs, open_registry
from provgen.provenance.registry.transfer import FORMAT, RECORD_TYPES, export_jsonl, import_jsonl
from tests.conftest import fresh_postgres_database
from tests.test_audit import _fill, _identity
from tests.test_registry import make_generation


@contextmanager
def blank_registry(backend: str, tmp_path: Path, name: str) -> Iterator[Registry]:
    """A new, empty registry on ``backend`` ("sqlite" or "postgresql")."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / name / 'registry.sqlite'}"
        else:
            url = stack.enter_context(fresh_postgres_database())
        registry = stack.enter_context(open_registry(url))
        yield registry


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def export_text(registry: Registry, batch: int = 1000) -> str:
    out = io.StringIO()
    export_jsonl(registry, out, batch=batch)
    return out.getvalue()


def import_text(registry: Registry, data: str, batch: int = 1000):
    return import_jsonl(registry, io.BytesIO(data.encode()), source="export.jsonl", batch=batch)


def without_time(data: str) -> list:
    header, *rest = data.splitlines()
    header = json.loads(header)
    del header["exported_at"]
    return [header, *rest]


def state(registry: Registry) -> dict:
    """Row counts of every table and the chain head: what must not change when an import is refused."""
    with registry.engine.connect() as conn:
        counts = {name: conn.scalar(select(func.count()).select_from(table)) for name, table in RECORD_TYPES.items()}
        head = conn.execute(text("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
    return {**counts, "head": tuple(head) if head else None}


def fill(registry: Registry, tmp_path: Path) -> dict[str, str]:
    """Generations, an external input with an edge, verifications, a refusal, an updated record and a checkpoint."""
    ids = _fill(registry)
    with registry.transaction() as session:
        session.get(Asset, ids["asset2"]).path = "/moved/there.png"  # an "update" entry
    identity = _identity(tmp_path)
    registry.checkpoint(chain_pem=identity.chain_pem, key_pem=identity.key_pem, alg=identity.alg)
    registry.record_verification(
        {"path": "/x.png", "verdict": "tampered", "asset_id": ids["asset0"]}, requester="auditor"
    )
    registry.record_refusal(plugin="blocklist", reason="blocked term: x", prompt="an x", requester="mallory",
                            request={"prompt": "an x", "seed": None})
    with registry.transaction() as session:
        session.add(Fingerprint(asset_id=ids["asset0"], kind="dhash", value="0123456789abcdef"))
    for _ in range(2):  # a failed batch job: inserted, then updated (attempt 2)
        jobs.record_failure(registry, job_key="job-1", request_sha256="ab" * 32, request={"prompt": "p"},
                            reason="`width`: bad")
    return ids


# -- round trips -----------------------------------------------------------------------------------


def test_export_import_export_is_identical(db_url, tmp_path):
    with open_registry(db_url) as source:
        fill(source, tmp_path)
        original = source.verify_chain()
        assert original.ok and original.checkpoints
        first = export_text(source, batch=3)  # small batches: partitions and flushes are exercised
    lines = [json.loads(line) for line in first.splitlines()]
    header = lines[0]
    assert header["type"] == "header" and header["format"] == FORMAT and header["schema_revision"] == head_revision()
    assert header["counts"] == {"generation": 1, "asset": 4, "edge": 1, "verification": 2, "refusal": 1,
                                "fingerprint": 1, "job": 1, "audit": 13, "checkpoint": 1}
    assert header["head"] == {"seq": original.head_seq, "entry_hash": original.head_hash}
    assert [line["type"] for line in lines[1:4]] == ["audit", "generation", "audit"]  # entry, then its record
    [asset] = [line for line in lines if line["type"] == "asset" and line["path"] == "/moved/there.png"]
    assert asset["created_at"].endswith("+00:00") and len(asset["created_at"]) == 32  # microseconds, UTC
    assert base64.b64decode(asset["manifest_store"]).startswith(b"\x00c2pa")
    position = {(line["type"], line.get("id")): n for n, line in enumerate(lines)}
    for line in lines:  # parents before children
        if line["type"] == "asset" and line["generation_id"]:
            assert position[("generation", line["generation_id"])] < position[("asset", line["id"])]
        if line["type"] == "edge":
            assert position[("asset", line["parent_id"])] < position[("edge", line["id"])]
            assert position[("asset", line["child_id"])] < position[("edge", line["id"])]

    with blank_registry(backend_of(db_url), tmp_path, "copy") as copy:
        result = import_text(copy, first, batch=2)
        assert result.inserted == header["counts"] and result.previous_head_seq == 0
        report = copy.verify_chain()
        assert report.ok and (report.head_seq, report.head_hash) == (original.head_seq, original.head_hash)
        assert [p["valid"] for p in report.checkpoints] == [True]
        second = export_text(copy)
        assert without_time(second) == without_time(first)
        # the same file again: nothing new, nothing changed
        before = state(copy)
        again = import_text(copy, first)
        assert sum(again.inserted.values()) == 0 and again.entries_known == 13 and state(copy) == before


@pytest.mark.postgres
def test_cross_backend_round_trip(tmp_path):
    with (
        blank_registry("sqlite", tmp_path, "a") as lite,
        blank_registry("postgresql", tmp_path, "b") as pg,
        blank_registry("sqlite", tmp_path, "c") as back,
    ):
        fill(lite, tmp_path)
        first = export_text(lite)
        import_text(pg, first)
        report = pg.verify_chain()
        assert report.ok and report.head_hash == lite.verify_chain().head_hash
        second = export_text(pg)
        assert without_time(second) == without_time(first)
        import_text(back, second)
        assert without_time(export_text(back)) == without_time(first)


def test_newer_export_of_the_same_registry_adds_what_is_new(db_url, tmp_path):
    with open_registry(db_url) as source, blank_registry("sqlite", tmp_path, "copy") as copy:
        ids = fill(source, tmp_path)
        import_text(copy, export_text(source))
        with source.transaction() as session:  # later: a new generation, and a change to an old record
            session.add(make_generation(source, 1, prompt="later"))
            session.get(Asset, ids["asset1"]).path = "/moved/again.png"
        newer = export_text(source)
        result = import_text(copy, newer)
        assert result.inserted["generation"] == 1 and result.inserted["asset"] == 1
        assert result.updated["asset"] == 1 and result.previous_head_seq == 13 and result.entries_known == 13
        assert copy.get_asset(ids["asset1"]).path == "/moved/again.png"
        assert without_time(export_text(copy)) == without_time(newer)
        assert copy.verify_chain().head_hash == source.verify_chain().head_hash


# -- refusals --------------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path) -> str:
    with blank_registry("sqlite", tmp_path, "source") as source:
        fill(source, tmp_path)
        return export_text(source)


def refused(registry: Registry, data: str, match: str) -> None:
    before = state(registry)
    with pytest.raises(RegistryError, match=match):
        import_text(registry, data, batch=2)
    assert state(registry) == before


def replace_line(data: str, number: int, new: str) -> str:
    lines = data.splitlines(keepends=True)
    lines[number - 1] = new
    return "".join(lines)


def test_corrupt_truncated_or_foreign_files_are_refused(db_url, exported):
    with open_registry(db_url) as target:
        lines = exported.splitlines(keepends=True)
        refused(
            target, replace_line(exported, 6, '{"type": "asset", "id": \n'), r"export.jsonl, line 6: not valid JSON"
        )
        refused(target, "".join(lines[:9]), r"truncated or incomplete: .*it ends at line 9")
        refused(target, "".join(lines[:-1]) + lines[-1][:40], rf"line {len(lines)}: not valid JSON .*truncated\?")
        refused(target, "hello\n", r"not a provgen registry export \(line 1 is not JSON\)")
        refused(target, '{"type": "generation"}\n', r"not a provgen registry export")
        refused(target, "", r"is empty")
        refused(target, exported.replace(FORMAT, "provgen-registry/9", 1), r"provgen-registry/9 export")
        refused(
            target,
            exported.replace(f'"schema_revision":"{head_revision()}"', '"schema_revision":"0001"', 1),
            r"schema revision '0001'",
        )
        line = json.loads(lines[4])
        assert line["type"] == "asset"
        line["manifest_store"] = "not base64!"
        refused(target, replace_line(exported, 5, json.dumps(line) + "\n"), r"line 5: asset.manifest_store is not")
        del line["manifest_store"]
        refused(target, replace_line(exported, 5, json.dumps(line) + "\n"), r"line 5: .*missing field\(s\) manifest")
        refused(target, replace_line(exported, 4, lines[1]), r"line 4: audit entry 1 where entry 2 was expected")
        refused(target, exported + exported.splitlines(keepends=True)[0], r"a second header")
        # a record changed in the file (its hash no longer matches the log): the check after the import fails
        line = json.loads(lines[4])
        line["path"] = "/forged.png"
        refused(target, replace_line(exported, 5, json.dumps(line) + "\n"), r"does not verify.*changed: asset")
        assert state(target)["audit"] == 0


def test_a_chain_that_does_not_extend_the_registry_is_refused(db_url, exported, tmp_path):
    with open_registry(db_url) as target:
        fill(target, tmp_path)  # the target has a history of its own
        refused(target, exported, r"line 2: the file's audit chain does not extend the registry's")
        assert target.verify_chain().ok


def test_an_older_export_is_refused(db_url, tmp_path):
    with blank_registry("sqlite", tmp_path, "source") as source, open_registry(db_url) as target:
        _fill(source)
        older = export_text(source)
        source.record_verification({"path": "/y.png", "verdict": "unknown"}, requester="auditor")
        import_text(target, export_text(source))
        refused(target, older, r"does not extend the registry's \(8 entries\): the registry is ahead")


def test_an_id_collision_is_refused(db_url, exported):
    with open_registry(db_url) as target:
        generation = json.loads(exported.splitlines()[2])
        assert generation["type"] == "generation"
        with target.engine.begin() as conn:  # a row with the same id, written behind the log's back
            values = {key: value for key, value in generation.items() if key != "type"}
            conn.execute(insert(Generation.__table__).values({**values, "created_at": datetime.now(UTC)}))
        refused(
            target,
            exported,
            rf"line 3: generation {generation['id']} is new in the file but the "
            r"registry already has a generation with this id \(id collision\)",
        )


# -- the command line, with real images ------------------------------------------------------------


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_round_trip_with_generated_images(tiny_sd_dir, tmp_path, monkeypatch):
    code, out, err = cli_run(
        "generate",
        "a red kite over dunes",
        "--model",
        str(tiny_sd_dir),
        "--width",
        "256",
        "--height",
        "256",
        "--steps",
        "2",
        "--seed",
        "3",
        "--num-images",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--json",
        "--quiet",
    )
    assert code == 0, err
    images = json.loads(out)["images"]
    export_file = tmp_path / "export" / "registry.jsonl"
    export_file.parent.mkdir()
    code, _, err = cli_run("registry", "export", "--out", str(export_file))
    assert code == 0, err
    assert "exported" in err and not list(export_file.parent.glob(".*partial"))
    code, stdout_export, _ = cli_run("registry", "export")
    assert code == 0 and without_time(stdout_export) == without_time(export_file.read_text(encoding="utf-8"))
    code, prov, err = cli_run("registry", "export", "--format", "prov")  # written by provenance/registry/prov.py
    assert code == 0, err
    assert {f"provgen:asset/{image['asset_id']}" for image in images} <= set(json.loads(prov)["entity"])

    monkeypatch.setenv("PROVGEN_REGISTRY_URL", f"sqlite:///{tmp_path / 'auditor' / 'registry.sqlite'}")
    code, out, err = cli_run("registry", "import", str(export_file), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["inserted"]["asset"] == 2 and result["inserted"]["generation"] == 1
    code, out, err = cli_run("registry", "import", str(export_file))  # again: nothing new
    assert code == 0 and "nothing new" in out and "audit chain verified" in out
    for image in images:  # --no-record: the auditor's copy stays an exact copy (see docs/registry_export.md)
        code, out, err = cli_run("verify", image["path"], "--no-record", "--json")
        [report] = json.loads(out)
        assert code == 0, err
        assert report["verdict"] == "verified" and report["asset_id"] == image["asset_id"]
    code, out, _ = cli_run("registry", "search", "--prompt", "RED KITE", "--json")
    assert code == 0 and {hit["id"] for hit in json.loads(out)} == {image["asset_id"] for image in images}
    code, copy_export, _ = cli_run("registry", "export")
    assert code == 0 and without_time(copy_export) == without_time(stdout_export)

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not an export\n", encoding="utf-8")
    code, _, err = cli_run("registry", "import", str(bad))
    assert code == 1 and "is not a provgen registry export" in err and "Traceback" not in err
