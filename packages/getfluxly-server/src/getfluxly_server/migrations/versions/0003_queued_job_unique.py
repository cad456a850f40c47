"""one queued job per unique_key, enforced by a partial unique index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 18:40:00

Enqueue-once becomes one ``INSERT ... ON CONFLICT DO NOTHING`` against this index instead of
a SELECT then an INSERT (which two concurrent transactions could both pass). Duplicates a
database may already hold are folded first: a unique job serves everyone who asked for it,
so the oldest queued one stays and the others, never started, are marked done.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.execute(
        "UPDATE jobs SET status = 'done', finished_at = created_at, "
        "last_error = 'folded into an older queued job with the same unique_key' "
        "WHERE status = 'queued' AND unique_key IS NOT NULL AND id NOT IN ("
        "SELECT min(id) FROM jobs WHERE status = 'queued' AND unique_key IS NOT NULL "
        "GROUP BY unique_key)"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_unique")
        batch_op.create_index(
            "ux_jobs_queued_unique",
            ["unique_key"],
            unique=True,
            sqlite_where=QUEUED,
            postgresql_where=QUEUED,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ux_jobs_queued_unique")
        batch_op.create_index("ix_jobs_unique", ["unique_key", "status"], unique=False)
