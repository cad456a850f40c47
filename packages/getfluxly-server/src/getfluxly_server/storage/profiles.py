"""Profiles by id, the merge tree, and the per-project lock of identity processing."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Profile, Project


def by_id(session: Session, profile_id: str) -> Profile | None:
    """Any profile by id (callers have the project's tenancy checked already)."""
    return session.get(Profile, profile_id)


def merged_into(session: Session, profile_ids: Collection[str]) -> Sequence[Profile]:
    """The profiles merged directly into one of ``profile_ids``."""
    if not profile_ids:
        return []
    return session.scalars(select(Profile).where(Profile.merged_into.in_(profile_ids))).all()


def lock_project(session: Session, project_id: str) -> None:
    """Take the project's row lock (PostgreSQL) until the transaction ends; on SQLite the
    write lock taken at BEGIN already serialises writers.

    ``FOR NO KEY UPDATE``: it excludes the other holders of this lock, not the ingest, whose
    inserts hold a key share lock on the same row (the events' foreign key). With ``FOR
    UPDATE`` every ingest transaction waited for the stitching transaction of the moment (its
    automations' work included) to commit; waiting for the inserts already under way is
    ``storage.events.settle_inserts``'s part."""
    session.execute(
        select(Project.id).where(Project.id == project_id).with_for_update(key_share=True)
    )
