"""The suppression list: addresses of a project that no message may be sent to."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Suppression, now


def normalise(email: str) -> str:
    """The form addresses are stored and looked up in (whole address lower-cased: local parts
    are case-sensitive in theory, in practice no mailbox provider treats them so)."""
    return email.strip().lower()


_SUPPRESSED = select(Suppression.email).where(
    Suppression.project_id == bindparam("project_id"),
    Suppression.email.in_(bindparam("emails", expanding=True)),
)


def suppressed(session: Session, project_id: str, emails: Collection[str]) -> set[str]:
    """Which of ``emails`` (as given) are suppressed in the project: one query for a batch
    (built once: it runs on every send)."""
    if not emails:
        return set()
    wanted = sorted({normalise(e) for e in emails})
    found = set(session.scalars(_SUPPRESSED, {"project_id": project_id, "emails": wanted}))
    return {e for e in emails if normalise(e) in found}


def get(session: Session, project_id: str, email: str) -> Suppression | None:
    """The project's entry for ``email`` (any spelling), or None."""
    return session.get(Suppression, (project_id, normalise(email)))


def add_if_absent(
    session: Session, project_id: str, email: str, reason: str, message_id: str | None = None
) -> tuple[Suppression, bool]:
    """The entry for ``email``, added with ``reason`` unless there is one already (which is
    kept as it is: the first cause stands); and whether it was added now.

    One ``INSERT ... ON CONFLICT DO NOTHING``, so two transactions suppressing the same
    address at once (two bounces of one recipient) both succeed and one row results.
    """
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    address = normalise(email)
    statement = (
        insert_(Suppression)
        .values(
            project_id=project_id,
            email=address,
            reason=reason,
            message_id=message_id,
            created_at=now(),
        )
        .on_conflict_do_nothing(index_elements=["project_id", "email"])
        .returning(Suppression.email)
    )
    added = session.execute(statement).first() is not None
    row = session.get(Suppression, (project_id, address), populate_existing=True)
    assert row is not None  # inserted now, or there already (rows are only deleted by remove)
    return row, added


def remove(session: Session, project_id: str, email: str) -> bool:
    """Delete the entry for ``email``; whether there was one."""
    result = session.execute(
        delete(Suppression).where(
            Suppression.project_id == project_id, Suppression.email == normalise(email)
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def page(
    session: Session,
    project_id: str,
    *,
    limit: int,
    after: str | None = None,
    reason: str | None = None,
    containing: str | None = None,
) -> Sequence[Suppression]:
    """Up to ``limit`` entries of the project in address order (the primary key's, so paging
    is an index range however long the list), after the address ``after``; only those with
    ``reason`` and/or whose address contains ``containing`` (any case), when given."""
    query = select(Suppression).where(Suppression.project_id == project_id)
    if after is not None:
        query = query.where(Suppression.email > after)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    if containing:
        escaped = (
            normalise(containing).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        )
        query = query.where(Suppression.email.like(f"%{escaped}%", escape="\\"))
    return session.scalars(query.order_by(Suppression.email).limit(limit)).all()
