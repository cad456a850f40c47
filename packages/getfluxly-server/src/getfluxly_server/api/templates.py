"""Templates (workspace key): create, list, read, change, delete, and preview a render.

Subject and bodies are Liquid (sandboxed; see ``domain/templates``), ``mjml`` is MJML with
Liquid, compiled to ``html`` at save. A syntax error is 400 ``validation_error`` with
``field``, ``line`` and ``column``; a live name taken is 409 ``template_name_taken``. In
answers ``text`` is what the author gave: ``null`` means the text part is derived from the
HTML when a message is rendered (a preview shows it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, settings
from getfluxly_server.api.models import (
    JSONObject,
    PageCursor,
    PageLimit,
    Request,
    Response,
    Timestamp,
)
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.domain import paging, template_preview, template_store
from getfluxly_server.settings import Settings
from getfluxly_server.storage.models import NAME_MAX, Template

router = APIRouter(prefix="/v1", tags=["templates"])
Config = Annotated[Settings, Depends(settings)]

Kind = Literal["marketing", "transactional"]
#: Answers a create or change can give besides the common ones (api/openapi_docs.py).
NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "template_name_taken: a live template has the name"}
}

EXAMPLE = {
    "name": "welcome",
    "kind": "transactional",
    "subject": "Welcome, {{ profile.first_name | default: 'friend' }}",
    "html": "<h1>Hi {{ profile.first_name }}</h1>{% include 'footer' %}",
}


class NewTemplate(Request):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    subject: str
    html: str | None = None
    text: str | None = None
    mjml: str | None = None
    kind: Kind = "marketing"


class TemplateChanges(Request):
    """Only the fields given change; ``null`` clears html, text or mjml."""

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    mjml: str | None = None
    kind: Kind | None = None


class PreviewEvent(Request):
    name: str | None = Field(default=None, max_length=200)
    properties: JSONObject = Field(default_factory=dict)


class PreviewRequest(Request):
    """What to render with: a profile of the template's project, and/or traits laid over
    it, the triggering event, the transactional call's data."""

    profile_id: str | None = Field(default=None, max_length=64)
    traits: JSONObject | None = None
    event: PreviewEvent | None = None
    data: JSONObject | None = None


class TemplateView(Response):
    id: str
    project_id: str
    name: str
    kind: Kind
    subject: str
    html: str | None
    #: As the author gave it; null: derived from the HTML at render time.
    text: str | None
    #: The MJML source, when the HTML is compiled from it.
    mjml: str | None
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class OneTemplate(Response):
    template: TemplateView


class TemplateList(Response):
    templates: list[TemplateView]
    #: Pass as ``?cursor=`` for the next page; null on the last page.
    next_cursor: str | None


class Deleted(Response):
    deleted: bool
    id: str


class UndefinedVariable(Response):
    type: Literal["undefined_variable"]
    #: Dotted path, e.g. ``profile.first_name`` or ``data.items[0].name``.
    variable: str
    #: The fields where it is used (subject, html, text).
    fields: list[str]


class Preview(Response):
    subject: str
    html: str | None
    text: str
    warnings: list[UndefinedVariable]


def _view(row: Template) -> TemplateView:
    return TemplateView(
        id=row.id, project_id=row.project_id, name=row.name, kind=row.kind,  # type: ignore[arg-type]
        subject=row.subject, html=row.html, text=row.text, mjml=row.mjml, version=row.version,
        created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


@router.post(
    "/projects/{project_id}/templates",
    status_code=201,
    responses=NAME_TAKEN,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
def create_template(project_id: str, body: NewTemplate, who: WorkspaceKey, db: DB) -> OneTemplate:
    """Check (Liquid syntax, MJML) and save; at least one of html, text, mjml."""
    with db.transaction() as session:
        row = template_store.create(
            session, who, project_id, name=body.name, subject=body.subject, html=body.html,
            text=body.text, mjml=body.mjml, kind=body.kind,
        )  # fmt: skip
        return OneTemplate(template=_view(row))


@router.get("/projects/{project_id}/templates")
def list_templates(
    project_id: str,
    who: WorkspaceKey,
    db: DB,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> TemplateList:
    """The project's templates, newest first (deleted ones are left out)."""
    with db.read() as session:
        found = template_store.page(session, who, project_id, limit=limit, cursor=cursor)
        return TemplateList(
            templates=[_view(t) for t in found.templates], next_cursor=found.next_cursor
        )


@router.get("/templates/{template_id}")
def get_template(template_id: str, who: WorkspaceKey, db: DB) -> OneTemplate:
    with db.read() as session:
        return OneTemplate(template=_view(template_store.find(session, who, template_id)))


@router.patch("/templates/{template_id}", responses=NAME_TAKEN)
def update_template(
    template_id: str, body: TemplateChanges, who: WorkspaceKey, db: DB
) -> OneTemplate:
    """Change the fields given; checked again as on create; ``version`` goes up by one."""
    with db.transaction() as session:
        row = template_store.update(session, who, template_id, body.model_dump(exclude_unset=True))
        return OneTemplate(template=_view(row))


@router.delete("/templates/{template_id}")
def delete_template(template_id: str, who: WorkspaceKey, db: DB) -> Deleted:
    """Gone from reads and lists, its name free; messages already queued still render."""
    with db.transaction() as session:
        template_store.delete(session, who, template_id)
        return Deleted(deleted=True, id=template_id)


@router.post("/templates/{template_id}/preview")
def preview_template(
    template_id: str, body: PreviewRequest, who: WorkspaceKey, db: DB, config: Config
) -> Preview:
    """Render as a send would, with warnings for undefined variables. The unsubscribe and
    preferences links are placeholders on ``GETFLUXLY_PUBLIC_URL`` (``.../preview``)."""
    with db.read() as session:
        rendered = template_preview.preview_template(
            session, who, template_id, public_url=config.public_url,
            profile_id=body.profile_id, traits=body.traits,
            event_name=body.event.name if body.event else None,
            event_properties=body.event.properties if body.event else None,
            data=body.data,
        )  # fmt: skip
        return Preview.model_validate(rendered)
