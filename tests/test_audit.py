"""The registry's audit hash chain and signed checkpoints, on SQLite and PostgreSQL.

Tampering is done with raw SQL behind the ORM's back, as an intruder with database access would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from provgen.cli.main import cli
from provgen.core.errors import RegistryError, ValidationError
from provgen.provenance.keys import ensure_dev_keys, load_dev_identity
from provgen.provenance.registry import Fingerprint, LineageEdge, Registry, audit, jobs, open_registry
from provgen.provenance.registry.checkpoints import from_export, to_export
from tests.test_registry import make_generation


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


def _fill(registry: Registry) -> dict[str, str]:
    """One generation with three assets, an external input with an edge, and a recorded verification."""
    generation = make_generation(registry, num_assets=3)
    with registry.transaction() as session:
        session.add(generation)
    with registry.transaction() as session:
        source = registry.record_input(session, data=b"not really an image", path="/in/sketch.bin")
        session.flush()
        edge = LineageEdge(
            parent_id=source.id,
            child_id=generation.assets[0].id,
            generation_id=generation.id,
            relation="inputTo",
            role="controlnet",
        )
        session.add(edge)
    verification = registry.record_verification(
        {
            "path": "/tmp/x.png",
            "verdict": "verified",
            "match": "manifest",
            "asset_id": generation.assets[1].id,
            "sha256": generation.assets[1].sha256,
        },
        requester="auditor",
    )
    return {
        "generation": generation.id,
        "asset0": generation.assets[0].id,
        "asset1": generation.assets[1].id,
        "asset2": generation.assets[2].id,
        "input": source.id,
        "edge": edge.id,
        "verification": verification,
    }


def _sql(registry: Registry, statement: str, **params) -> None:
    with registry.engine.begin() as conn:
        conn.execute(text(statement), params)


def _position(registry: Registry, record_id: str) -> int:
    with registry.engine.connect() as conn:
        return conn.execute(text("SELECT max(seq) FROM audit_log WHERE record_id = :i"), {"i": record_id}).scalar()


def _kinds(report: audit.ChainReport) -> set[tuple[str, str | None]]:
    return {(p.kind, p.record_id) for p in report.problems}


def test_every_write_is_chained(registry):
    ids = _fill(registry)
    report = registry.verify_chain()
    assert report.ok, report.problems
    # 1 generation + 3 assets, 1 input asset + 1 edge, 1 verification
    assert report.entries == 7 and report.records == 7 and report.head_seq == 7
    with registry.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, record_type, record_id, prev_hash, entry_hash FROM audit_log ORDER BY seq")
        ).all()
    assert [r.seq for r in rows] == list(range(1, 8))
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in zip(rows, rows[1:], strict=False))
    assert rows[0].record_type == "generation" and rows[0].record_id == ids["generation"]
    assert {r.record_id for r in rows} == set(ids.values())


def test_changed_record_is_caught(registry):
    ids = _fill(registry)
    _sql(registry, "UPDATE assets SET path = '/elsewhere.png' WHERE id = :id", id=ids["asset1"])
    report = registry.verify_chain()
    assert not report.ok
    assert _kinds(report) == {("changed", ids["asset1"])}
    assert report.problems[0].position == _position(registry, ids["asset1"])
    # the chain links themselves are intact: --chain-only does not see a changed record
    assert registry.verify_chain(records=False).ok


def test_changed_json_and_generation_field_is_caught(registry):
    ids = _fill(registry)
    _sql(registry, "UPDATE generations SET guidance_scale = 7.0 WHERE id = :id", id=ids["generation"])
    assert _kinds(registry.verify_chain()) == {("changed", ids["generation"])}


def test_deleted_record_is_caught(registry):
    ids = _fill(registry)
    _sql(registry, "DELETE FROM verifications WHERE id = :id", id=ids["verification"])
    report = registry.verify_chain()
    assert _kinds(report) == {("deleted", ids["verification"])}
    assert report.problems[0].position == 7


def test_inserted_record_is_caught(registry):
    ids = _fill(registry)
    _sql(
        registry,
        "INSERT INTO verifications (id, created_at, requester, path, sha256, verdict, match, asset_id, "
        "report) VALUES ('ffffffffffffffffffffffffffffffff', :now, 'intruder', '/x', NULL, 'verified', "
        "'manifest', :asset, '{}')",
        now="2026-01-01 00:00:00+00:00",
        asset=ids["asset0"],
    )
    report = registry.verify_chain()
    assert _kinds(report) == {("inserted", "ffffffffffffffffffffffffffffffff")}
    assert report.problems[0].position is None


def test_reordered_entries_are_caught(registry):
    _fill(registry)
    _sql(registry, "UPDATE audit_log SET seq = -3 WHERE seq = 3")
    _sql(registry, "UPDATE audit_log SET seq = 3 WHERE seq = 4")
    _sql(registry, "UPDATE audit_log SET seq = 4 WHERE seq = -3")
    report = registry.verify_chain()
    kinds = {p.kind for p in report.problems}
    assert "reordered" in kinds and kinds <= {"reordered", "broken"}
    assert {p.position for p in report.problems if p.kind == "reordered"} & {3, 4, 5}


def test_altered_and_deleted_entries_are_caught(registry):
    ids = _fill(registry)
    _sql(registry, "UPDATE audit_log SET record_hash = :h WHERE seq = 2", h="0" * 64)
    report = registry.verify_chain()
    assert ("altered", report.problems[0].record_id) in _kinds(report) and report.problems[0].position == 2
    # the record no longer matches the (altered) entry either
    assert any(p.kind == "changed" for p in report.problems)

    _sql(registry, "DELETE FROM audit_log WHERE seq = 5")
    report = registry.verify_chain()
    deleted = [p for p in report.problems if p.kind == "deleted" and p.record_id is None]
    assert deleted and deleted[0].position == 5 and "5 are missing" in deleted[0].detail
    assert ("inserted", ids["input"]) in _kinds(report)  # its only entry is gone


def test_raw_row_hashing_equals_the_orm_row_hash_for_every_audited_table(registry):
    """``registry verify`` hashes raw driver rows; they must hash exactly as the rows SQLAlchemy hands back."""
    _fill(registry)
    generation = make_generation(registry, num_assets=1)
    generation.recipe = {"prompt": "façade ✓ \"quoted\"\n", "weights": [0.1, 1e-7, 3.0, -2.5], "nested": {"b": None}}
    generation.guidance_scale = 7.0  # a whole-number double
    with registry.transaction() as session:
        session.add(generation)
    registry.record_refusal(
        plugin="blocklist", reason="blocked word", prompt="ünïcode", request={"a": [1, 2.5, None]}, requester="r"
    )
    with registry.transaction() as session:
        session.add(Fingerprint(asset_id=generation.assets[0].id, kind="dhash", value="00ff00ff00ff00ff"))
    with registry.transaction() as session:  # a batch job done by that generation, with a non-ASCII key
        jobs.claim(session, job_key="lot-ünï 1", request_sha256="cd" * 32, request={"prompt": "p", "seed": None},
                   generation_id=generation.id)
    jobs.record_failure(registry, job_key="j2", request_sha256="ef" * 32, request={"line": "{bad"}, reason="x")
    with registry.engine.connect() as conn:
        for record_type, table in audit._TABLES.items():
            hasher, ordered = audit._RawRecordHasher(conn, record_type), table.select().order_by(table.c.id)
            orm = [audit.record_hash(record_type, row) for row in conn.execute(ordered).mappings()]
            raw = [hasher(row) for row in audit._raw_stream(conn, ordered)]
            assert raw == orm and orm, record_type


def test_parallel_verification_finds_exactly_what_the_serial_one_finds(registry, tmp_path):
    """Every kind of tampering at once, with slice boundaries falling between the tampered entries."""
    ids = [_fill(registry) for _ in range(4)]  # 25 entries (the input asset is shared): slices of 2, 3 workers
    # start at 1, 13 / 1, 9, 17
    identity = _identity(tmp_path)
    registry.checkpoint(chain_pem=identity.chain_pem, key_pem=identity.key_pem, alg=identity.alg)
    _sql(registry, "UPDATE assets SET path = '/elsewhere.png' WHERE id = :id", id=ids[0]["asset1"])  # changed
    _sql(registry, "DELETE FROM verifications WHERE id = :id", id=ids[1]["verification"])  # deleted record
    _sql(registry, "UPDATE audit_log SET record_hash = :h WHERE seq = 9", h="0" * 64)  # altered entry
    _sql(registry, "DELETE FROM audit_log WHERE seq IN (16, 17)")  # deleted entries across a slice boundary
    _sql(registry, "UPDATE audit_log SET seq = -3 WHERE seq = 12")  # reordered across a slice boundary
    _sql(registry, "UPDATE audit_log SET seq = 12 WHERE seq = 13")
    _sql(registry, "UPDATE audit_log SET seq = 13 WHERE seq = -3")
    serial = registry.verify_chain(workers=1)
    assert serial.workers == 1 and not serial.ok
    assert {"changed", "deleted", "altered", "reordered", "inserted"} <= {p.kind for p in serial.problems}
    for workers in (2, 3):
        parallel = registry.verify_chain(workers=workers)
        assert parallel.workers == workers
        assert parallel.problems == serial.problems
        assert (parallel.entries, parallel.records, parallel.head_seq, parallel.head_hash) == (
            serial.entries,
            serial.records,
            serial.head_seq,
            serial.head_hash,
        )
        assert parallel.checkpoints == serial.checkpoints and all(c["valid"] for c in parallel.checkpoints)
    with pytest.raises(ValidationError, match="workers"):
        registry.verify_chain(workers=0)


def test_orm_deletes_are_refused(registry):
    ids = _fill(registry)
    with pytest.raises(RegistryError, match="append-only"), registry.transaction() as session:
        session.delete(session.get(LineageEdge, ids["edge"]))
    assert registry.verify_chain().ok


def test_orm_updates_are_chained(registry):
    ids = _fill(registry)
    from provgen.provenance.registry import Asset

    with registry.transaction() as session:
        session.get(Asset, ids["asset2"]).path = "/moved/there.png"
    report = registry.verify_chain()
    assert report.ok and report.entries == 8
    with registry.engine.connect() as conn:
        action = conn.execute(text("SELECT action FROM audit_log WHERE seq = 8")).scalar()
    assert action == "update"


def _identity(tmp_path: Path):
    ensure_dev_keys(tmp_path / "keys")
    return load_dev_identity(tmp_path / "keys")


def test_checkpoint_catches_a_recomputed_chain(registry, tmp_path):
    ids = _fill(registry)
    identity = _identity(tmp_path)
    point = registry.checkpoint(chain_pem=identity.chain_pem, key_pem=identity.key_pem, alg=identity.alg)
    assert point.seq == 7 and point.algorithm == "ES256"
    exported = from_export(json.loads(json.dumps(to_export(point))), "memory")
    report = registry.verify_chain(checkpoints=[exported])
    assert report.ok and [c["valid"] for c in report.checkpoints] == [True, True]

    # an intruder changes a record AND rewrites every hash after it: the chain is consistent again ...
    _sql(registry, "UPDATE assets SET path = '/forged.png' WHERE id = :id", id=ids["asset0"])
    with registry.engine.begin() as conn:
        rows = conn.execute(
            text("SELECT seq, created_at, record_type, record_id, action FROM audit_log ORDER BY seq")
        ).all()
        prev = audit.GENESIS
        for seq, _, record_type, record_id, action in rows:
            created = conn.execute(text("SELECT created_at FROM audit_log WHERE seq = :s"), {"s": seq})
            from provgen.provenance.registry.models import AuditEntry

            moment = conn.execute(AuditEntry.__table__.select().where(AuditEntry.seq == seq)).first().created_at
            created.close()
            table = audit._TABLES[record_type]
            row = conn.execute(table.select().where(table.c.id == record_id)).mappings().one()
            digest = audit.record_hash(record_type, row)
            new = audit.entry_hash(prev, moment, record_type, record_id, action, digest)
            conn.execute(
                text("UPDATE audit_log SET record_hash = :r, prev_hash = :p, entry_hash = :e WHERE seq = :s"),
                {"r": digest, "p": prev, "e": new, "s": seq},
            )
            prev = new
    assert registry.verify_chain(checkpoints=[]).ok is False  # the stored checkpoint still catches it
    # ... and even if the intruder deletes the stored checkpoint, the auditor's exported copy catches it
    _sql(registry, "DELETE FROM checkpoints")
    assert registry.verify_chain().ok
    report = registry.verify_chain(checkpoints=[exported])
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "rewritten" in report.problems[0].detail


def test_forged_checkpoint_signature_is_caught(registry, tmp_path):
    _fill(registry)
    identity = _identity(tmp_path)
    registry.checkpoint(chain_pem=identity.chain_pem, key_pem=identity.key_pem, alg=identity.alg)
    _sql(registry, "UPDATE checkpoints SET seq = 6, head_hash = (SELECT entry_hash FROM audit_log WHERE seq = 6)")
    report = registry.verify_chain()
    assert [p.kind for p in report.problems] == ["checkpoint"]
    assert "signed payload" in report.problems[0].detail


def test_older_registry_migrates_and_backfills(db_url):
    from provgen.provenance.registry import db

    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO generations (id, created_at, requester, model_id, model_hash, pipeline_class, "
                    "scheduler, prompt, seed, num_inference_steps, guidance_scale, width, height, num_images, recipe, "
                    "plugins) VALUES (:g, :t, 'old', 'm', :h, 'P', 'ddim', 'an old one', 1, 2, 7.5, 64, 64, 1, '{}', "
                    "'[]')"
                ),
                {"g": "a" * 32, "t": "2025-01-01 00:00:00+00:00", "h": "b" * 64},
            )
            conn.execute(
                text(
                    "INSERT INTO assets (id, generation_id, batch_index, seed, created_at, sha256, watermark_id, "
                    "watermark_method, phash, format, width, height, size_bytes, path, manifest_label, manifest_store) "
                    "VALUES (:a, :g, 0, 1, :t, :s, 77, 'provgen-grid/1', 'f0f0f0f0f0f0f0f0', 'png', 64, 64, 10, "
                    "'/x.png', 'urn:c2pa:old', :m)"
                ),
                {"a": "c" * 32, "g": "a" * 32, "t": "2025-01-01 00:00:00+00:00", "s": "d" * 64, "m": b"store"},
            )
    finally:
        engine.dispose()
    with pytest.raises(RegistryError, match="provgen registry migrate"):
        open_registry(db_url, upgrade="blank")
    runner = CliRunner()
    env = {"PROVGEN_REGISTRY_URL": db_url}
    result = runner.invoke(cli, ["registry", "check", "--json"], env=env)
    assert result.exit_code == 1 and json.loads(result.output)["revision"] == "0001"
    result = runner.invoke(cli, ["registry", "migrate", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["from"] == "0001" and json.loads(result.output)["to"] == db.head_revision()
    result = runner.invoke(cli, ["registry", "check"], env=env)
    assert result.exit_code == 0, result.output
    with open_registry(db_url, upgrade="blank") as registry:
        report = registry.verify_chain()
        assert report.ok and report.entries == 2
        assert registry.nearest_fingerprint("f0f0f0f0f0f0f0f1", 2)[0].id == "c" * 32  # bands were filled


def test_cli_verify_and_checkpoint(db_url, tmp_path):
    with open_registry(db_url) as registry:
        ids = _fill(registry)
    runner = CliRunner()
    env = {"PROVGEN_REGISTRY_URL": db_url}
    result = runner.invoke(cli, ["registry", "verify"], env=env)
    assert result.exit_code == 0 and "audit log intact" in result.output
    exported = tmp_path / "cp.json"
    result = runner.invoke(cli, ["registry", "checkpoint", "--export", str(exported), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(exported.read_text())["seq"] == 7
    result = runner.invoke(cli, ["registry", "verify", "--checkpoint", str(exported), "--json"], env=env)
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True

    with open_registry(db_url) as registry:
        _sql(registry, "UPDATE generations SET prompt = 'something else' WHERE id = :id", id=ids["generation"])
    result = runner.invoke(cli, ["registry", "verify", "--json"], env=env)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["workers"] == 1  # a small registry is checked in-process
    problems = report["problems"]
    assert [(p["kind"], p["record_id"], p["position"]) for p in problems] == [("changed", ids["generation"], 1)]
    result = runner.invoke(cli, ["registry", "verify", "--json", "--workers", "2"], env=env)
    assert result.exit_code == 1 and json.loads(result.output)["workers"] == 2
    assert json.loads(result.output)["problems"] == problems
    result = runner.invoke(cli, ["registry", "verify"], env=env)
    assert result.exit_code == 1 and f"PROBLEM changed: generation {ids['generation']}" in result.output

    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"type": "something"}')
    result = runner.invoke(cli, ["registry", "verify", "--checkpoint", str(bogus)], env=env)
    assert result.exit_code != 0 and "not a provgen registry checkpoint" in result.output
    assert "Traceback" not in result.output


def test_check_catches_drift(db_url):
    runner = CliRunner()
    env = {"PROVGEN_REGISTRY_URL": db_url}
    with open_registry(db_url) as registry:
        _sql(registry, "ALTER TABLE checkpoints ADD COLUMN note TEXT")
    result = runner.invoke(cli, ["registry", "check"], env=env)
    assert result.exit_code == 1 and "differ" in result.output
