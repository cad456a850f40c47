"""Email providers in the database (their secrets only ever encrypted)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import EmailProvider, Project


def add(session: Session, provider: EmailProvider) -> EmailProvider:
    session.add(provider)
    session.flush()
    return provider


def get_in_workspace(
    session: Session, workspace_id: str, provider_id: str, *, lock: bool = False
) -> EmailProvider | None:
    """The provider if its project belongs to ``workspace_id``; ``lock``: the provider's row
    (not its project's) locked until the transaction ends, and read afresh."""
    query = (
        select(EmailProvider)
        .join(Project, Project.id == EmailProvider.project_id)
        .where(EmailProvider.id == provider_id, Project.workspace_id == workspace_id)
    )
    if lock:
        query = query.with_for_update(of=EmailProvider).execution_options(populate_existing=True)
    return session.scalars(query).first()


def get(session: Session, provider_id: str) -> EmailProvider | None:
    return session.get(EmailProvider, provider_id)


def list_for_project(session: Session, project_id: str) -> Sequence[EmailProvider]:
    query = select(EmailProvider).where(EmailProvider.project_id == project_id)
    return session.scalars(query.order_by(EmailProvider.created_at, EmailProvider.id)).all()


def oldest_in_project(session: Session, project_id: str) -> EmailProvider | None:
    """The project's first-created provider still there (ties, same instant: by id)."""
    query = select(EmailProvider).where(EmailProvider.project_id == project_id)
    return session.scalars(query.order_by(EmailProvider.created_at, EmailProvider.id)).first()


def lock_project(session: Session, project_id: str) -> Project:
    """The project's row, locked until the transaction ends and read afresh, so changes to
    its providers and its default happen one at a time. PostgreSQL: ``FOR NO KEY UPDATE``,
    which leaves inserts of rows that reference the project (events, messages) unblocked;
    SQLite: the transaction already holds the database's write lock."""
    query = (
        select(Project)
        .where(Project.id == project_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).one()


def delete(session: Session, provider: EmailProvider) -> None:
    session.delete(provider)


def every(session: Session) -> Sequence[EmailProvider]:
    """Every provider of every workspace (for maintenance such as key rotation)."""
    return session.scalars(select(EmailProvider).order_by(EmailProvider.created_at)).all()
