"""Projects and their keys (workspace key)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from getfluxly_server.api import views
from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import database
from getfluxly_server.domain import tenancy
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.storage import tenancy as store
from getfluxly_server.storage.db import Database

router = APIRouter(prefix="/v1", tags=["projects and keys"])
DB = Annotated[Database, Depends(database)]


class NewProject(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class NewKey(BaseModel):
    kind: Literal["secret", "publishable", "workspace"]
    name: str = Field(default="", max_length=200)


@router.get("/projects")
def list_projects(who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        return {
            "projects": [views.project(p) for p in store.list_projects(session, who.workspace_id)]
        }


@router.post("/projects", status_code=201)
def create_project(body: NewProject, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    """A project with a server key and a publishable key, shown this once."""
    with db.transaction() as session:
        made = tenancy.create_project(session, who.workspace_id, body.name)
        return {
            "project": views.project(made.project),
            "keys": {
                "secret": views.issued(made.secret_key),
                "publishable": views.issued(made.publishable_key),
            },
        }


@router.get("/projects/{project_id}")
def get_project(project_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        return {"project": views.project(tenancy.project_of(session, who, project_id))}


@router.get("/projects/{project_id}/keys")
def list_keys(project_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        tenancy.project_of(session, who, project_id)
        return {
            "keys": [views.key(k) for k in store.list_keys(session, who.workspace_id, project_id)]
        }


@router.post("/projects/{project_id}/keys", status_code=201)
def create_project_key(project_id: str, body: NewKey, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.transaction() as session:
        tenancy.project_of(session, who, project_id)
        if body.kind == "workspace":
            raise ValidationFailed(
                "workspace keys are created with POST /v1/keys, not under a project", field="kind"
            )
        issued = tenancy.issue_key(session, body.kind, who.workspace_id, project_id, body.name)
        return {"key": views.issued(issued)}


@router.post("/keys", status_code=201)
def create_workspace_key(body: NewKey, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    """Another workspace key (project keys are made under their project)."""
    with db.transaction() as session:
        if body.kind != "workspace":
            raise ValidationFailed("project keys are created with POST /v1/projects/{id}/keys")
        return {
            "key": views.issued(
                tenancy.issue_key(session, "workspace", who.workspace_id, None, body.name)
            )
        }


@router.get("/keys")
def list_workspace_keys(who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        return {"keys": [views.key(k) for k in store.list_keys(session, who.workspace_id, None)]}


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    """Revoke at once; the key is refused from the next request on."""
    with db.transaction() as session:
        return {"key": views.key(tenancy.revoke_key(session, who, key_id))}
