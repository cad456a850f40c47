"""Workspaces, projects and keys: creation (keys shown once), authentication, revocation.

Keys are 32 random base62 characters after their prefix (about 190 bits), so a plain SHA-256
is a safe thing to store: nobody can brute-force it, and lookup by hash is an index probe that
does not depend on how much of a guess matches (no timing leak); the final comparison is
constant-time anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.storage import tenancy as store
from getfluxly_server.storage.models import NAME_MAX, ApiKey, Project, Workspace, now

KeyKind = Literal["workspace", "secret", "publishable"]
PREFIXES: dict[KeyKind, str] = {
    "workspace": "gf_live_",
    "secret": "gflux_secret_",
    "publishable": "gflux_pub_",
}
_BASE62 = string.ascii_letters + string.digits


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A key as issued: the plaintext exists only here, to be shown once."""

    record: ApiKey
    plaintext: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's kind and the workspace (and project) it is bound to."""

    key_id: str
    kind: KeyKind
    workspace_id: str
    project_id: str | None


def _check_name(name: str, what: str) -> str:
    return display_name(name, what=f"{what} name")


def display_name(value: object, *, field: str = "name", what: str = "name") -> str:
    """A name people give a thing (a project, template, segment, automation ...): trimmed,
    1-``NAME_MAX`` printable characters; anything else is ``validation_error`` on ``field``."""
    name = value.strip() if isinstance(value, str) else ""
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise ValidationFailed(f"{what} must be 1-{NAME_MAX} printable characters", field=field)
    return name


def issue_key(
    session: Session, kind: KeyKind, workspace_id: str, project_id: str | None, name: str = ""
) -> IssuedKey:
    if (kind == "workspace") != (project_id is None):
        raise ValidationFailed("workspace keys belong to a workspace, project keys to a project")
    plaintext = PREFIXES[kind] + "".join(secrets.choice(_BASE62) for _ in range(32))
    record = store.add_key(
        session,
        workspace_id=workspace_id,
        project_id=project_id,
        kind=kind,
        name=name.strip()[:200],
        hint=plaintext[: len(PREFIXES[kind]) + 4],
        key_hash=hash_key(plaintext),
    )
    return IssuedKey(record, plaintext)


def create_workspace(session: Session, name: str) -> tuple[Workspace, IssuedKey]:
    """A workspace and its first workspace key."""
    workspace = store.add_workspace(session, _check_name(name, "workspace"))
    return workspace, issue_key(session, "workspace", workspace.id, None, "default")


@dataclass(frozen=True)
class NewProject:
    project: Project
    secret_key: IssuedKey
    publishable_key: IssuedKey


def create_project(session: Session, workspace_id: str, name: str) -> NewProject:
    """A project with a server (secret) key and a publishable key."""
    if store.get_workspace(session, workspace_id) is None:
        raise NotFound("workspace")
    project = store.add_project(session, workspace_id, _check_name(name, "project"))
    return NewProject(
        project,
        issue_key(session, "secret", workspace_id, project.id, "default"),
        issue_key(session, "publishable", workspace_id, project.id, "default"),
    )


def project_of(session: Session, principal: Principal, project_id: str) -> Project:
    """The project, if ``principal`` may see it; otherwise not_found (never forbidden:
    another tenant's ids must not even be confirmed to exist)."""
    if principal.project_id is not None and principal.project_id != project_id:
        raise NotFound("project")
    return workspace_project(session, principal.workspace_id, project_id)


def sees(session: Session, principal: Principal, project_id: str) -> bool:
    """Whether ``principal`` may see the project (:func:`project_of`'s rule, as a test): a
    row of another project or workspace is answered as if it did not exist."""
    if principal.project_id is not None and principal.project_id != project_id:
        return False
    return store.get_project(session, principal.workspace_id, project_id) is not None


def workspace_project(session: Session, workspace_id: str, project_id: str) -> Project:
    """The project if it belongs to ``workspace_id``; otherwise not_found (the CLI, which
    acts for a workspace named on its command line, and :func:`project_of` both ask this)."""
    project = store.get_project(session, workspace_id, project_id)
    if project is None:
        raise NotFound("project")
    return project


def projects(session: Session, principal: Principal) -> Sequence[Project]:
    """The projects the caller may see, oldest first."""
    found = store.list_projects(session, principal.workspace_id)
    return [p for p in found if principal.project_id in (None, p.id)]


def keys(session: Session, workspace_id: str, project_id: str | None = None) -> Sequence[ApiKey]:
    """The workspace's keys (revoked ones too), oldest first: all of them, or one project's
    after checking the project is the workspace's."""
    if project_id is not None:
        workspace_project(session, workspace_id, project_id)
    return store.list_keys(session, workspace_id, project_id)


def issue_key_in(
    session: Session, workspace_id: str, project_id: str | None, kind: KeyKind, name: str = ""
) -> IssuedKey:
    """A new key of the workspace (``project_id`` None) or of one of its projects: workspace
    keys are made without a project, project keys under theirs (validation_error otherwise)."""
    if project_id is not None:
        workspace_project(session, workspace_id, project_id)
        if kind == "workspace":
            raise ValidationFailed(
                "workspace keys are created with POST /v1/keys, not under a project", field="kind"
            )
    elif kind != "workspace":
        raise ValidationFailed("project keys are created with POST /v1/projects/{id}/keys")
    return issue_key(session, kind, workspace_id, project_id, name)


def authenticate(session: Session, plaintext: str) -> Principal:
    """The principal for a presented key; ``unauthenticated`` for unknown or revoked keys."""
    kind = next((k for k, prefix in PREFIXES.items() if plaintext.startswith(prefix)), None)
    record = store.key_by_hash(session, hash_key(plaintext)) if kind else None
    if (
        record is None
        or record.revoked_at is not None
        or not hmac.compare_digest(record.key_hash, hash_key(plaintext))
    ):
        raise DomainError("unauthenticated", "Unknown or revoked API key")
    return Principal(record.id, record.kind, record.workspace_id, record.project_id)  # type: ignore[arg-type]


def revoke_key(session: Session, principal: Principal, key_id: str) -> ApiKey:
    return revoke_key_in(session, principal.workspace_id, key_id)


def revoke_key_in(session: Session, workspace_id: str, key_id: str) -> ApiKey:
    """Revoke one of the workspace's keys at once (again is a no-op); not_found otherwise."""
    key = store.get_key(session, workspace_id, key_id)
    if key is None:
        raise NotFound("key")
    if key.revoked_at is None:
        key.revoked_at = now()
    return key


def set_timezone(session: Session, project: Project, zone: str | None) -> Project:
    """Set the project's time zone (an IANA name, or None for UTC); ``validation_error``
    for a name that is not one."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationFailed(
                f"timezone: {zone[:64]!r} is not an IANA time zone (e.g. Europe/Paris)",
                field="timezone",
            ) from None
    project.timezone = zone
    session.flush()
    return project
