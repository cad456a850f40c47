"""The suppression list: addresses of a project that no message may be sent to."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from getfluxly_server.storage.models import Suppression, SuppressionReason, now


def normalise(email: str) -> str:
    """The form addresses are stored and looked up in (whole address lower-cased: local parts
    are case-sensitive in theory, in practice no mailbox provider treats them so)."""
    return email.strip().lower()


_SUPPRESSED = select(Suppression.email, Suppression.reason).where(
    Suppression.project_id == bindparam("project_id"),
    Suppression.email.in_(bindparam("emails", expanding=True)),
)
#: For transactional mail: an address that only unsubscribed is not suppressed.
_SUPPRESSED_TRANSACTIONAL = _SUPPRESSED.where(
    Suppression.reason != SuppressionReason.UNSUBSCRIBED.value
)


def suppressed(
    session: Session, project_id: str, emails: Collection[str], *, transactional: bool = False
) -> set[str]:
    """Which of ``emails`` (as given) are suppressed in the project (see :func:`reasons`)."""
    return set(reasons(session, project_id, emails, transactional=transactional))


def reasons(
    session: Session, project_id: str, emails: Collection[str], *, transactional: bool = False
) -> dict[str, str]:
    """The suppressed ones of ``emails`` (as given), each with its entry's reason: one query
    for a batch (built once: it runs on every send).

    ``transactional``: for transactional mail (receipts, password resets), an address that
    only unsubscribed (reason ``unsubscribed``) is not suppressed: an unsubscribe stops
    marketing mail, bounces and complaints stop everything.
    """
    if not emails:
        return {}
    wanted = sorted({normalise(e) for e in emails})
    query = _SUPPRESSED_TRANSACTIONAL if transactional else _SUPPRESSED
    found = {
        row.email: row.reason
        for row in session.execute(query, {"project_id": project_id, "emails": wanted})
    }
    return {e: found[normalise(e)] for e in emails if normalise(e) in found}


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


def add_many_if_absent(
    session: Session, project_id: str, entries: Sequence[tuple[str, str, str | None]]
) -> set[str]:
    """:func:`add_if_absent` for many ``(email, reason, message_id)`` at once (feedback's
    batches): one ``INSERT ... ON CONFLICT DO NOTHING``; the addresses added now (the first
    entry of an address in ``entries`` is the one kept, as an earlier one on the list is)."""
    rows: dict[str, dict[str, object]] = {}
    moment = now()
    for email, reason, message_id in entries:
        address = normalise(email)
        rows.setdefault(
            address,
            {"project_id": project_id, "email": address, "reason": reason,
             "message_id": message_id, "created_at": moment},
        )  # fmt: skip
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert_(Suppression)
        .on_conflict_do_nothing(index_elements=["project_id", "email"])
        .returning(Suppression.email)
    )
    return set(session.scalars(statement, list(rows.values())))
