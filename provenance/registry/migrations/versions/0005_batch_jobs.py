"""batch_jobs: one row per job key of ``provgen batch`` (done with its generation, or failed with why)

A job is registered at most once: ``job_key`` is unique and a ``done`` row is written in the same transaction
as the job's generation, so a re-run after a crash skips exactly what was committed. Jobs are audited
(``record_type = 'job'``); the table starts empty, so the audit log needs no backfill.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("generation_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["generation_id"], ["generations.id"],
                                name=op.f("fk_batch_jobs_generation_id_generations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
        sa.UniqueConstraint("job_key", name=op.f("uq_batch_jobs_job_key")),
    )
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_jobs_generation_id"), ["generation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_jobs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_batch_jobs_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    # the audit entries of dropped jobs stay in the chain (0004 knows no job records)
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_jobs_updated_at"))
        batch_op.drop_index(batch_op.f("ix_batch_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_batch_jobs_generation_id"))
    op.drop_table("batch_jobs")
