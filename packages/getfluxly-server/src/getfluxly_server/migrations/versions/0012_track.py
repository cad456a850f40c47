"""tracking and subscription groups: messages.tracking, messages.subscription_group, and the
projects' subscription_groups

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 05:40:00

``messages.tracking`` (opens and clicks tracked; every message recorded before was, so the
default true is right for them) and ``messages.subscription_group`` (the group a marketing
message belongs to: a group unsubscribe stops it). ``subscription_groups``: each project's
groups, as the preference page lists them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007: batch mode would copy the table on SQLite).
    op.add_column(
        "messages",
        sa.Column("tracking", sa.Boolean(), nullable=False, server_default=sa.text("true")),
    )
    op.add_column("messages", sa.Column("subscription_group", sa.String(length=64)))
    op.create_table(
        "subscription_groups",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("subscription_groups")
    op.execute("ALTER TABLE messages DROP COLUMN subscription_group")
    op.execute("ALTER TABLE messages DROP COLUMN tracking")
