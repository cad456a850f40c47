"""Templates in the database. Deleted templates stay (``deleted_at``) for queued messages."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Template


def get(session: Session, template_id: str) -> Template | None:
    """The template, deleted or not (a queued message still renders with it)."""
    return session.get(Template, template_id)


def live_by_name(session: Session, project_id: str, name: str) -> Template | None:
    """The project's live template called ``name`` (what ``{% include name %}`` finds)."""
    query = select(Template).where(
        Template.project_id == project_id, Template.name == name, Template.deleted_at.is_(None)
    )
    return session.scalars(query).first()
