"""the message ledger, templates, suppressions, provider limits, a project's default provider

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:15:22

Tables ``templates``, ``messages`` (the ledger and the delivery queue), ``message_history``
and ``suppressions``; ``email_providers`` gains its shared limits (``max_connections``,
``rate_per_second``, ``rate_per_hour``) and ``projects`` its ``default_provider_id``, set for
existing projects to their first provider (engine spec section 2).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import getfluxly_server.storage.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("to_email", sa.String(length=320), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=True),
        sa.Column("provider_id", sa.String(length=32), nullable=True),
        sa.Column("template_id", sa.String(length=32), nullable=True),
        sa.Column("template_version", sa.Integer(), nullable=True),
        sa.Column("transactional", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("automation_id", sa.String(length=32), nullable=True),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("broadcast_id", sa.String(length=32), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("smtp_message_id", sa.String(length=255), nullable=True),
        sa.Column(
            "due_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "lease_until", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "sent_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "erased_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "idempotency_key", name="uq_messages_idempotency"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_automation", ["automation_id"], unique=False)
        batch_op.create_index("ix_messages_broadcast", ["broadcast_id"], unique=False)
        batch_op.create_index(
            "ix_messages_due",
            ["due_at"],
            unique=False,
            sqlite_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
            postgresql_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
        )
        batch_op.create_index("ix_messages_profile", ["profile_id"], unique=False)
        batch_op.create_index(
            "ix_messages_project", ["project_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_messages_provider_message", ["provider_message_id"], unique=False)
        batch_op.create_index("ix_messages_smtp_message", ["smtp_message_id"], unique=False)
        batch_op.create_index("ix_messages_to", ["project_id", "to_email"], unique=False)

    op.create_table(
        "suppressions",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column(
            "created_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "email"),
    )
    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("mjml", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "deleted_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.create_index(
            "ux_templates_name",
            ["project_id", "name"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "message_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("message_history", schema=None) as batch_op:
        batch_op.create_index("ix_message_history_message", ["message_id", "id"], unique=False)

    # Plain ADD/DROP COLUMN, not batch mode: on SQLite batch mode copies the table and drops
    # the old one, and dropping ``projects`` cascades into every table that refers to it.
    op.add_column("email_providers", sa.Column("max_connections", sa.Integer(), nullable=True))
    op.add_column("email_providers", sa.Column("rate_per_second", sa.Double(), nullable=True))
    op.add_column("email_providers", sa.Column("rate_per_hour", sa.Integer(), nullable=True))
    op.add_column("projects", sa.Column("default_provider_id", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE projects SET default_provider_id = (SELECT id FROM email_providers "
        "WHERE email_providers.project_id = projects.id ORDER BY created_at, id LIMIT 1)"
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN as written (SQLite has it since 3.35): Alembic's drop_column
    # copies the table on SQLite, which cascades (see upgrade).
    op.execute("ALTER TABLE projects DROP COLUMN default_provider_id")
    for column in ("rate_per_hour", "rate_per_second", "max_connections"):
        op.execute(f"ALTER TABLE email_providers DROP COLUMN {column}")

    with op.batch_alter_table("message_history", schema=None) as batch_op:
        batch_op.drop_index("ix_message_history_message")

    op.drop_table("message_history")
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_index(
            "ux_templates_name",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.drop_table("templates")
    op.drop_table("suppressions")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_to")
        batch_op.drop_index("ix_messages_smtp_message")
        batch_op.drop_index("ix_messages_provider_message")
        batch_op.drop_index("ix_messages_project")
        batch_op.drop_index("ix_messages_profile")
        batch_op.drop_index(
            "ix_messages_due",
            sqlite_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
            postgresql_where=sa.text("status IN ('queued', 'deferred', 'sending')"),
        )
        batch_op.drop_index("ix_messages_broadcast")
        batch_op.drop_index("ix_messages_automation")

    op.drop_table("messages")
