"""Templates in the database. Deleted templates stay (``deleted_at``) for queued messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Template
from getfluxly_server.storage.paging import newest_first


class NameTaken(Exception):  # noqa: N818 - reads as what happened
    """Another live template of the project has this name (the unique index said so)."""


def get(session: Session, template_id: str, *, lock: bool = False) -> Template | None:
    """The template, deleted or not (a queued message still renders with it). ``lock``:
    hold its row until the transaction ends (PostgreSQL; SQLite serialises writers anyway),
    so two changes at once apply one after the other and each gets its own version."""
    return session.get(Template, template_id, with_for_update=lock or None)


_LIVE_VERSION = select(Template.version).where(
    Template.id == bindparam("template_id"),
    Template.project_id == bindparam("project_id"),
    Template.deleted_at.is_(None),
)


def live_version(session: Session, project_id: str, template_id: str) -> int | None:
    """The version of the project's live template ``template_id``, or None (no such
    template in the project, or deleted). One column read, not the template's texts."""
    found = session.scalars(_LIVE_VERSION, {"template_id": template_id, "project_id": project_id})
    return found.first()


def live_by_name(session: Session, project_id: str, name: str) -> Template | None:
    """The project's live template called ``name`` (what ``{% include name %}`` finds)."""
    query = select(Template).where(
        Template.project_id == project_id, Template.name == name, Template.deleted_at.is_(None)
    )
    return session.scalars(query).first()


def save(
    session: Session, template: Template, changes: Mapping[str, object] | None = None
) -> Template:
    """Insert ``template``, or set ``changes`` on it; :class:`NameTaken` when its name is
    then a live one's.

    In a savepoint, with the changes made inside it (a change made before would be flushed
    when the savepoint begins, outside it), so the refusal of ``ux_templates_name`` (also
    when a concurrent transaction took the name first) leaves the caller's transaction
    usable.
    """
    try:
        with session.begin_nested():
            for key, value in (changes or {}).items():
                setattr(template, key, value)
            session.add(template)
            session.flush()
    except IntegrityError:
        raise NameTaken(template.name) from None
    return template


def live_page(
    session: Session, project_id: str, *, limit: int, before: tuple[datetime, str] | None = None
) -> Sequence[Template]:
    """Up to ``limit`` live templates of the project, newest first (``created_at``, then id),
    starting after the ``(created_at, id)`` of the previous page's last one."""
    query = select(Template).where(Template.project_id == project_id, Template.deleted_at.is_(None))
    query = newest_first(query, Template.created_at, Template.id, limit=limit, before=before)
    return session.scalars(query).all()
