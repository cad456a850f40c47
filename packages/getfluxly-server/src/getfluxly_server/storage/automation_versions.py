"""Reading an automation's kept versions (``automation_versions``), newest first; they are
written only by :mod:`.automations` (``save_version``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import AutomationVersion


def newest(session: Session, automation_id: str, limit: int) -> Sequence[AutomationVersion]:
    """Up to ``limit`` of the automation's versions, the highest number first."""
    query = (
        select(AutomationVersion)
        .where(AutomationVersion.automation_id == automation_id)
        .order_by(AutomationVersion.version.desc())
        .limit(limit)
    )
    return session.scalars(query).all()
