"""what feedback and the engine share: message priority, message events, subscriptions, segments

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 05:45:00

``messages.priority`` (claim order by origin: transactional 0, automation 1, broadcast 2), with
``ix_messages_due`` rebuilt as (priority, due_at) over pending messages, so a broadcast queued
earlier never holds back transactional mail. Every message recorded before this revision came
from the API (the only origin there was), so 0 is right for all of them.

``message_events`` (feedback and engagement in one taxonomy, whoever reported it) and
``subscriptions`` (a recipient's choice per subscription group).

``segments``, ``segment_members`` (who is in a segment now) and ``segment_transitions`` (every
entry and exit, in order: what segment-triggered automations start from).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PENDING = sa.text("status IN ('queued', 'deferred', 'sending')")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007: batch mode would copy the table on SQLite).
    op.add_column(
        "messages",
        sa.Column("priority", sa.SmallInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.drop_index("ix_messages_due", table_name="messages")
    op.create_index(
        "ix_messages_due",
        "messages",
        ["priority", "due_at"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_table(
        "message_events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("profile_id", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("bounce_type", sa.String(length=8), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "project_id", "source", "provider_event_id", name="uq_message_events_reported"
        ),
    )
    op.create_index("ix_message_events_message", "message_events", ["message_id", "id"])
    op.create_index("ix_message_events_project", "message_events", ["project_id", "occurred_at"])
    op.create_index(
        "ix_message_events_profile", "message_events", ["profile_id", "type", "occurred_at"]
    )
    op.create_table(
        "subscriptions",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "email", "group_name"),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    live = sa.text("deleted_at IS NULL")
    op.create_index(
        "ux_segments_name",
        "segments",
        ["project_id", "name"],
        unique=True,
        sqlite_where=live,
        postgresql_where=live,
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("entered_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["profile_id"], ["profiles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("segment_id", "profile_id"),
    )
    op.create_index("ix_segment_members_profile", "segment_members", ["profile_id"])
    op.create_table(
        "segment_transitions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_segment_transitions_segment", "segment_transitions", ["segment_id", "id"])
    op.create_index("ix_segment_transitions_project", "segment_transitions", ["project_id", "id"])


def downgrade() -> None:
    op.drop_table("segment_transitions")
    op.drop_table("segment_members")
    op.drop_index("ux_segments_name", table_name="segments")
    op.drop_table("segments")
    op.drop_table("subscriptions")
    op.drop_index("ix_message_events_profile", table_name="message_events")
    op.drop_index("ix_message_events_project", table_name="message_events")
    op.drop_index("ix_message_events_message", table_name="message_events")
    op.drop_table("message_events")
    op.drop_index("ix_messages_due", table_name="messages")
    op.create_index(
        "ix_messages_due", "messages", ["due_at"], sqlite_where=_PENDING, postgresql_where=_PENDING
    )
    op.execute("ALTER TABLE messages DROP COLUMN priority")
