"""dev messages belong to a workspace

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:40:00

``GET /v1/dev/messages`` lists the caller's workspace's caught mail only. Mail caught before
this revision was listed to every workspace; it is given to the oldest workspace (the one
``getfluxly dev`` made and prints the key of).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dev_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workspace_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            "fk_dev_messages_workspace", "workspaces", ["workspace_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_dev_messages_workspace", ["workspace_id", "id"], unique=False)
    op.execute(
        "UPDATE dev_messages SET workspace_id = "
        "(SELECT id FROM workspaces ORDER BY created_at, id LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("dev_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_dev_messages_workspace")
        batch_op.drop_constraint("fk_dev_messages_workspace", type_="foreignkey")
        batch_op.drop_column("workspace_id")
