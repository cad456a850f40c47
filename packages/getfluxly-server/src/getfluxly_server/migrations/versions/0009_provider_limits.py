"""the shared per-provider limiter's state: rate buckets and connection leases

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 00:40:00

``provider_limit_state`` (one row per provider: its per-second token bucket and its last
hour of grants, whose row lock serialises the provider's takes across worker processes) and
``provider_connections`` (connection slots held under a lease). Both go with their provider.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_limit_state",
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", sa.Double(), nullable=False),
        sa.Column("hour", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["provider_id"], ["email_providers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("provider_id"),
    )
    op.create_table(
        "provider_connections",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("provider_id", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("lease_until", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["provider_id"], ["email_providers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_provider_connections_provider", "provider_connections", ["provider_id", "lease_until"]
    )


def downgrade() -> None:
    op.drop_index("ix_provider_connections_provider", table_name="provider_connections")
    op.drop_table("provider_connections")
    op.drop_table("provider_limit_state")
