"""The suppression list: addresses of a project that no message may be sent to."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Suppression


def normalise(email: str) -> str:
    """The form addresses are stored and looked up in (whole address lower-cased: local parts
    are case-sensitive in theory, in practice no mailbox provider treats them so)."""
    return email.strip().lower()


def suppressed(session: Session, project_id: str, emails: Collection[str]) -> set[str]:
    """Which of ``emails`` (as given) are suppressed in the project: one query for a batch."""
    if not emails:
        return set()
    query = select(Suppression.email).where(
        Suppression.project_id == project_id,
        Suppression.email.in_({normalise(e) for e in emails}),
    )
    found = set(session.scalars(query))
    return {e for e in emails if normalise(e) in found}
