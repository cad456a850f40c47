"""job priorities, and the indexes of batch claiming, expired leases and retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:40:00

Jobs get a ``priority`` (lower runs first), copied from their kind's queue at enqueue so the
claim can order by it in SQL. Jobs already in a database keep the default queue's priority,
except test sends, which are transactional (someone is waiting for them). The one claim
index ``(status, run_at)`` becomes three partial ones, each read by one query: due jobs in
claim order, running jobs by lease end, finished jobs by age (retention).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")
RUNNING = sa.text("status = 'running'")
FINISHED = sa.text("status IN ('done', 'failed')")
DEFAULT_PRIORITY, TRANSACTIONAL_PRIORITY = 100, 0


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "priority",
                sa.SmallInteger(),
                nullable=False,
                server_default=sa.text(str(DEFAULT_PRIORITY)),
            )
        )
        batch_op.drop_index("ix_jobs_claim")
        batch_op.create_index(
            "ix_jobs_due",
            ["priority", "run_at", "id"],
            unique=False,
            sqlite_where=QUEUED,
            postgresql_where=QUEUED,
        )
        batch_op.create_index(
            "ix_jobs_leased",
            ["lease_until"],
            unique=False,
            sqlite_where=RUNNING,
            postgresql_where=RUNNING,
        )
        batch_op.create_index(
            "ix_jobs_finished",
            ["finished_at"],
            unique=False,
            sqlite_where=FINISHED,
            postgresql_where=FINISHED,
        )
    test_sends = sa.text("UPDATE jobs SET priority = :priority WHERE kind = 'provider.test_send'")
    op.execute(test_sends.bindparams(priority=TRANSACTIONAL_PRIORITY))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_finished")
        batch_op.drop_index("ix_jobs_leased")
        batch_op.drop_index("ix_jobs_due")
        batch_op.create_index("ix_jobs_claim", ["status", "run_at"], unique=False)
        batch_op.drop_column("priority")
