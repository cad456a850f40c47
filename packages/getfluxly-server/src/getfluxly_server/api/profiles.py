"""Reading profiles (workspace key): search by id or trait, one profile in full."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import database
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.tenancy import project_of
from getfluxly_server.storage import events as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Event, Profile

router = APIRouter(prefix="/v1/projects/{project_id}/profiles", tags=["profiles"])
DB = Annotated[Database, Depends(database)]
_TRAIT = re.compile(r"^([A-Za-z0-9_.-]{1,64}):(.{0,255})$")


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _profile(row: Profile) -> dict[str, Any]:
    return {
        "id": row.id,
        "traits": row.traits,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "merged_into": row.merged_into,
        "erased_at": _iso(row.erased_at),
    }


def _event(row: Event) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "type": row.type,
        "event": row.name,
        "properties": row.properties,
        "timestamp": _iso(row.timestamp),
        "received_at": _iso(row.received_at),
    }


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
) -> dict[str, Any]:
    with db.read() as session:
        project_of(session, who, project_id)
        wanted = None
        if trait is not None:
            match = _TRAIT.match(trait)
            if match is None:
                raise ValidationFailed("trait must be KEY:VALUE", field="trait")
            wanted = (match[1], match[2])
        rows = store.search_profiles(
            session, project_id, identity=identity, trait=wanted, limit=limit
        )
        return {"profiles": [_profile(r) for r in rows]}


@router.get("/{profile_id}")
def get_profile(project_id: str, profile_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    """The profile with identities, traits and recent events (a merged id leads to the
    survivor, named in ``merged_into``)."""
    with db.read() as session:
        project_of(session, who, project_id)
        row = store.profile(session, project_id, profile_id)
        if row is None:
            raise NotFound("profile")
        identities = store.profile_identities(session, row.id)
        events = store.recent_events(session, row.id, 50)
        return {
            "profile": {
                **_profile(row),
                "identities": [{"kind": i.kind, "value": i.value} for i in identities],
                "recent_events": [_event(e) for e in events],
            }
        }
