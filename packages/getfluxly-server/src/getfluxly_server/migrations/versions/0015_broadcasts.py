"""broadcasts: a template to a segment's members, snapshotted at start

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 05:45:00

``broadcasts`` (one row per broadcast: its status, rate, progress and token bucket) and
``broadcast_recipients`` (the audience as the segment was when the broadcast started, numbered
in the order the runner records their messages). Recipients hold profile ids only: addresses
are read from the profiles when each message is recorded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status IN ('scheduled', 'sending')")


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("template_id", sa.String(length=32), nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("send_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.Column("targeted", sa.Integer(), nullable=False),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("withdrawn", sa.Integer(), nullable=False),
        sa.Column("rate_tokens", sa.Double(), nullable=True),
        sa.Column("rate_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_broadcasts_project", "broadcasts", ["project_id", "created_at", "id"])
    op.create_index(
        "ix_broadcasts_active",
        "broadcasts",
        ["status"],
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_table(
        "broadcast_recipients",
        sa.Column("broadcast_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcasts_active", table_name="broadcasts")
    op.drop_index("ix_broadcasts_project", table_name="broadcasts")
    op.drop_table("broadcasts")
