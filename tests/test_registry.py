"""The lineage registry (provgen.provenance.registry) on SQLite and PostgreSQL.

PostgreSQL tests get a fresh database per test, created from PROVGEN_TEST_POSTGRES_URL (default: the local
``test`` database) and dropped afterwards. Without a reachable server they skip, unless ``CI`` is set.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import InvalidRequestError

from provgen.core.errors import NotFoundError, RegistryError, ValidationError
from provgen.provenance.registry import (
    Asset,
    Generation,
    Registry,
    current_revision,
    head_revision,
    make_engine,
    open_registry,
)
from tests.factories import fake_asset, fake_generation

# -- backends --------------------------------------------------------------------------------------


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with open_registry(db_url) as reg:
        yield reg


# -- data ------------------------------------------------------------------------------------------


def make_asset(registry: Registry, batch_index: int, **fields) -> Asset:
    asset_id, watermark_id = registry.new_ids()
    return fake_asset(
        batch_index, **{"id": asset_id, "watermark_id": watermark_id, "watermark_method": "dwtDct", **fields}
    )


def make_generation(registry: Registry, num_assets: int = 2, asset_fields=(), **fields) -> Generation:
    generation = fake_generation(num_assets, **fields)
    extra = list(asset_fields) + [{}] * num_assets
    generation.assets = [make_asset(registry, i, **extra[i]) for i in range(num_assets)]
    return generation


def counts(registry: Registry) -> tuple[int, int]:
    with registry.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Generation)),
            session.scalar(select(func.count()).select_from(Asset)),
        )


# -- opening ---------------------------------------------------------------------------------------


def test_open_registry_migrates_blank_database_to_head(db_url):
    with pytest.raises(RegistryError, match="blank .*upgrade=True"):
        open_registry(db_url, upgrade=False)
    with open_registry(db_url) as registry:
        assert current_revision(registry.engine) == head_revision()
        assert {"generations", "assets", "alembic_version"} <= set(inspect(registry.engine).get_table_names())
        assert counts(registry) == (0, 0)
    for upgrade in (True, False):  # reopening an up-to-date registry is a no-op
        with open_registry(db_url, upgrade=upgrade) as again:
            assert current_revision(again.engine) == head_revision()


def test_sqlite_pragmas(tmp_path):
    with open_registry(f"sqlite:///{tmp_path / 'a' / 'b' / 'r.sqlite'}") as registry:
        assert (tmp_path / "a" / "b" / "r.sqlite").exists()
        with registry.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


def test_unreachable_postgres_is_a_quick_clear_error():
    url = "postgresql://provgen:s3cr3t-pw@127.0.0.1:1/provgen"
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        open_registry(url)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "s3cr3t-pw" not in message
    assert "postgresql+psycopg://provgen:***@127.0.0.1:1/provgen" in message
    assert "server is running" in message and message.startswith("connecting to the registry `")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mysql://root:hunter2@localhost/db", "unsupported registry URL scheme `mysql`"),
        ("sqlite+aiosqlite:///x.db", "unsupported registry URL scheme"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_urls(url, expected):
    with pytest.raises(RegistryError, match=expected) as info:
        open_registry(url)
    assert "hunter2" not in str(info.value)


def test_missing_psycopg_says_what_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a)
    )
    with pytest.raises(RegistryError, match=r"pip install 'provgen\[postgres\]'"):
        make_engine("postgres://u@localhost/db")


def test_postgres_url_spellings_use_psycopg3():
    for url in ("postgres://u:pw@h/db", "postgresql://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"):
        engine = make_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        engine.dispose()


def test_not_a_sqlite_file(tmp_path):
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="bogus.sqlite"):
        open_registry(f"sqlite:///{bogus}")


# -- writing and reading ---------------------------------------------------------------------------


def test_write_generation_and_read_back_through_every_finder(registry):
    generation = make_generation(registry, 2)
    with registry.transaction() as session:
        session.add(generation)
    first, second = generation.assets
    assert counts(registry) == (1, 2)

    by_id = (registry.get_asset(first.id), registry.get_asset(first.id[:8]), registry.get_asset(first.id.upper()))
    finders = (
        registry.find_by_sha256(first.sha256),
        registry.find_by_watermark(first.watermark_id),
        registry.find_by_manifest_label(first.manifest_label),
    )
    for found in by_id + finders:
        assert found is not None and found.id == first.id
        # the session is closed: relationships must already be loaded
        assert found.generation.id == generation.id
        assert found.manifest_store == first.manifest_store
        assert registry.asset_summary(found)["generation"]["asset_ids"] == [first.id, second.id]
    for found in by_id:  # get_asset loads the generation's other images too
        assert [a.id for a in found.generation.assets] == [first.id, second.id]
    for found in finders:  # the finders do not (half the time of a lookup), and say so instead of guessing
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = found.generation.assets
    assert registry.find_by_sha256(second.sha256).batch_index == 1
    assert registry.find_by_sha256("0" * 64) is None
    assert registry.find_by_watermark(0) is None
    assert registry.find_by_manifest_label("urn:c2pa:nope") is None

    loaded = registry.get_generation(generation.id)
    assert loaded.seed == 2**63 - 1
    assert loaded.recipe == generation.recipe and loaded.plugins == generation.plugins
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
    assert [a.batch_index for a in loaded.assets] == [0, 1]
    assert registry.get_generation(generation.id[:10]).id == generation.id

    nearest = registry.nearest_fingerprint(second.phash, 0)
    assert nearest is not None and nearest[0].id == second.id and nearest[1] == 0

    summary = registry.asset_summary(registry.get_asset(second.id))
    assert json.loads(json.dumps(summary)) == summary
    assert "manifest_store" not in summary and summary["manifest_store_size"] == len(second.manifest_store)
    assert summary["generation"]["id"] == generation.id
    assert summary["generation"]["asset_ids"] == [first.id, second.id]
    assert summary["created_at"].endswith("+00:00")
    assert datetime.fromisoformat(summary["created_at"]) == second.created_at


def test_duplicate_sha256_is_a_registry_error_and_writes_nothing(registry):
    original = make_generation(registry, 1)
    with registry.transaction() as session:
        session.add(original)
    before = counts(registry)

    duplicate = make_generation(registry, 2, asset_fields=[{}, {"sha256": original.assets[0].sha256}])
    with pytest.raises(RegistryError, match="refused") as info:
        with registry.transaction() as session:
            session.add(duplicate)
    assert registry.url in str(info.value)
    assert counts(registry) == before
    with pytest.raises(NotFoundError):
        registry.get_generation(duplicate.id)
    assert registry.find_by_watermark(duplicate.assets[0].watermark_id) is None

    orphan = make_asset(registry, 0, generation_id="f" * 32)  # foreign keys are enforced (SQLite too)
    with pytest.raises(RegistryError, match="refused"):
        with registry.transaction() as session:
            session.add(orphan)
    assert counts(registry) == before


def test_exception_inside_transaction_rolls_back(registry):
    generation = make_generation(registry, 2)
    with pytest.raises(ZeroDivisionError):
        with registry.transaction() as session:
            session.add(generation)
            session.flush()  # the rows reach the database inside the transaction...
            raise ZeroDivisionError("boom")
    assert counts(registry) == (0, 0)  # ...and are gone after the rollback
    with pytest.raises(NotFoundError):
        registry.get_generation(generation.id)


def test_models_validate_fields():
    with pytest.raises(ValidationError, match="asset.sha256"):
        Asset(sha256="ABC")
    with pytest.raises(ValidationError, match="asset.phash"):
        Asset(phash="xyz")
    with pytest.raises(ValidationError, match="asset.watermark_id"):
        Asset(watermark_id=2**48)
    with pytest.raises(ValidationError, match="asset.format"):
        Asset(format="GIF!")
    with pytest.raises(ValidationError, match="asset.kind"):
        Asset(kind="borrowed")
    with pytest.raises(ValidationError, match="generation.seed"):
        Generation(seed=-1)
    with pytest.raises(ValueError, match="naive"):
        Generation.__table__.c.created_at.type.process_bind_param(datetime(2024, 1, 1), None)


def test_new_ids(registry):
    drawn = {registry.new_ids() for _ in range(50)}
    assert len(drawn) == 50
    for asset_id, watermark_id in drawn:
        assert len(asset_id) == 32 and int(asset_id, 16) >= 0
        assert 0 < watermark_id < 2**48 - 1


# -- lookups ---------------------------------------------------------------------------------------


def test_get_asset_unknown_id_names_it(registry):
    with pytest.raises(NotFoundError, match="0123456789abcdef0123456789abcdef"):
        registry.get_asset("0123456789abcdef0123456789abcdef")
    with pytest.raises(NotFoundError, match="deadbeef"):
        registry.get_asset("deadbeef")
    with pytest.raises(NotFoundError, match="`abc`.*at least 8"):
        registry.get_asset("abc")
    with pytest.raises(NotFoundError, match="nope"):
        registry.get_generation("nope")


def test_prefix_lookup_must_be_unambiguous(registry):
    ids = ["abcdef01" + "0" * 24, "abcdef01" + "1" * 24, "abcdef02" + "0" * 24, "ffffffff" + "f" * 24]
    generation = make_generation(registry, 4, asset_fields=[{"id": i} for i in ids])
    with registry.transaction() as session:
        session.add(generation)
    assert registry.get_asset("abcdef02").id == ids[2]
    assert registry.get_asset("abcdef011").id == ids[1]
    assert registry.get_asset("ffffffff").id == ids[3]  # no upper bound for an all-f prefix
    with pytest.raises(NotFoundError, match="ambiguous") as info:
        registry.get_asset("abcdef01")
    assert ids[0] in str(info.value) and ids[1] in str(info.value)


def test_nearest_fingerprint(registry):
    assert registry.nearest_fingerprint("0" * 16, 64) is None  # empty registry
    base = 0x0123456789ABCDEF
    now = datetime.now(UTC)

    def flipped(bits: int) -> str:
        return f"{base ^ ((1 << bits) - 1):016x}"  # differs from base in exactly `bits` bits

    generation = make_generation(
        registry,
        4,
        asset_fields=[
            {"phash": flipped(10)},
            {"phash": flipped(3), "created_at": now - timedelta(hours=1)},
            {"phash": flipped(3), "created_at": now},  # same distance, newer: wins the tie
            {"phash": flipped(40)},
        ],
    )
    with registry.transaction() as session:
        session.add(generation)
    query = f"{base:016x}"

    match = registry.nearest_fingerprint(query, 8)
    assert match is not None
    asset, distance = match
    assert distance == 3 and asset.id == generation.assets[2].id
    assert asset.generation.id == generation.id
    assert registry.nearest_fingerprint(query, 2) is None
    assert registry.nearest_fingerprint(flipped(10), 0)[0].id == generation.assets[0].id
    assert registry.nearest_fingerprint(flipped(40), 64)[1] == 0
    with pytest.raises(ValidationError, match="phash"):
        registry.nearest_fingerprint("not-hex", 4)
    with pytest.raises(ValidationError, match="max_distance"):
        registry.nearest_fingerprint(query, 65)


# -- concurrency -----------------------------------------------------------------------------------


def test_locked_sqlite_file_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'locked.sqlite'}"
    open_registry(url).close()
    other = sqlite3.connect(tmp_path / "locked.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        registry = Registry(make_engine(url, sqlite_busy_timeout_ms=50))
        expected = "locked.sqlite` failed: another process holds the SQLite file locked"
        with pytest.raises(RegistryError, match=expected):
            with registry.transaction() as session:
                session.add(make_generation(registry, 1))
        registry.close()
    finally:
        other.execute("ROLLBACK")
        other.close()
