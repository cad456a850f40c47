"""Saved templates: create, list, read, change and delete a project's templates, and the
sources a render needs (its fields, the project's other templates for ``include``/``render``).

Rules (engine spec section 1):

* Every save goes through :func:`~.templates.prepare`: Liquid syntax (naming field, line and
  column), at least one of html/text/mjml, MJML compiled. What is stored is what ``prepare``
  returns: ``html`` compiled from ``mjml`` when MJML is given (the MJML source is kept in
  ``mjml``); ``text`` only as the author wrote it (``None`` means "derived from the HTML at
  render time", so an edit of the HTML changes the text too).
* A live template's name is unique in its project (``template_name_taken``, 409); a deleted
  template keeps its row (``deleted_at``: messages queued with it still render) and frees
  its name. Reads, changes and deletes see live templates only.
* Every change that changes something adds one to ``version`` (a worker's compiled-template
  cache keys on ``(id, version)``) and sets ``updated_at``.
* Another tenant's template is ``not_found``, word for word the answer for an id that does
  not exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.templates import PartialLoader, TemplateFields, prepare
from getfluxly_server.domain.tenancy import Principal, display_name, project_of, sees
from getfluxly_server.storage import templates as store
from getfluxly_server.storage.models import Template, new_id, now

TemplateKind = Literal["marketing", "transactional"]
KINDS: tuple[TemplateKind, ...] = ("marketing", "transactional")
#: The fields a change may set (``None`` clears html, text or mjml).
CHANGEABLE = ("name", "kind", "subject", "html", "text", "mjml")


@dataclass(frozen=True)
class TemplatePage:
    """One page of a project's templates, newest first, and the cursor of the next page."""

    templates: Sequence[Template]
    next_cursor: str | None


def create(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    name: str,
    subject: str,
    html: str | None = None,
    text: str | None = None,
    mjml: str | None = None,
    kind: str = "marketing",
) -> Template:
    """A new template (version 1) of the project.

    Raises:
        ValidationFailed: a bad name or kind, no body, a Liquid or MJML error (see module).
        DomainError: ``template_name_taken`` when a live template has the name.
    """
    project_of(session, principal, project_id)
    checked_name = display_name(name)
    fields = prepare(
        TemplateFields(subject=subject, html=_blank(html), text=_blank(text), mjml=_blank(mjml))
    )
    stamp = now()
    row = Template(
        id=new_id("tpl"), project_id=project_id, name=checked_name, kind=_kind(kind),
        subject=fields.subject, html=fields.html, text=fields.text, mjml=fields.mjml,
        version=1, created_at=stamp, updated_at=stamp,
    )  # fmt: skip
    return _save(session, row)


def find(
    session: Session, principal: Principal, template_id: str, *, lock: bool = False
) -> Template:
    """The live template, if ``principal`` may see it; otherwise ``not_found``. ``lock``:
    for a change (see :func:`~getfluxly_server.storage.templates.get`)."""
    row = store.get(session, template_id, lock=lock)
    if row is None or row.deleted_at is not None or not sees(session, principal, row.project_id):
        raise NotFound("template")
    return row


def page(
    session: Session,
    principal: Principal,
    project_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
) -> TemplatePage:
    """The project's live templates, newest first, ``limit`` at a time (see :mod:`.paging`)."""
    project_of(session, principal, project_id)
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.live_page(session, project_id, limit=n, before=before),
        limit,
        cursor,
    )
    return TemplatePage(templates=rows, next_cursor=next_cursor)


def update(
    session: Session, principal: Principal, template_id: str, changes: Mapping[str, object]
) -> Template:
    """Apply ``changes`` (only the fields the caller gave, from :data:`CHANGEABLE`) and check
    the result as a new template would be checked.

    A template made from MJML is recompiled from its MJML (the stored HTML is never taken as
    a second source): change ``mjml`` to change it, or set ``mjml`` to null and give
    ``html`` to edit HTML from then on (``html`` alone is refused while ``mjml`` is set).
    Nothing changed: the template as it was, same version.
    """
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise ValidationFailed(f"{sorted(unknown)[0]} cannot be changed", field=sorted(unknown)[0])
    row = find(session, principal, template_id, lock=True)
    for required in ("name", "kind", "subject"):
        if required in changes and changes[required] is None:
            raise ValidationFailed(f"{required} cannot be null", field=required)
    name = display_name(str(changes["name"])) if "name" in changes else row.name
    kind = _kind(str(changes["kind"])) if "kind" in changes else row.kind
    mjml = _blank(_text_or_none(changes, "mjml", row.mjml))
    html = _blank(_text_or_none(changes, "html", row.html))
    if mjml is not None and "html" not in changes:
        html = None  # compiled again from the MJML
    fields = prepare(
        TemplateFields(
            subject=_text_or_none(changes, "subject", row.subject) or "",
            html=html,
            text=_blank(_text_or_none(changes, "text", row.text)),
            mjml=mjml,
        )
    )
    after = {
        "name": name, "kind": kind, "subject": fields.subject, "html": fields.html,
        "text": fields.text, "mjml": fields.mjml,
    }  # fmt: skip
    if all(getattr(row, key) == value for key, value in after.items()):
        return row
    return _save(session, row, {**after, "version": row.version + 1, "updated_at": now()})


def delete(session: Session, principal: Principal, template_id: str) -> Template:
    """Mark the template deleted: gone from reads, lists and includes, its name free; the
    row stays for messages already queued with it."""
    row = find(session, principal, template_id, lock=True)
    row.deleted_at = now()
    session.flush()
    return row


def fields_of(row: Template) -> TemplateFields:
    """What to compile for a stored template (:func:`~.templates.compile_template`, or a
    :class:`~.templates.TemplateCache` keyed on ``(row.id, row.version)``).

    The HTML stored at save (compiled from the MJML, if any), not the MJML: a render never
    runs MRML again, and a newer MRML cannot change a saved template's output.
    """
    return TemplateFields(subject=row.subject, html=row.html, text=row.text)


def partial_source(row: Template) -> str:
    """What ``{% include 'name' %}`` inserts for a template: its HTML (compiled from MJML
    when it has MJML), or its text when it has no HTML. The subject is never included."""
    return row.html if row.html is not None else (row.text or "")


def partials_for(session: Session, project_id: str) -> PartialLoader:
    """The :data:`~.templates.PartialLoader` of a project: ``include``/``render`` names find
    the project's live templates by name (:func:`partial_source`), nothing else: a name is a
    key, never a path, so ``'/etc/passwd'`` finds a template of that name or nothing.

    For one render (or one batch of renders) inside ``session``'s transaction: lookups are
    memoised, so a partial included in a loop costs one query, and an edited partial applies
    from the next loader made. The delivery worker makes one per message (or batch) as the
    preview does.
    """
    found: dict[str, str | None] = {}

    def load(name: str) -> str | None:
        if name not in found:
            row = store.live_by_name(session, project_id, name)
            found[name] = partial_source(row) if row is not None else None
        return found[name]

    return load


def _save(session: Session, row: Template, changes: Mapping[str, object] | None = None) -> Template:
    name = str((changes or {}).get("name", row.name))
    try:
        return store.save(session, row, changes)
    except store.NameTaken:
        raise DomainError(
            "template_name_taken",
            f"A template named {name!r} already exists in this project; choose another "
            "name, or change or delete that template",
            extra={"field": "name"},
        ) from None


def _kind(value: str) -> str:
    if value not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", field="kind")
    return value


def _blank(value: str | None) -> str | None:
    """An empty body is no body (a template needs at least one that is not empty)."""
    return value if value else None


def _text_or_none(changes: Mapping[str, object], key: str, current: str | None) -> str | None:
    if key not in changes:
        return current
    value = changes[key]
    if value is not None and not isinstance(value, str):
        raise ValidationFailed(f"{key} must be text", field=key)
    return value
