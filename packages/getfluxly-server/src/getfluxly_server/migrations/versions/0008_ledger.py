"""caught dev mail names its ledger message

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 00:55:00

``dev_messages.getfluxly_message_id``: the ``X-GetFluxly-Message-Id`` header of the caught
message (the ledger's ``msg_...`` id), so ``GET /v1/dev/messages?message_id=`` finds what the
catcher received for a message. Nothing caught before this revision carries a ledger id (the
ledger's messages are sent from 0007 on, by code that lands with this revision), so there is
nothing to fill in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007: batch mode would copy the table on SQLite).
    op.add_column(
        "dev_messages", sa.Column("getfluxly_message_id", sa.String(length=32), nullable=True)
    )
    op.create_index(
        "ix_dev_messages_ledger", "dev_messages", ["workspace_id", "getfluxly_message_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_dev_messages_ledger", table_name="dev_messages")
    op.execute("ALTER TABLE dev_messages DROP COLUMN getfluxly_message_id")
