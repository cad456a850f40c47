"""How objects look in responses: the domain's objects in, response models out. Secrets are
never part of a view (a new key's plaintext is the one exception, shown once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from getfluxly_server.api.models import Response, Timestamp
from getfluxly_server.domain.identity import Alias, ErasureRequest
from getfluxly_server.domain.tenancy import IssuedKey
from getfluxly_server.storage.models import ApiKey, Project


def _time(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class ProjectView(Response):
    id: str
    workspace_id: str
    name: str
    #: Where the project's mail goes unless a call or step names a provider: the first
    #: provider created, changed with PATCH; null while the project has none.
    default_provider_id: str | None
    #: The IANA time zone of profiles without a ``timezone`` trait (automations' times of
    #: day, quiet hours); null: UTC.
    timezone: str | None = None
    created_at: Timestamp


class KeyView(Response):
    id: str
    kind: Literal["workspace", "secret", "publishable"]
    name: str
    #: The visible start of the key and an ellipsis (``gflux_secret_AbCd…``).
    hint: str
    project_id: str | None
    created_at: Timestamp
    revoked_at: Timestamp | None


class IssuedKeyView(KeyView):
    #: The key itself: in this answer only, never again.
    key: str


def project(row: Project) -> ProjectView:
    return ProjectView(
        id=row.id, workspace_id=row.workspace_id, name=row.name,
        default_provider_id=row.default_provider_id, timezone=row.timezone,
        created_at=row.created_at,
    )  # fmt: skip


def key(row: ApiKey) -> KeyView:
    return KeyView(
        id=row.id, kind=row.kind, name=row.name, hint=row.hint + "…",  # type: ignore[arg-type]
        project_id=row.project_id, created_at=row.created_at, revoked_at=row.revoked_at,
    )  # fmt: skip


def issued(key_: IssuedKey) -> IssuedKeyView:
    """A new key with its plaintext: the only response that ever contains it."""
    return IssuedKeyView(**dict(key(key_.record)), key=key_.plaintext)


def alias(done: Alias) -> dict[str, Any]:
    """``POST /v1/identify/alias``'s answer (the id's own field name is a key)."""
    return {
        "alias": {
            "user_id": done.user_id,
            done.field: done.value,
            "merged_at": _time(done.merged_at),
        }
    }


def erasure(request: ErasureRequest) -> dict[str, Any]:
    """``POST /v1/profiles/{id}/erase``'s answer."""
    return {
        "erasure_id": request.erasure.id,
        "profiles_targeted": request.erasure.profiles_targeted,
        "events_targeted": request.erasure.events_targeted,
        "completes_by": _time(request.completes_by),
    }
