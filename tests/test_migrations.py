"""The registry's Alembic migrations: blank upgrade, the schema they create, no drift from the models,
older and newer databases. Runs on SQLite and PostgreSQL (a fresh database per test, as in test_registry.py).
"""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, inspect, text
from sqlalchemy.types import TypeEngine

from provgen.core.errors import RegistryError
from provgen.provenance.registry import check, current_revision, head_revision, make_engine, open_registry
from provgen.provenance.registry import db as registry_db
from provgen.provenance.registry.db import MIGRATIONS_DIR, alembic_config, downgrade

# column -> (python type, nullable, length) of the schema at head
EXPECTED = {
    "generations": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "requester": (str, False, 255),
        "model_id": (str, False, 1024),
        "model_hash": (str, False, 64),
        "pipeline_class": (str, False, 255),
        "scheduler": (str, False, 255),
        "prompt": (str, False, None),
        "negative_prompt": (str, True, None),
        "seed": (int, False, None),
        "num_inference_steps": (int, False, None),
        "guidance_scale": (float, False, None),
        "width": (int, False, None),
        "height": (int, False, None),
        "num_images": (int, False, None),
        "recipe": ("json", False, None),
        "plugins": ("json", False, None),
    },
    "assets": {
        "id": (str, False, 32),
        "kind": (str, False, 16),
        "generation_id": (str, True, 32),
        "batch_index": (int, True, None),
        "seed": (int, True, None),
        "created_at": (datetime, False, None),
        "sha256": (str, False, 64),
        "watermark_id": (int, True, None),
        "watermark_method": (str, True, 64),
        "phash": (str, True, 16),
        "phash_0": (int, True, None),
        "phash_1": (int, True, None),
        "phash_2": (int, True, None),
        "phash_3": (int, True, None),
        "format": (str, False, 16),
        "width": (int, True, None),
        "height": (int, True, None),
        "size_bytes": (int, False, None),
        "path": (str, True, None),
        "manifest_label": (str, True, 255),
        "manifest_store": (bytes, True, None),
    },
    "fingerprints": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "asset_id": (str, False, 32),
        "kind": (str, False, 16),
        "value": (str, False, 64),
    },
    "lineage_edges": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "parent_id": (str, False, 32),
        "child_id": (str, False, 32),
        "generation_id": (str, True, 32),
        "relation": (str, False, 16),
        "role": (str, False, 64),
    },
    "verifications": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "requester": (str, False, 255),
        "path": (str, False, None),
        "sha256": (str, True, 64),
        "verdict": (str, False, 16),
        "match": (str, True, 16),
        "asset_id": (str, True, 32),
        "report": ("json", False, None),
    },
    "audit_log": {
        "seq": (int, False, None),
        "created_at": (datetime, False, None),
        "record_type": (str, False, 32),
        "record_id": (str, False, 64),
        "action": (str, False, 16),
        "record_hash": (str, False, 64),
        "prev_hash": (str, False, 64),
        "entry_hash": (str, False, 64),
    },
    "refusals": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "requester": (str, False, 255),
        "plugin": (str, False, 255),
        "reason": (str, False, None),
        "prompt": (str, False, None),
        "request": ("json", False, None),
    },
    "batch_jobs": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "updated_at": (datetime, False, None),
        "job_key": (str, False, 255),
        "request_sha256": (str, False, 64),
        "status": (str, False, 16),
        "generation_id": (str, True, 32),
        "reason": (str, True, None),
        "attempts": (int, False, None),
        "request": ("json", False, None),
    },
    "checkpoints": {
        "id": (str, False, 32),
        "created_at": (datetime, False, None),
        "seq": (int, False, None),
        "head_hash": (str, False, 64),
        "payload": (str, False, None),
        "algorithm": (str, False, 16),
        "signature": (bytes, False, None),
        "certificate_chain": (str, False, None),
        "signer": (str, False, 512),
    },
}
EXPECTED_INDEXES = {
    "generations": {
        (f"ix_generations_{name}", (name,), False) for name in ("created_at", "requester", "model_id", "model_hash")
    },
    "assets": {
        ("ix_assets_generation_id", ("generation_id",), False),
        ("ix_assets_created_at", ("created_at",), False),
        ("ix_assets_manifest_label", ("manifest_label",), True),
        ("ix_assets_phash", ("phash",), False),
        *{(f"ix_assets_phash_{i}", (f"phash_{i}",), False) for i in range(4)},
        ("ix_assets_sha256", ("sha256",), True),
        ("ix_assets_watermark_id", ("watermark_id",), True),
    },
    "fingerprints": {("ix_fingerprints_asset_id", ("asset_id",), False)},
    "lineage_edges": {
        ("ix_lineage_edges_parent_id", ("parent_id",), False),
        ("ix_lineage_edges_child_id", ("child_id",), False),
        ("ix_lineage_edges_generation_id", ("generation_id",), False),
    },
    "verifications": {
        ("ix_verifications_asset_id", ("asset_id",), False),
        ("ix_verifications_created_at", ("created_at",), False),
        ("ix_verifications_sha256", ("sha256",), False),
        ("ix_verifications_verdict", ("verdict",), False),
        ("ix_verifications_asset_id_created_at", ("asset_id", "created_at"), False),
    },
    "refusals": {
        (f"ix_refusals_{name}", (name,), False) for name in ("created_at", "plugin", "requester")
    },
    "batch_jobs": {
        (f"ix_batch_jobs_{name}", (name,), False) for name in ("generation_id", "status", "updated_at")
    },
    "audit_log": {("ix_audit_log_record", ("record_type", "record_id", "seq"), False)},
    "checkpoints": {("ix_checkpoints_seq", ("seq",), False)},
}
EXPECTED_UNIQUES = {
    "generations": set(),
    "assets": {("uq_assets_generation_id_batch_index", ("generation_id", "batch_index"))},
    "lineage_edges": {("uq_lineage_edges_parent_id_child_id_role", ("parent_id", "child_id", "role"))},
    "verifications": set(),
    "refusals": set(),
    "fingerprints": {("uq_fingerprints_asset_id_kind", ("asset_id", "kind"))},
    "batch_jobs": {("uq_batch_jobs_job_key", ("job_key",))},
    "audit_log": {("uq_audit_log_entry_hash", ("entry_hash",))},
    "checkpoints": set(),
}
# integer columns that must hold 64-bit values (seeds up to 2**63-1, 48-bit watermark ids)
BIGINT_COLUMNS = {("generations", "seed"), ("assets", "seed"), ("assets", "watermark_id"), ("audit_log", "seq")}




def _kind(type_: TypeEngine) -> object:
    """A backend-neutral name for a reflected column type."""
    if isinstance(type_, JSON):
        return "json"
    return type_.python_type


# -- tests -------------------------------------------------------------------------------------------


def test_revisions_form_one_linear_history():
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == [head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    for revision in revisions:  # files are named <rev>_<slug>.py
        assert os.path.basename(revision.path).startswith(f"{revision.revision}_")


def test_blank_upgrade_creates_expected_schema(db_url):
    with open_registry(db_url) as registry:
        assert current_revision(registry.engine) == head_revision()
        inspector = inspect(registry.engine)
        assert set(inspector.get_table_names()) == {"alembic_version", *EXPECTED}
        for table, expected in EXPECTED.items():
            columns = {c["name"]: c for c in inspector.get_columns(table)}
            actual = {
                name: (_kind(c["type"]), c["nullable"], getattr(c["type"], "length", None))
                for name, c in columns.items()
            }
            assert actual == expected, table
            indexes = {
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
                if not ix.get("duplicates_constraint")  # PostgreSQL lists a unique constraint's index too
            }
            assert indexes == EXPECTED_INDEXES[table]
            uniques = {(u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)}
            assert uniques == EXPECTED_UNIQUES[table]
            assert inspector.get_pk_constraint(table)["name"] == f"pk_{table}"
        for table, column in BIGINT_COLUMNS:
            type_ = {c["name"]: c["type"] for c in inspector.get_columns(table)}[column]
            assert "BIGINT" in str(type_.compile(dialect=registry.engine.dialect)).upper(), (table, column)
        foreign_keys = inspector.get_foreign_keys("assets")
        assert [(fk["name"], fk["referred_table"]) for fk in foreign_keys] == [
            ("fk_assets_generation_id_generations", "generations")
        ]


def test_models_and_migrations_do_not_drift(db_url):
    with open_registry(db_url) as registry:
        check(registry.engine)
        # and check() does notice a difference
        with registry.engine.begin() as conn:
            conn.execute(text("CREATE TABLE stray (x INTEGER)"))
        with pytest.raises(RegistryError, match="models and migrations differ"):
            check(registry.engine)


def test_older_database_is_upgraded(db_url):
    engine = make_engine(db_url)
    try:
        open_registry(db_url).close()
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with pytest.raises(RegistryError, match="upgrade=True"):
            open_registry(db_url, upgrade=False)
        with open_registry(db_url, upgrade=True) as registry:
            assert current_revision(registry.engine) == head_revision()
            check(registry.engine)
    finally:
        engine.dispose()


def test_database_from_a_newer_provgen_is_refused(db_url):
    open_registry(db_url).close()
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d9999'"))
    finally:
        engine.dispose()
    for upgrade in (True, False):
        with pytest.raises(RegistryError, match="created by a newer provgen") as info:
            open_registry(db_url, upgrade=upgrade)
        assert "f00d9999" in str(info.value)


def test_offline_sql_renders(monkeypatch):
    monkeypatch.setenv("PROVGEN_REGISTRY_URL", "postgresql+psycopg://nobody@localhost/none")
    buffer = io.StringIO()
    cfg = alembic_config(stdout=buffer)
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE generations" in sql and "CREATE UNIQUE INDEX ix_assets_sha256" in sql


FAILING_REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "0999"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("x", sa.Integer()))
    op.execute("SELECT * FROM no_such_table")


def downgrade():
    pass
'''


def test_failed_upgrade_leaves_the_database_untouched(db_url, tmp_path, monkeypatch):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0999_broken.py").write_text(FAILING_REVISION.format(head=head_revision()))
    monkeypatch.setattr(registry_db, "MIGRATIONS_DIR", migrations)

    with pytest.raises(RegistryError, match="upgrading the schema of the registry `.*` failed") as info:
        open_registry(db_url)
    assert "no_such_table" in str(info.value)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None  # not even 0001 stayed: one transaction
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_concurrent_first_opens_migrate_once(db_url):
    def open_and_report(_: int) -> str | None:
        with open_registry(db_url) as registry:
            return current_revision(registry.engine)

    with ThreadPoolExecutor(4) as pool:  # upgrades are serialised: write lock (SQLite) / advisory lock (PG)
        assert list(pool.map(open_and_report, range(4))) == [head_revision()] * 4
