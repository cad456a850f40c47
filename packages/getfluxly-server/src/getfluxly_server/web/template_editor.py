"""Templates: the list, the editor (subject, HTML, text or MJML) with a live preview that
renders as a send would, saving (``domain.template_store``), deleting, and a test send that
records a real transactional message to an address (``domain.messages.send``), so it shows
in the message log and goes out through the project's default provider.

The live preview renders what is in the editor, saved or not: the sources checked as a save
checks them (``domain.templates.prepare``), then rendered with the sample profile traits and
``data`` the author typed, with the project's live templates as includes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from getfluxly_server.domain import messages, template_store, tenancy
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.template_preview import (
    PREFERENCES_PLACEHOLDER,
    UNSUBSCRIBE_PLACEHOLDER,
)
from getfluxly_server.domain.templates import (
    TemplateFields,
    compile_template,
    prepare,
    preview,
    variables,
)
from getfluxly_server.storage.models import Template
from getfluxly_server.web.routing import Ctx, page

FIELDS = ("name", "kind", "subject", "html", "text", "mjml")
SAMPLE_TRAITS = '{"first_name": "Ada", "email": "ada@example.com"}'
SAMPLE_DATA = "{}"


def _blank(value: str) -> str | None:
    return value if value.strip() else None


def _json_object(raw: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except ValueError as exc:
        raise ValidationFailed(f"{field}: not valid JSON ({exc})", field=field) from None
    if not isinstance(value, dict):
        raise ValidationFailed(f"{field} must be a JSON object", field=field)
    return value


def _values(row: Template | None, form: dict[str, str] | None = None) -> dict[str, str]:
    if form is not None:
        return {name: form.get(name, "") for name in FIELDS}
    if row is None:
        return {"name": "", "kind": "transactional", "subject": "", "html": "", "text": "",
                "mjml": ""}  # fmt: skip
    return {
        "name": row.name, "kind": row.kind, "subject": row.subject, "html": row.html or "",
        "text": row.text or "", "mjml": row.mjml or "",
    }  # fmt: skip


def _editor(
    ctx: Ctx, row: Template | None, *, form: dict[str, str] | None = None,
    error: DomainError | None = None, status: int = 200,
) -> Response:  # fmt: skip
    return ctx.render(
        "template_edit.html",
        http_status=status,
        template=row,
        values=_values(row, form),
        traits=(form or {}).get("sample_traits", SAMPLE_TRAITS),
        data=(form or {}).get("sample_data", SAMPLE_DATA),
        error=error.detail if error else "",
        error_field=str(error.extra.get("field", "")) if error else "",
    )


@page("/projects/{project_id}/templates")
def listing(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        found = template_store.page(
            session, ctx.user.principal, project_id, cursor=ctx.query.get("cursor") or None
        )
        return ctx.render(
            "templates.html", templates=found.templates, next_cursor=found.next_cursor
        )


@page("/projects/{project_id}/templates/new")
def new(ctx: Ctx) -> Response:
    ctx.project()
    return _editor(ctx, None)


def _find(ctx: Ctx, session: Any, *, lock: bool = False) -> Template:
    row = template_store.find(session, ctx.user.principal, ctx.params["template_id"], lock=lock)
    if row.project_id != ctx.params["project_id"]:
        raise NotFound("template")
    return row


@page("/projects/{project_id}/templates/{template_id}")
def edit(ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        return _editor(ctx, _find(ctx, session))


@page("/projects/{project_id}/templates/new", method="POST", need="edit")
def create(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    try:
        with ctx.db.transaction() as session:
            row = template_store.create(
                session, ctx.user.principal, project_id, name=ctx.text("name"),
                subject=ctx.form.get("subject", ""), html=_blank(ctx.form.get("html", "")),
                text=_blank(ctx.form.get("text", "")), mjml=_blank(ctx.form.get("mjml", "")),
                kind=ctx.text("kind") or "transactional",
            )  # fmt: skip
            template_id = row.id
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _editor(ctx, None, form=ctx.form, error=exc, status=400)
    return ctx.redirect(f"/projects/{project_id}/templates/{template_id}", flash="Saved")


@page("/projects/{project_id}/templates/preview", method="POST")
def live_preview(ctx: Ctx) -> Response:
    """The editor's sources rendered now (JSON for the page's script): ``subject``,
    ``html``, ``text``, ``warnings`` (lines), or ``error`` (what to fix, where)."""
    project_id = ctx.params["project_id"]
    try:
        traits = _json_object(ctx.form.get("sample_traits", ""), "sample_traits")
        data = _json_object(ctx.form.get("sample_data", ""), "sample_data")
        with ctx.db.read() as session:
            project = tenancy.project_of(session, ctx.user.principal, project_id)
            fields = prepare(
                TemplateFields(
                    subject=ctx.form.get("subject", ""), html=_blank(ctx.form.get("html", "")),
                    text=_blank(ctx.form.get("text", "")), mjml=_blank(ctx.form.get("mjml", "")),
                )
            )  # fmt: skip
            base = ctx.settings.public_url.rstrip("/")
            email = traits.get("email")
            rendered = preview(
                compile_template(fields),
                variables(
                    email=email if isinstance(email, str) else None, traits=traits, data=data,
                    project={"id": project.id, "name": project.name},
                    unsubscribe_url=base + UNSUBSCRIBE_PLACEHOLDER,
                    preferences_url=base + PREFERENCES_PLACEHOLDER,
                ),
                partials=template_store.partials_for(session, project_id),
            )  # fmt: skip
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return JSONResponse({"error": exc.detail, "field": exc.extra.get("field")})
    warnings = [
        f"{w['variable']} is not defined (used in {', '.join(w['fields'])})"
        for w in rendered["warnings"]
    ]
    return JSONResponse({**rendered, "warnings": warnings})


@page("/projects/{project_id}/templates/{template_id}", method="POST", need="edit")
def save(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    changes: dict[str, object] = {
        "name": ctx.text("name"), "subject": ctx.form.get("subject", ""),
        "kind": ctx.text("kind") or "transactional",
    }  # fmt: skip
    mjml = _blank(ctx.form.get("mjml", ""))
    changes["mjml"] = mjml
    # HTML made from MJML is the MJML's: only a template without MJML takes HTML as given.
    changes["html"] = None if mjml else _blank(ctx.form.get("html", ""))
    changes["text"] = _blank(ctx.form.get("text", ""))
    try:
        with ctx.db.transaction() as session:
            row = _find(ctx, session, lock=True)
            template_store.update(session, ctx.user.principal, row.id, changes)
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        with ctx.db.read() as session:
            return _editor(ctx, _find(ctx, session), form=ctx.form, error=exc, status=400)
    return ctx.redirect(f"/projects/{project_id}/templates/{row.id}", flash="Saved")


@page("/projects/{project_id}/templates/{template_id}/delete", method="POST", need="edit")
def delete(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _find(ctx, session, lock=True)
        template_store.delete(session, ctx.user.principal, row.id)
    return ctx.redirect(f"/projects/{project_id}/templates", flash="Deleted")


@page("/projects/{project_id}/templates/{template_id}/test", method="POST", need="edit")
def test_send(ctx: Ctx) -> Response:
    """Record a transactional message of this template to the address given."""
    project_id = ctx.params["project_id"]
    data = _json_object(ctx.form.get("sample_data", ""), "sample_data")
    with ctx.db.transaction() as session:
        row = _find(ctx, session)
        done = messages.send(
            session,
            project_id,
            messages.NewMessage(
                recipient=messages.Recipient(email=ctx.text("to")),
                content=messages.Content(template_id=row.id),
                source=messages.Source(origin="api", tags={"sent_from": "dashboard test"}),
                data=data,
            ),
        )
        message_id = done.message.id
    return ctx.redirect(
        f"/projects/{project_id}/messages/{message_id}", flash="Test message queued"
    )
