"""fingerprints: further perceptual hashes of an asset (dHash), besides the pHash on the asset row

One row per (asset, kind). Verification confirms a pHash candidate with the dHash, which lets it accept
larger pHash distances (e.g. crops) without false matches. Fingerprints are audited
(``record_type = 'fingerprint'``); the table starts empty (assets registered earlier have no dHash), so the
audit log needs no backfill and no existing record changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fingerprints",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("asset_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name=op.f("fk_fingerprints_asset_id_assets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fingerprints")),
        sa.UniqueConstraint("asset_id", "kind", name=op.f("uq_fingerprints_asset_id_kind")),
    )
    with op.batch_alter_table("fingerprints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fingerprints_asset_id"), ["asset_id"], unique=False)


def downgrade() -> None:
    # the audit entries of dropped fingerprints stay in the chain (0003 knows no fingerprint records)
    with op.batch_alter_table("fingerprints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fingerprints_asset_id"))
    op.drop_table("fingerprints")
