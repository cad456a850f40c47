"""Reading profiles: search by id or trait, and one profile with what is known of it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import events as store
from getfluxly_server.storage.models import Event, Identity, Profile

_TRAIT = re.compile(r"^([A-Za-z0-9_.-]{1,64}):(.{0,255})$")
#: How many of a profile's latest events come with it.
RECENT_EVENTS = 50


@dataclass(frozen=True)
class ProfileDetail:
    """A profile (the survivor, for a merged id), its identities and its latest events."""

    profile: Profile
    identities: Sequence[Identity]
    recent_events: Sequence[Event]


def search(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    identity: str | None = None,
    trait: str | None = None,
    limit: int = 50,
) -> Sequence[Profile]:
    """Profiles of the project known by ``identity`` (a profile id, anonymous_id or
    external_id) and/or holding ``trait`` (``KEY:VALUE``)."""
    project_of(session, principal, project_id)
    wanted = None
    if trait is not None:
        match = _TRAIT.match(trait)
        if match is None:
            raise ValidationFailed("trait must be KEY:VALUE", field="trait")
        wanted = (match[1], match[2])
    return store.search_profiles(session, project_id, identity=identity, trait=wanted, limit=limit)


def detail(
    session: Session, principal: Principal, project_id: str, profile_id: str
) -> ProfileDetail:
    project_of(session, principal, project_id)
    row = store.profile(session, project_id, profile_id)
    if row is None:
        raise NotFound("profile")
    return ProfileDetail(
        row,
        store.profile_identities(session, row.id),
        store.recent_events(session, row.id, RECENT_EVENTS),
    )
