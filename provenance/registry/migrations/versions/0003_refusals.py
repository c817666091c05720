"""refusals: requests a policy plugin refused (hook check_policy)

One row per refusal: who asked, which plugin refused and why, the prompt and the whole request as JSON.
Refusals are audited like every other record (``record_type = 'refusal'``); the table starts empty, so the
audit log needs no backfill.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14 10:12:05.114263
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refusals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester", sa.String(length=255), nullable=False),
        sa.Column("plugin", sa.String(length=255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refusals")),
    )
    with op.batch_alter_table("refusals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refusals_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_refusals_plugin"), ["plugin"], unique=False)
        batch_op.create_index(batch_op.f("ix_refusals_requester"), ["requester"], unique=False)


def downgrade() -> None:
    # the audit entries of dropped refusals stay in the chain (it still verifies: 0002 knows no refusal records)
    with op.batch_alter_table("refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refusals_requester"))
        batch_op.drop_index(batch_op.f("ix_refusals_plugin"))
        batch_op.drop_index(batch_op.f("ix_refusals_created_at"))

    op.drop_table("refusals")
