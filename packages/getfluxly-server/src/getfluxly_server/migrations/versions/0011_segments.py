"""segments: a date parser for segment rules on PostgreSQL

Revision ID: 0011_segments
Revises: 0010
Create Date: 2026-12-03 05:55:00

``gf_timestamptz(text)``: the time an ISO 8601 text means, or NULL when it means none.
Segment rules compare date traits (``within_last``, ``before_last``) in SQL; a cast of a
trait that is not a valid date (``2026-02-30``) would raise and fail the whole query, where
SQLite's ``julianday`` answers NULL. Text without an offset is UTC (the function runs with
TimeZone UTC). Nothing on SQLite.
"""

from __future__ import annotations

from alembic import op

revision = "0011_segments"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION gf_timestamptz(value text) RETURNS timestamptz
        LANGUAGE plpgsql STABLE PARALLEL SAFE SET TimeZone = 'UTC' AS $$
        BEGIN
            RETURN value::timestamptz;
        EXCEPTION WHEN others THEN
            RETURN NULL;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION gf_timestamptz(text)")
