"""Which automation and broadcast ids are a project's (what segment rules may name)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Automation, Broadcast


def automations_of(session: Session, project_id: str, ids: Collection[str]) -> set[str]:
    """Those of ``ids`` that are automations of the project (deleted ones too: their
    messages stay in the ledger)."""
    if not ids:
        return set()
    found = session.scalars(
        select(Automation.id).where(Automation.project_id == project_id, Automation.id.in_(ids))
    )
    return set(found)


def broadcasts_of(session: Session, project_id: str, ids: Collection[str]) -> set[str]:
    """Those of ``ids`` that are broadcasts of the project."""
    if not ids:
        return set()
    found = session.scalars(
        select(Broadcast.id).where(Broadcast.project_id == project_id, Broadcast.id.in_(ids))
    )
    return set(found)
