"""Reading profiles (workspace key): search by id or trait, one profile in full."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import Response, Timestamp
from getfluxly_server.domain import profiles
from getfluxly_server.storage.models import Event, Profile

router = APIRouter(prefix="/v1/projects/{project_id}/profiles", tags=["profiles"])


class ProfileView(Response):
    id: str
    traits: dict[str, Any]
    created_at: Timestamp
    updated_at: Timestamp
    #: The profile this one was merged into (set when a merged id was asked for).
    merged_into: str | None
    erased_at: Timestamp | None


class IdentityView(Response):
    kind: str
    value: str


class EventView(Response):
    message_id: str
    type: str
    event: str | None
    properties: dict[str, Any]
    timestamp: Timestamp
    received_at: Timestamp


class ProfileDetailView(ProfileView):
    identities: list[IdentityView]
    recent_events: list[EventView]


class ProfileList(Response):
    profiles: list[ProfileView]


class OneProfile(Response):
    profile: ProfileDetailView


def _profile(row: Profile) -> dict[str, Any]:
    return {
        "id": row.id, "traits": row.traits, "created_at": row.created_at,
        "updated_at": row.updated_at, "merged_into": row.merged_into, "erased_at": row.erased_at,
    }  # fmt: skip


def _event(row: Event) -> EventView:
    return EventView(
        message_id=row.message_id, type=row.type, event=row.name, properties=row.properties,
        timestamp=row.timestamp, received_at=row.received_at,
    )  # fmt: skip


@router.get("")
def search(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    identity: Annotated[
        str | None, Query(description="a profile id, anonymous_id or external_id")
    ] = None,
    trait: Annotated[str | None, Query(description="KEY:VALUE, e.g. plan:pro")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ProfileList:
    with db.read() as session:
        rows = profiles.search(
            session, who, project_id, identity=identity, trait=trait, limit=limit
        )
        return ProfileList(profiles=[ProfileView(**_profile(r)) for r in rows])


@router.get("/{profile_id}")
def get_profile(project_id: str, profile_id: str, who: WorkspaceKey, db: DB) -> OneProfile:
    """The profile with identities, traits and recent events (a merged id leads to the
    survivor, named in ``merged_into``)."""
    with db.read() as session:
        found = profiles.detail(session, who, project_id, profile_id)
        return OneProfile(
            profile=ProfileDetailView(
                **_profile(found.profile),
                identities=[IdentityView(kind=i.kind, value=i.value) for i in found.identities],
                recent_events=[_event(e) for e in found.recent_events],
            )
        )
