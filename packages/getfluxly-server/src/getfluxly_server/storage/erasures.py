"""Erasures: the audit rows, and erasing people's personal data with set-based statements.

Erasing never loads a person's events: three statements (profiles, identities, events) do
the work in the database, however many events there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Erasure, Event, Identity, Profile


def add(session: Session, erasure: Erasure) -> Erasure:
    session.add(erasure)
    session.flush()
    return erasure


def get(session: Session, erasure_id: str) -> Erasure | None:
    return session.get(Erasure, erasure_id)


def pending(session: Session, project_id: str) -> Sequence[Erasure]:
    """The project's erasures not yet carried out."""
    query = select(Erasure).where(Erasure.project_id == project_id, Erasure.completed_at.is_(None))
    return session.scalars(query).all()


def erase_people(session: Session, profile_ids: Sequence[str], when: datetime) -> None:
    """Remove the personal data of ``profile_ids``: traits emptied and marked erased, their
    identities deleted, their events' properties, traits, context and ids cleared."""
    ids = list(profile_ids)
    # Pending changes (the stitching that ran just before, in this transaction) go first;
    # the statements then go straight to the database, and the session forgets what it had
    # loaded, so nothing stale is read or written back afterwards.
    session.flush()
    plain = {"synchronize_session": False}
    session.execute(
        update(Profile).where(Profile.id.in_(ids)).values(traits={}, erased_at=when),
        execution_options=plain,
    )
    session.execute(delete(Identity).where(Identity.profile_id.in_(ids)), execution_options=plain)
    session.execute(
        update(Event)
        .where(Event.profile_id.in_(ids))
        .values(
            properties={},
            traits={},
            context={},
            anonymous_id=None,
            external_id=None,
            user_id=None,
        ),
        execution_options=plain,
    )
    session.expire_all()
