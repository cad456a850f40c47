"""Projects and their keys (workspace key).

``PATCH /v1/projects/{id}`` changes the project's default provider (engine spec section 2):
``{"default_provider_id": "prv_..."}``, one of the project's own providers. It cannot be set
to null: while the project has providers one of them is the default (the first created,
until changed; the oldest remaining when the default is deleted), so mail always has a way
out; pick another provider instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BeforeValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

from getfluxly_server.api import views
from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB
from getfluxly_server.api.models import Request, Response
from getfluxly_server.api.views import IssuedKeyView, KeyView, ProjectView
from getfluxly_server.domain import providers, tenancy

router = APIRouter(prefix="/v1", tags=["projects and keys"])


class NewProject(Request):
    name: str = Field(min_length=1, max_length=200)


def _not_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError(
            "null_not_allowed",
            "cannot be null: a project with providers always has a default; name another "
            "of its providers instead",
        )
    return value


class ProjectChanges(Request):
    """What ``PATCH /v1/projects/{id}`` changes; a field left out keeps its value."""

    # Left out: unchanged (the None default is never validated); null is refused.
    default_provider_id: Annotated[
        str, StringConstraints(min_length=1, max_length=64), BeforeValidator(_not_null)
    ] = Field(  # type: ignore[assignment]
        default=None,
        description="The provider the project's mail goes through unless a call names "
        "another: one of this project's email providers",
        examples=["prv_..."],
    )
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone of profiles without a timezone trait (automations); null: UTC",
        examples=["Europe/Paris"],
    )


class NewKey(Request):
    kind: Literal["secret", "publishable", "workspace"]
    name: str = Field(default="", max_length=200)


class ProjectList(Response):
    projects: list[ProjectView]


class ProjectKeys(Response):
    secret: IssuedKeyView
    publishable: IssuedKeyView


class ProjectCreated(Response):
    project: ProjectView
    #: The project's first keys, shown this once.
    keys: ProjectKeys


class OneProject(Response):
    project: ProjectView


class KeyList(Response):
    keys: list[KeyView]


class KeyIssued(Response):
    key: IssuedKeyView


class OneKey(Response):
    key: KeyView


@router.get("/projects")
def list_projects(who: WorkspaceKey, db: DB) -> ProjectList:
    with db.read() as session:
        return ProjectList(projects=[views.project(p) for p in tenancy.projects(session, who)])


@router.post("/projects", status_code=201)
def create_project(body: NewProject, who: WorkspaceKey, db: DB) -> ProjectCreated:
    """A project with a server key and a publishable key, shown this once."""
    with db.transaction() as session:
        made = tenancy.create_project(session, who.workspace_id, body.name)
        return ProjectCreated(
            project=views.project(made.project),
            keys=ProjectKeys(
                secret=views.issued(made.secret_key),
                publishable=views.issued(made.publishable_key),
            ),
        )


@router.get("/projects/{project_id}")
def get_project(project_id: str, who: WorkspaceKey, db: DB) -> OneProject:
    with db.read() as session:
        return OneProject(project=views.project(tenancy.project_of(session, who, project_id)))


@router.patch("/projects/{project_id}")
def update_project(project_id: str, body: ProjectChanges, who: WorkspaceKey, db: DB) -> OneProject:
    """Change the project's default provider (one of its own providers; null is refused)."""
    with db.transaction() as session:
        project = tenancy.project_of(session, who, project_id)
        if body.default_provider_id is not None:
            project = providers.set_default(session, who, project_id, body.default_provider_id)
        if "timezone" in body.model_fields_set:
            project = tenancy.set_timezone(session, project, body.timezone)
        return OneProject(project=views.project(project))


@router.get("/projects/{project_id}/keys")
def list_keys(project_id: str, who: WorkspaceKey, db: DB) -> KeyList:
    with db.read() as session:
        tenancy.project_of(session, who, project_id)
        rows = tenancy.keys(session, who.workspace_id, project_id)
        return KeyList(keys=[views.key(k) for k in rows])


@router.post("/projects/{project_id}/keys", status_code=201)
def create_project_key(project_id: str, body: NewKey, who: WorkspaceKey, db: DB) -> KeyIssued:
    with db.transaction() as session:
        tenancy.project_of(session, who, project_id)
        issued = tenancy.issue_key_in(session, who.workspace_id, project_id, body.kind, body.name)
        return KeyIssued(key=views.issued(issued))


@router.post("/keys", status_code=201)
def create_workspace_key(body: NewKey, who: WorkspaceKey, db: DB) -> KeyIssued:
    """Another workspace key (project keys are made under their project)."""
    with db.transaction() as session:
        issued = tenancy.issue_key_in(session, who.workspace_id, None, body.kind, body.name)
        return KeyIssued(key=views.issued(issued))


@router.get("/keys")
def list_workspace_keys(who: WorkspaceKey, db: DB) -> KeyList:
    with db.read() as session:
        return KeyList(keys=[views.key(k) for k in tenancy.keys(session, who.workspace_id)])


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, who: WorkspaceKey, db: DB) -> OneKey:
    """Revoke at once; the key is refused from the next request on."""
    with db.transaction() as session:
        return OneKey(key=views.key(tenancy.revoke_key(session, who, key_id)))
