"""automations: definitions and their versions, durable runs, step log, stream cursors

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 05:50:00

``automations`` and ``automation_versions`` (every version runs may be on), ``automation_runs``
(each profile's journey: its position and its pending wake-up), ``automation_step_log`` (what
happened at each step: stats and frequency caps), ``automation_cursors`` (how far segment
transitions and date triggers were read per project), and ``projects.timezone`` (the zone of
profiles without a ``timezone`` trait).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from getfluxly_server.storage.models import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_RUNNING = sa.text("status = 'running'")


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Plain ADD COLUMN (see 0007: batch mode would copy the table on SQLite).
    op.add_column("projects", sa.Column("timezone", sa.String(length=64), nullable=True))
    op.create_table(
        "automations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("activated_at", True),
        _time("deleted_at", True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_automations_project", "automations", ["project_id", "created_at", "id"])
    op.create_table(
        "automation_versions",
        sa.Column("automation_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("automation_id", "version"),
    )
    op.create_table(
        "automation_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("automation_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=True),
        sa.Column("waiting", sa.Boolean(), nullable=False),
        sa.Column("wait_event", sa.String(length=64), nullable=True),
        _time("wake_at", True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("trigger_key", sa.String(length=255), nullable=True),
        sa.Column("exit_reason", sa.String(length=32), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _time("entered_at"),
        _time("updated_at"),
        _time("finished_at", True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_automation_runs_due",
        "automation_runs",
        ["wake_at"],
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    )
    op.create_index(
        "ux_automation_runs_running",
        "automation_runs",
        ["automation_id", "profile_id"],
        unique=True,
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    )
    op.create_index(
        "ix_automation_runs_profile",
        "automation_runs",
        ["profile_id", "automation_id", "entered_at"],
    )
    op.create_table(
        "automation_step_log",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("automation_id", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("profile_id", sa.String(length=32), nullable=False),
        sa.Column("step_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        _time("at"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["automation_id"], ["automations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_automation_step_log_stats",
        "automation_step_log",
        ["automation_id", "step_id", "outcome"],
    )
    op.create_index(
        "ix_automation_step_log_profile",
        "automation_step_log",
        ["project_id", "profile_id", "outcome", "at"],
    )
    op.create_table(
        "automation_cursors",
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        _time("checked_at", True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "stream"),
    )


def downgrade() -> None:
    op.drop_table("automation_cursors")
    op.drop_index("ix_automation_step_log_profile", table_name="automation_step_log")
    op.drop_index("ix_automation_step_log_stats", table_name="automation_step_log")
    op.drop_table("automation_step_log")
    op.drop_index("ix_automation_runs_profile", table_name="automation_runs")
    op.drop_index("ux_automation_runs_running", table_name="automation_runs")
    op.drop_index("ix_automation_runs_due", table_name="automation_runs")
    op.drop_table("automation_runs")
    op.drop_table("automation_versions")
    op.drop_index("ix_automations_project", table_name="automations")
    op.drop_table("automations")
    op.execute("ALTER TABLE projects DROP COLUMN timezone")
