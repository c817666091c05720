"""lineage edges, external inputs, verifications, audit log, checkpoints

Assets may now be external inputs (kind='external', most columns nullable); the pHash is also stored as four
indexed 16-bit bands (filled here for existing rows). The audit log of existing records is appended by
``provgen.provenance.registry.audit.backfill`` right after this revision, in the same transaction.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 19:53:28.875335
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENERATED_COMPLETE = (
    "kind = 'external' OR (format IN ('png', 'jpeg', 'webp') AND generation_id IS NOT NULL "
    "AND batch_index IS NOT NULL AND seed IS NOT NULL AND watermark_id IS NOT NULL "
    "AND watermark_method IS NOT NULL AND manifest_label IS NOT NULL AND manifest_store IS NOT NULL)"
)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_type", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("entry_hash", name=op.f("uq_audit_log_entry_hash")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_record", ["record_type", "record_id", "seq"], unique=False)

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("certificate_chain", sa.Text(), nullable=False),
        sa.Column("signer", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoints_seq"), ["seq"], unique=False)

    op.create_table(
        "lineage_edges",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=False),
        sa.Column("child_id", sa.String(length=32), nullable=False),
        sa.Column("generation_id", sa.String(length=32), nullable=True),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "relation IN ('parentOf', 'inputTo', 'componentOf')", name=op.f("ck_lineage_edges_relation")
        ),
        sa.ForeignKeyConstraint(["child_id"], ["assets.id"], name=op.f("fk_lineage_edges_child_id_assets")),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_lineage_edges_generation_id_generations")
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["assets.id"], name=op.f("fk_lineage_edges_parent_id_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lineage_edges")),
        sa.UniqueConstraint("parent_id", "child_id", "role", name=op.f("uq_lineage_edges_parent_id_child_id_role")),
    )
    with op.batch_alter_table("lineage_edges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_edges_child_id"), ["child_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_edges_generation_id"), ["generation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_edges_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "verifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("match", sa.String(length=16), nullable=True),
        sa.Column("asset_id", sa.String(length=32), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "verdict IN ('verified', 'recovered', 'tampered', 'unknown')", name=op.f("ck_verifications_verdict")
        ),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name=op.f("fk_verifications_asset_id_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verifications_asset_id"), ["asset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_verifications_verdict"), ["verdict"], unique=False)

    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_generations_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_generations_requester"), ["requester"], unique=False)
        batch_op.create_index(batch_op.f("ix_generations_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_generations_model_hash"), ["model_hash"], unique=False)
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index("ix_verifications_asset_id_created_at", ["asset_id", "created_at"], unique=False)

    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="generated", nullable=False))
        batch_op.add_column(sa.Column("phash_0", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("phash_1", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("phash_2", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("phash_3", sa.Integer(), nullable=True))
        batch_op.alter_column("generation_id", existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column("batch_index", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("seed", existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column("watermark_id", existing_type=sa.BigInteger(), nullable=True)
        batch_op.alter_column("watermark_method", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("phash", existing_type=sa.String(length=16), nullable=True)
        batch_op.alter_column(
            "format", existing_type=sa.String(length=8), type_=sa.String(length=16), existing_nullable=False
        )
        batch_op.alter_column("width", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("height", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column("path", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("manifest_label", existing_type=sa.String(length=255), nullable=True)
        batch_op.alter_column("manifest_store", existing_type=sa.LargeBinary(), nullable=True)
        batch_op.create_index(batch_op.f("ix_assets_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_phash_0"), ["phash_0"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_phash_1"), ["phash_1"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_phash_2"), ["phash_2"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_phash_3"), ["phash_3"], unique=False)
        batch_op.drop_constraint(op.f("ck_assets_format"), type_="check")
        batch_op.create_check_constraint("kind", "kind IN ('generated', 'external')")
        batch_op.create_check_constraint("generated_complete", GENERATED_COMPLETE)

    assets = sa.table(
        "assets",
        sa.column("id", sa.String()),
        sa.column("phash", sa.String()),
        *(sa.column(f"phash_{i}", sa.Integer()) for i in range(4)),
    )
    if op.get_context().as_sql:
        return  # offline (--sql): no rows to read; provgen fills missing bands when it next migrates
    bind = op.get_bind()
    rows = bind.execute(sa.select(assets.c.id, assets.c.phash)).all()
    for asset_id, phash in rows:
        value = int(phash, 16)
        bands = {f"phash_{i}": (value >> (16 * (3 - i))) & 0xFFFF for i in range(4)}
        bind.execute(assets.update().where(assets.c.id == asset_id).values(**bands))


def downgrade() -> None:
    with op.batch_alter_table("generations", schema=None) as batch_op:
        for name in ("model_hash", "model_id", "requester", "created_at"):
            batch_op.drop_index(batch_op.f(f"ix_generations_{name}"))
    # external inputs and what refers to them cannot exist in 0001's schema
    op.drop_table("verifications")
    op.drop_table("lineage_edges")
    op.execute("DELETE FROM assets WHERE kind = 'external'")
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_assets_generated_complete"), type_="check")
        batch_op.drop_constraint(op.f("ck_assets_kind"), type_="check")
        batch_op.create_check_constraint("format", "format IN ('png', 'jpeg', 'webp')")
        batch_op.drop_index(batch_op.f("ix_assets_phash_3"))
        batch_op.drop_index(batch_op.f("ix_assets_phash_2"))
        batch_op.drop_index(batch_op.f("ix_assets_phash_1"))
        batch_op.drop_index(batch_op.f("ix_assets_phash_0"))
        batch_op.drop_index(batch_op.f("ix_assets_created_at"))
        batch_op.alter_column("manifest_store", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.alter_column("manifest_label", existing_type=sa.String(length=255), nullable=False)
        batch_op.alter_column("path", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("height", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("width", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column(
            "format", existing_type=sa.String(length=16), type_=sa.String(length=8), existing_nullable=False
        )
        batch_op.alter_column("phash", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("watermark_method", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("watermark_id", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("seed", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("batch_index", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("generation_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_column("phash_3")
        batch_op.drop_column("phash_2")
        batch_op.drop_column("phash_1")
        batch_op.drop_column("phash_0")
        batch_op.drop_column("kind")

    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoints_seq"))

    op.drop_table("checkpoints")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_record")

    op.drop_table("audit_log")
