"""The ``email`` trait of a few profiles of a project, for pages that list profiles by id."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Profile


def emails_of(session: Session, project_id: str, profile_ids: Collection[str]) -> dict[str, str]:
    """``{profile id: email}`` for those of ``profile_ids`` in the project with a text
    ``email`` trait (erased profiles have none)."""
    if not profile_ids:
        return {}
    rows = session.execute(
        select(Profile.id, Profile.traits).where(
            Profile.project_id == project_id, Profile.id.in_(set(profile_ids))
        )
    )
    return {
        profile_id: traits["email"]
        for profile_id, traits in rows
        if isinstance(traits, dict) and isinstance(traits.get("email"), str)
    }
