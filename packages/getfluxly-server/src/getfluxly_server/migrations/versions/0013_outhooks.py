"""outbound webhooks: customers' endpoints, their deliveries and the attempts log

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 05:45:00

``outbound_webhooks`` (an endpoint of a project: URL, subscribed event types, the signing
secret encrypted with the keyring), ``outbound_deliveries`` (one event to send to one
endpoint: its Standard Webhooks message id and status) and ``outbound_attempts`` (each HTTP
attempt: status code, error, a short excerpt of the answer). All go with their project; a
delivery goes with its endpoint and with the event it carries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbound_webhooks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_outbound_webhooks_project", "outbound_webhooks", ["project_id", "created_at"]
    )
    op.create_table(
        "outbound_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("webhook_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("message_event_id", _ID, nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["webhook_id"], ["outbound_webhooks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_event_id"], ["message_events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_outbound_deliveries_webhook",
        "outbound_deliveries",
        ["webhook_id", "created_at", "id"],
    )
    op.create_index("ix_outbound_deliveries_event", "outbound_deliveries", ["message_event_id"])
    op.create_table(
        "outbound_attempts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["outbound_deliveries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbound_attempts_delivery", "outbound_attempts", ["delivery_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbound_attempts_delivery", table_name="outbound_attempts")
    op.drop_table("outbound_attempts")
    op.drop_index("ix_outbound_deliveries_event", table_name="outbound_deliveries")
    op.drop_index("ix_outbound_deliveries_webhook", table_name="outbound_deliveries")
    op.drop_table("outbound_deliveries")
    op.drop_index("ix_outbound_webhooks_project", table_name="outbound_webhooks")
    op.drop_table("outbound_webhooks")
