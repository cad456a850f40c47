"""segments: profiles to evaluate again after a message was sent, and the periodic pass's
last pass per project

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 15:00:00

``segment_pending``: a profile one of whose messages was sent, to evaluate again against its
project's segments that read ``{"email": "sent"}``: at once (``due_at`` null), and when the
message leaves each of those segments' windows (``due_at``), so no pass recomputes them.
``segment_passes``: when the periodic pass last went over a project (the engine's time and
the system's), so a worker that starts carries on from there instead of recomputing every
segment.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "segment_pending",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_segment_pending_due", "segment_pending", ["project_id", "due_at", "id"])
    op.create_table(
        "segment_passes",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("engine_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id"),
    )


def downgrade() -> None:
    op.drop_table("segment_passes")
    op.drop_index("ix_segment_pending_due", table_name="segment_pending")
    op.drop_table("segment_pending")
