"""profiles: indexes for merge lookups and the segments' periodic pass

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 09:40:00

``ix_profiles_merged_into`` (partial: only merged profiles have it) serves "who was merged into
these profiles" (identity merges, segment exits of merged members), which scanned the whole
table; ``ix_profiles_updated`` serves the segments' pass over profiles changed since its last
run, which scanned the project's profiles.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_MERGED = sa.text("merged_into IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_profiles_merged_into",
        "profiles",
        ["merged_into"],
        sqlite_where=_MERGED,
        postgresql_where=_MERGED,
    )
    op.create_index("ix_profiles_updated", "profiles", ["project_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_profiles_updated", table_name="profiles")
    op.drop_index("ix_profiles_merged_into", table_name="profiles")
