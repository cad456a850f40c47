"""Workspaces, projects and API keys in the database."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import ApiKey, Project, Workspace, new_id, now


def add_workspace(session: Session, name: str) -> Workspace:
    workspace = Workspace(id=new_id("ws"), name=name, created_at=now())
    session.add(workspace)
    session.flush()
    return workspace


def get_workspace(session: Session, workspace_id: str) -> Workspace | None:
    return session.get(Workspace, workspace_id)


def add_project(session: Session, workspace_id: str, name: str) -> Project:
    project = Project(id=new_id("prj"), workspace_id=workspace_id, name=name, created_at=now())
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, workspace_id: str, project_id: str) -> Project | None:
    """The project if it belongs to ``workspace_id``: tenancy is part of every lookup."""
    project = session.get(Project, project_id)
    return project if project is not None and project.workspace_id == workspace_id else None


def list_projects(session: Session, workspace_id: str) -> Sequence[Project]:
    query = select(Project).where(Project.workspace_id == workspace_id).order_by(Project.created_at)
    return session.scalars(query).all()


def add_key(
    session: Session,
    *,
    workspace_id: str,
    project_id: str | None,
    kind: str,
    name: str,
    hint: str,
    key_hash: str,
) -> ApiKey:
    key = ApiKey(
        id=new_id("key"), workspace_id=workspace_id, project_id=project_id, kind=kind,
        name=name, hint=hint, key_hash=key_hash, created_at=now(),
    )  # fmt: skip
    session.add(key)
    session.flush()
    return key


def key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def live_key_ids(session: Session, key_ids: Collection[str]) -> set[str]:
    """Those of ``key_ids`` that exist and are not revoked (once per ingest transaction:
    the statement is built once, and run without the ORM)."""
    return set(session.connection().execute(_LIVE_KEYS, {"ids": list(key_ids)}).scalars())


_LIVE_KEYS = select(ApiKey.id).where(
    ApiKey.id.in_(bindparam("ids", expanding=True)), ApiKey.revoked_at.is_(None)
)


def list_keys(session: Session, workspace_id: str, project_id: str | None) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.workspace_id == workspace_id)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    return session.scalars(query.order_by(ApiKey.created_at)).all()


def get_key(session: Session, workspace_id: str, key_id: str) -> ApiKey | None:
    key = session.get(ApiKey, key_id)
    return key if key is not None and key.workspace_id == workspace_id else None


def revoke_named(session: Session, workspace_id: str, name: str) -> int:
    """Revoke every live key of the workspace (its projects' too) named ``name``; how many."""
    result = session.execute(
        update(ApiKey)
        .where(
            ApiKey.workspace_id == workspace_id,
            ApiKey.name == name,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
