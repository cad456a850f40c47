"""inbound feedback webhooks: per-project webhook secrets, the inbox, message events by address

Revision ID: 0011_hooks
Revises: 0010
Create Date: 2026-12-03 06:00:00

``webhook_secrets`` (what verifies each relay's posts for a project, encrypted; rotated ones
kept until ``expires_at``), ``webhook_inbox`` (each accepted post once per delivery id,
processed in the background) and ``ix_message_events_email`` (an address's feedback by
time: the soft-bounce rule and segments read it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0011_hooks"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PENDING = sa.text("processed_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("relay", sa.String(length=16), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_secrets_project", "webhook_secrets", ["project_id", "relay"])
    op.create_table(
        "webhook_inbox",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("relay", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "relay", "delivery_id", name="uq_webhook_inbox_delivery"),
    )
    op.create_index(
        "ix_webhook_inbox_pending",
        "webhook_inbox",
        ["project_id", "id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_index("ix_webhook_inbox_received", "webhook_inbox", ["received_at"])
    op.create_index(
        "ix_message_events_email", "message_events", ["project_id", "email", "occurred_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_message_events_email", table_name="message_events")
    op.drop_index("ix_webhook_inbox_received", table_name="webhook_inbox")
    op.drop_index("ix_webhook_inbox_pending", table_name="webhook_inbox")
    op.drop_table("webhook_inbox")
    op.drop_index("ix_webhook_secrets_project", table_name="webhook_secrets")
    op.drop_table("webhook_secrets")
