"""idempotency keys per kind of key, with a hash of the request body

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:45:00

``idempotent_responses`` gains ``key_kind`` (part of the primary key: a publishable key's
idempotency keys and a server key's are separate namespaces) and ``body_hash`` (a key
reused with a different body is refused instead of replaying the first answer). Answers
already recorded are kept, as the server key's (they expire within 24 hours anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import getfluxly_server.storage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "idempotent_responses"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(new=True)
        return
    op.add_column(
        TABLE,
        sa.Column(
            "key_kind", sa.String(length=16), server_default=sa.text("'secret'"), nullable=False
        ),
    )
    op.add_column(TABLE, sa.Column("body_hash", sa.String(length=64), nullable=True))
    op.drop_constraint(f"{TABLE}_pkey", TABLE, type_="primary")
    op.create_primary_key(f"{TABLE}_pkey", TABLE, ["project_id", "key_kind", "key"])


def downgrade() -> None:
    # Two kinds may hold the same key: keep the server key's answer.
    op.execute(f"DELETE FROM {TABLE} WHERE key_kind <> 'secret'")  # noqa: S608 - a constant
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_on_sqlite(new=False)
        return
    op.drop_constraint(f"{TABLE}_pkey", TABLE, type_="primary")
    op.create_primary_key(f"{TABLE}_pkey", TABLE, ["project_id", "key"])
    op.drop_column(TABLE, "body_hash")
    op.drop_column(TABLE, "key_kind")


def _rebuild_on_sqlite(*, new: bool) -> None:
    """SQLite cannot change a primary key: copy the rows into the table as it must be."""
    scoped = [
        sa.Column(
            "key_kind", sa.String(length=16), server_default=sa.text("'secret'"), nullable=False
        ),
        sa.Column("body_hash", sa.String(length=64), nullable=True),
    ]
    op.create_table(
        f"{TABLE}_rebuilt",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        *(scoped if new else []),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column(
            "created_at", getfluxly_server.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", *(["key_kind"] if new else []), "key"),
    )
    columns = "project_id, key, status, body, created_at"
    op.execute(
        f"INSERT INTO {TABLE}_rebuilt ({columns}) SELECT {columns} FROM {TABLE}"  # noqa: S608
    )
    op.drop_table(TABLE)
    op.rename_table(f"{TABLE}_rebuilt", TABLE)
