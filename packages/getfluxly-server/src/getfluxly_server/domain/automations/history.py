"""An automation's kept versions of its definition, newest first (the dashboard's
automation page shows what each version was)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from getfluxly_server.domain.automations import manage
from getfluxly_server.domain.tenancy import Principal
from getfluxly_server.storage import automation_versions
from getfluxly_server.storage.models import AutomationVersion

MAX_VERSIONS = 100


def versions(
    session: Session, principal: Principal, automation_id: str, limit: int = 20
) -> Sequence[AutomationVersion]:
    """The automation's kept versions (number, definition as sent, when saved), the newest
    first; ``not_found`` for an automation ``principal`` may not see."""
    row = manage.find(session, principal, automation_id)
    return automation_versions.newest(session, row.id, max(1, min(limit, MAX_VERSIONS)))
