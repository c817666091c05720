"""Bad input on the registry side, against real databases: what the user sees, and that nothing half-happens.

An unreachable server, a database at an older schema, a SQLite file another process holds locked, and ids
that do not exist: each is a :class:`RegistryError` or :class:`NotFoundError` with a message that says what to
do, through the API and through the CLI (a one-line message and a non-zero exit, never a traceback).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import LargeBinary, bindparam, func, select, text

from provgen.cli.main import cli
from provgen.core.errors import NotFoundError, RegistryError
from provgen.provenance.registry import (
    Asset,
    AuditEntry,
    Generation,
    Registry,
    current_revision,
    head_revision,
    make_engine,
    open_registry,
    upgrade,
)
from provgen.provenance.registry.models import UTCDateTime, new_id, phash_bands
from tests.conftest import fresh_postgres_database
from tests.factories import fake_generation

UNREACHABLE = "postgresql+psycopg://provgen:s3cr3t-pw@127.0.0.1:1/provgen"


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_clean_failure(code: int, err: str, *expected: str) -> None:
    assert code != 0
    assert "Traceback" not in err and err.strip(), err
    for part in expected:
        assert part in err, (part, err)


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


def generation_with_asset() -> Generation:
    return fake_generation(1, seed=42, num_inference_steps=20, width=512, height=512)


def table_counts(registry: Registry) -> tuple[int, int, int]:
    with registry.session() as session:
        return tuple(  # type: ignore[return-value]
            int(session.scalar(select(func.count()).select_from(model))) for model in (Generation, Asset, AuditEntry)
        )


# -- unreachable server ----------------------------------------------------------------------------


def test_unreachable_postgres_fails_fast_with_a_clear_message():
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        open_registry(UNREACHABLE)
    assert time.monotonic() - started < 5  # refused at once, not a long connect timeout
    message = str(info.value)
    assert message.startswith("connecting to the registry `postgresql+psycopg://provgen:***@127.0.0.1:1/provgen`")
    assert "server is running" in message
    assert "s3cr3t-pw" not in message


def test_unreachable_postgres_through_the_cli(monkeypatch):
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", UNREACHABLE)
    started = time.monotonic()
    code, _, err = run_cli("registry", "show", "0" * 32)
    assert time.monotonic() - started < 10
    assert_clean_failure(code, err, "connecting to the registry", "127.0.0.1:1", "server is running")
    assert "s3cr3t-pw" not in err


# -- older schema ----------------------------------------------------------------------------------

OLD_PHASH = "c3a5f00f12345678"


def make_old_registry(url: str) -> dict[str, str]:
    """A database at revision 0001 (before lineage and the audit log) holding one generation and asset."""
    engine = make_engine(url)
    try:
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        ids = {"generation": new_id(), "asset": new_id(), "sha256": secrets.token_hex(32)}
        now = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO generations (id, created_at, requester, model_id, model_hash, pipeline_class, "
                    "scheduler, prompt, negative_prompt, seed, num_inference_steps, guidance_scale, width, height, "
                    "num_images, recipe, plugins) VALUES (:id, :now, 'alice', 'tiny-sd', :model_hash, "
                    "'StableDiffusionPipeline', 'EulerDiscreteScheduler', 'a lighthouse', NULL, 7, 2, 7.5, 64, 64, "
                    "1, '{\"prompt\": \"a lighthouse\"}', '[]')"
                ).bindparams(bindparam("now", type_=UTCDateTime())),
                {"id": ids["generation"], "now": now, "model_hash": "ab" * 32},
            )
            conn.execute(
                text(
                    "INSERT INTO assets (id, generation_id, batch_index, seed, created_at, sha256, watermark_id, "
                    "watermark_method, phash, format, width, height, size_bytes, path, manifest_label, "
                    "manifest_store) VALUES (:id, :generation, 0, 7, :now, :sha256, 123456789, 'dwtDct', :phash, "
                    "'png', 64, 64, 4096, '/out/old.png', :label, :store)"
                ).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("store", type_=LargeBinary())),
                {
                    "id": ids["asset"],
                    "generation": ids["generation"],
                    "now": now,
                    "sha256": ids["sha256"],
                    "phash": OLD_PHASH,
                    "label": f"urn:c2pa:{ids['asset']}",
                    "store": b"c2pa-old-manifest",
                },
            )
    finally:
        engine.dispose()
    return ids


def test_older_schema_is_refused_until_migrated_then_upgraded_with_bands_and_audit_log(db_url):
    ids = make_old_registry(db_url)

    with pytest.raises(RegistryError) as info:
        open_registry(db_url, upgrade="blank")
    message = str(info.value)
    assert "at schema revision '0001'" in message and f"needs {head_revision()!r}" in message
    assert "run `provgen registry migrate`" in message
    with pytest.raises(RegistryError, match="upgrade=True"):
        open_registry(db_url, upgrade=False)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == "0001"  # refusing changed nothing
    finally:
        engine.dispose()

    with open_registry(db_url) as registry:  # upgrade=True migrates
        assert current_revision(registry.engine) == head_revision()
        old = registry.get_asset(ids["asset"])
        assert old.kind == "generated" and old.sha256 == ids["sha256"]
        assert (old.phash_0, old.phash_1, old.phash_2, old.phash_3) == phash_bands(OLD_PHASH)
        assert registry.nearest_fingerprint(OLD_PHASH, 0) is not None  # the band indexes now find it
        report = registry.verify_chain()
        assert report.ok, [str(problem) for problem in report.problems]
        assert report.entries == report.records == 2  # the backfill logged the generation and the asset
        with registry.session() as session:
            logged = session.execute(
                select(AuditEntry.seq, AuditEntry.record_type, AuditEntry.record_id).order_by(AuditEntry.seq)
            ).all()
        assert [tuple(row) for row in logged] == [(1, "generation", ids["generation"]), (2, "asset", ids["asset"])]
        # and it is an ordinary registry now: writes extend the same chain
        with registry.transaction() as session:
            session.add(generation_with_asset())
        report = registry.verify_chain()
        assert report.ok and report.entries == 4


def test_older_schema_through_the_cli(db_url, monkeypatch):
    ids = make_old_registry(db_url)
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", db_url)
    code, _, err = run_cli("registry", "show", ids["asset"])
    assert_clean_failure(code, err, "at schema revision '0001'", "provgen registry migrate")

    code, out, err = run_cli("registry", "migrate")
    assert code == 0, err
    assert f"migrated from 0001 to {head_revision()}" in out
    code, out, err = run_cli("registry", "show", ids["asset"], "--json")
    assert code == 0, err
    assert ids["sha256"] in out


# -- locked SQLite file ----------------------------------------------------------------------------


def test_locked_sqlite_file_is_a_clear_error_and_nothing_is_written(tmp_path: Path):
    path = tmp_path / "locked.sqlite"
    url = f"sqlite:///{path}"
    with open_registry(url) as registry:
        with registry.transaction() as session:
            session.add(existing := generation_with_asset())
        before = table_counts(registry)
        head_before = registry.verify_chain().head_hash

    other = sqlite3.connect(path, isolation_level=None)  # another process writing, and taking its time
    other.execute("BEGIN EXCLUSIVE")
    try:
        registry = Registry(make_engine(url, sqlite_busy_timeout_ms=100))
        try:
            started = time.monotonic()
            with pytest.raises(RegistryError) as info:
                with registry.transaction() as session:
                    session.add(generation_with_asset())
            assert time.monotonic() - started < 5  # gave up after the busy timeout
            message = str(info.value)
            assert "locked.sqlite` failed: another process holds the SQLite file locked" in message
            assert "retry when that process is done" in message
            with pytest.raises(RegistryError, match="holds the SQLite file locked"):
                registry.record_verification({"path": "/tmp/x.png", "verdict": "unknown"}, requester="bob")
            # WAL: readers are not blocked by the writer
            assert registry.find_by_sha256(existing.assets[0].sha256).id == existing.assets[0].id
        finally:
            registry.close()
    finally:
        other.execute("ROLLBACK")
        other.close()

    with open_registry(url) as registry:  # nothing was partially written, and the chain is as it was
        assert table_counts(registry) == before
        report = registry.verify_chain()
        assert report.ok and report.head_hash == head_before
        with registry.transaction() as session:  # once the lock is gone, the same write goes through
            session.add(generation_with_asset())
        assert table_counts(registry) == (before[0] + 1, before[1] + 1, before[2] + 2)


# -- records that do not exist ---------------------------------------------------------------------


def test_unknown_ids_are_not_found(registry: Registry):
    with registry.transaction() as session:
        session.add(generation := generation_with_asset())
    assert generation.assets
    missing = "f" * 32  # never a uuid4 hex (its 13th digit is always 4)
    for lookup, what in ((registry.get_asset, "asset"), (registry.get_generation, "generation")):
        with pytest.raises(NotFoundError, match=f"no {what} `{missing}` in the registry"):
            lookup(missing)
        with pytest.raises(NotFoundError, match=f"no {what} `NOPE` in the registry: {what} ids are 32 hex"):
            lookup("NOPE")
        with pytest.raises(NotFoundError, match="ids are 32 hex"):
            lookup("")
    with pytest.raises(NotFoundError, match="no asset `ffffffffffff`"):  # a prefix that matches nothing
        registry.get_asset("f" * 12)
    assert registry.find_by_sha256("0" * 64) is None
    assert registry.find_by_watermark(2**48 - 1) is None
    assert registry.find_by_manifest_label("urn:c2pa:nope") is None


def test_unknown_id_through_the_cli(db_url, monkeypatch):
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", db_url)
    code, out, err = run_cli("registry", "show", "NOPE")
    assert_clean_failure(code, err, "no asset `NOPE` in the registry")
    assert out == ""
    code, _, err = run_cli("registry", "show", "0" * 32, "--json")
    assert_clean_failure(code, err, f"no asset `{'0' * 32}` in the registry")


@pytest.mark.postgres
def test_lookups_survive_a_server_that_dropped_the_pooled_connections():
    """The finders skip the pre-ping round trip; a connection the server killed is replaced, the read repeated."""
    with fresh_postgres_database() as db_url, open_registry(db_url) as registry:
        generation = generation_with_asset()
        with registry.transaction() as session:
            session.add(generation)
        asset = generation.assets[0]
        assert registry.find_by_watermark(asset.watermark_id).id == asset.id  # pools a connection
        admin = make_engine(db_url).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
        finally:
            admin.dispose()
        assert killed >= 1
        assert registry.find_by_sha256(asset.sha256).id == asset.id
        assert registry.find_by_watermark(asset.watermark_id).id == asset.id
        assert registry.asset_summary(registry.get_asset(asset.id))["id"] == asset.id
