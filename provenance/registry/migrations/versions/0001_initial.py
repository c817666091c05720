"""initial: generations and their assets

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 04:05:43.930094
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester", sa.String(length=255), nullable=False),
        sa.Column("model_id", sa.String(length=1024), nullable=False),
        sa.Column("model_hash", sa.String(length=64), nullable=False),
        sa.Column("pipeline_class", sa.String(length=255), nullable=False),
        sa.Column("scheduler", sa.String(length=255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("num_inference_steps", sa.Integer(), nullable=False),
        sa.Column("guidance_scale", sa.Double(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("plugins", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.create_table(
        "assets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("generation_id", sa.String(length=32), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("watermark_id", sa.BigInteger(), nullable=False),
        sa.Column("watermark_method", sa.String(length=64), nullable=False),
        sa.Column("phash", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("manifest_label", sa.String(length=255), nullable=False),
        sa.Column("manifest_store", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("format IN ('png', 'jpeg', 'webp')", name=op.f("ck_assets_format")),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name=op.f("fk_assets_generation_id_generations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("generation_id", "batch_index", name=op.f("uq_assets_generation_id_batch_index")),
    )
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assets_generation_id"), ["generation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_manifest_label"), ["manifest_label"], unique=True)
        batch_op.create_index(batch_op.f("ix_assets_phash"), ["phash"], unique=False)
        batch_op.create_index(batch_op.f("ix_assets_sha256"), ["sha256"], unique=True)
        batch_op.create_index(batch_op.f("ix_assets_watermark_id"), ["watermark_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assets_watermark_id"))
        batch_op.drop_index(batch_op.f("ix_assets_sha256"))
        batch_op.drop_index(batch_op.f("ix_assets_phash"))
        batch_op.drop_index(batch_op.f("ix_assets_manifest_label"))
        batch_op.drop_index(batch_op.f("ix_assets_generation_id"))

    op.drop_table("assets")
    op.drop_table("generations")
