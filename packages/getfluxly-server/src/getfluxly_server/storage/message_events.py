"""Feedback in the database: the messages a report names, the ``message_events`` rows it
becomes, the status moves it makes, per-group unsubscribes, and the erasure of all of it.

Every function is set-based: one statement for a batch, whatever its size (SQLite: a chunk
of rows per statement where parameters would run out).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class

from getfluxly_server.storage.models import (
    Base,
    Message,
    MessageEvent,
    MessageHistory,
    Subscription,
)

#: Ids per ``IN (...)`` list on SQLite (its parameter limit is 32,766; stay well inside).
_IN_CHUNK = 5_000
#: Feedback rows per INSERT (14 columns each: within SQLite's 32,766 parameters).
_INSERT_CHUNK = 1_000
#: What an erased person's feedback rows read as.
ERASED_ADDRESS = "erased"


@dataclass(frozen=True, slots=True)
class MessageRef:
    """What feedback needs of a message it joins to: a plain value (no ORM identity)."""

    id: str
    status: str
    to_email: str
    profile_id: str | None
    provider_message_id: str | None
    smtp_message_id: str | None
    erased: bool


def _chunks(values: Collection[str]) -> Iterable[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _IN_CHUNK):
        yield ordered[start : start + _IN_CHUNK]


def messages_by(
    session: Session,
    project_id: str,
    *,
    ids: Collection[str] = (),
    provider_ids: Collection[str] = (),
    smtp_ids: Collection[str] = (),
) -> list[MessageRef]:
    """The project's messages whose id, provider message id or Message-ID is one of those
    given: one indexed query per kind of id given (never a message of another project)."""
    found: dict[str, MessageRef] = {}
    for column, values in (
        (Message.id, ids),
        (Message.provider_message_id, provider_ids),
        (Message.smtp_message_id, smtp_ids),
    ):
        for chunk in _chunks(values):
            query = select(
                Message.id, Message.status, Message.to_email, Message.profile_id,
                Message.provider_message_id, Message.smtp_message_id, Message.erased_at,
            ).where(Message.project_id == project_id, column.in_(chunk))  # fmt: skip
            for row in session.execute(query):
                found[row[0]] = MessageRef(*row[:6], erased=row[6] is not None)
    return list(found.values())


#: The columns a feedback row is inserted with, in order (:func:`insert_events`).
COLUMNS = (
    "project_id", "message_id", "profile_id", "email", "type", "bounce_type", "machine", "url",
    "reason", "source", "provider_event_id", "occurred_at", "recorded_at",
)  # fmt: skip
_TIMES = frozenset({"occurred_at", "recorded_at"})
_CONFLICT = (
    "ON CONFLICT (project_id, source, provider_event_id) DO NOTHING "
    "RETURNING id, source, provider_event_id"
)


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> list[MessageEvent]:
    """Insert feedback rows (dicts with the keys of :data:`COLUMNS`), skipping any whose
    ``(project_id, source, provider_event_id)`` is stored already (a replayed report; rows
    without a ``provider_event_id`` are always new); the rows inserted, in insertion order.

    Below SQLAlchemy's per-row, per-column binding (which costs several times the insert),
    as ``storage.events`` does: PostgreSQL gets the rows as one JSON parameter unpacked by
    ``json_to_recordset`` (one prepared statement whatever the count), SQLite multi-row
    ``VALUES`` of :data:`_INSERT_CHUNK` rows; each ``... ON CONFLICT DO NOTHING RETURNING
    id``; the rows are made from what was inserted (no read back).
    """
    if not rows:
        return []
    session.flush()
    connection = session.connection()
    dialect = connection.dialect
    new: list[tuple[int, str, str | None]] = []
    if dialect.name == "postgresql":
        result = connection.exec_driver_sql(
            _statement(dialect, 0), {"rows": orjson.dumps(list(rows)).decode()}
        )
        new = [(row[0], row[1], row[2]) for row in result]
    else:
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            values = tuple(itertools.chain.from_iterable(_sqlite_values(row) for row in chunk))
            result = connection.exec_driver_sql(_statement(dialect, len(chunk)), values)
            new += [(row[0], row[1], row[2]) for row in result]
    if not new:
        return []
    return _written(rows, new)


def _written(
    rows: Sequence[dict[str, Any]], returned: list[tuple[int, str, str | None]]
) -> list[MessageEvent]:
    """The rows inserted as (detached) :class:`MessageEvent` values with their ids, in
    insertion order, from what RETURNING gave (id, source, provider_event_id): a row with a
    reporter's event id is matched by it (unique per source in a batch); those without one
    were all inserted, in order (ids grow in insertion order). No read back."""
    keyed = {
        (row["source"], row["provider_event_id"]): row
        for row in rows
        if row["provider_event_id"] is not None
    }
    unkeyed = iter([row for row in rows if row["provider_event_id"] is None])
    configure_mappers()  # (done by the first query of any process; a no-op after)
    written = []
    for row_id, source, event_id in sorted(returned):
        row = keyed[(source, event_id)] if event_id is not None else next(unkeyed)
        # As the ORM's loader makes rows: the instance, its state filled in directly (the
        # constructor's per-attribute events cost more than the INSERT).
        event = _MANAGER.new_instance()
        event.__dict__.update(row, id=row_id)
        written.append(event)
    return written


_MANAGER = manager_of_class(MessageEvent)


def _sqlite_values(row: dict[str, Any]) -> Iterator[Any]:
    """A row as SQLAlchemy binds it on SQLite (times in its own format, so these rows read
    back, sort and compare like rows written through the ORM)."""
    for column in COLUMNS:
        value = row[column]
        if column in _TIMES:
            yield value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        else:
            yield value


@functools.lru_cache(maxsize=64)
def _statement(dialect: Dialect, rows: int) -> str:
    """The INSERT of ``rows`` rows (SQLite) or of a JSON array of any length (PostgreSQL)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in COLUMNS)
    table = Base.metadata.tables[MessageEvent.__tablename__]
    if dialect.name == "postgresql":
        definitions = ", ".join(
            f"{quote(c)} {table.c[c].type.compile(dialect=dialect)}" for c in COLUMNS
        )
        # WITH ORDINALITY + ORDER BY: ids are handed out in the order the rows came.
        source = (
            f"SELECT {names} FROM ROWS FROM (json_to_recordset(CAST(%(rows)s AS json)) "  # noqa: S608
            f"AS ({definitions})) WITH ORDINALITY AS r({names}, ord) ORDER BY ord"
        )
    else:
        row = f"({', '.join('?' for _ in COLUMNS)})"
        source = "VALUES " + ", ".join(row for _ in range(rows))
    # Only identifiers from the table's own metadata (quoted) go into the text.
    return f"INSERT INTO {quote(table.name)} ({names}) {source} {_CONFLICT}"


def advance(
    session: Session,
    ids: Collection[str],
    status: str,
    from_statuses: Collection[str],
    when: datetime,
) -> set[str]:
    """Set ``status`` on those of the messages ``ids`` whose status is still one of
    ``from_statuses`` (a conditional UPDATE: a concurrent move wins or loses whole, never
    backwards); the ids moved."""
    moved: set[str] = set()
    for chunk in _chunks(ids):
        result = session.execute(
            update(Message)
            .where(Message.id.in_(chunk), Message.status.in_(list(from_statuses)))
            .values(status=status, updated_at=when)
            .returning(Message.id),
            execution_options={"synchronize_session": False},
        )
        moved.update(result.scalars())
    return moved


def events_of(
    session: Session, message_ids: Collection[str], types: Collection[str]
) -> list[MessageEvent]:
    """The feedback rows of these messages whose type is one of ``types``, oldest first."""
    found: list[MessageEvent] = []
    for chunk in _chunks(message_ids):
        query = (
            select(MessageEvent)
            .where(MessageEvent.message_id.in_(chunk), MessageEvent.type.in_(list(types)))
            .order_by(MessageEvent.occurred_at, MessageEvent.id)
        )
        found += session.scalars(query)
    return found


def add_history(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    """History rows (``message_id``, ``status``, ``at``, ``detail``), in one INSERT."""
    if entries:
        session.execute(insert(MessageHistory), list(entries))


def soft_bounces(
    session: Session, project_id: str, emails: Collection[str], since: datetime
) -> dict[str, int]:
    """How many distinct messages to each of ``emails`` soft-bounced at or after ``since``
    (a report without a message counts once by itself)."""
    counted: dict[str, int] = {}
    which = func.coalesce(MessageEvent.message_id, cast(MessageEvent.id, String))
    for chunk in _chunks(emails):
        query = (
            select(MessageEvent.email, func.count(func.distinct(which)))
            .where(
                MessageEvent.project_id == project_id,
                MessageEvent.email.in_(chunk),
                MessageEvent.type == "bounced",
                MessageEvent.bounce_type == "soft",
                MessageEvent.occurred_at >= since,
            )
            .group_by(MessageEvent.email)
        )
        counted.update({email: int(n) for email, n in session.execute(query)})
    return counted


def unsubscribe_groups(
    session: Session,
    project_id: str,
    choices: Sequence[tuple[str, str, str | None]],
    when: datetime,
) -> None:
    """Record ``(email, group, message_id)`` choices as unsubscribed from those groups
    (created, or an earlier choice replaced): one upsert."""
    if not choices:
        return
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows = {
        (email, group): {
            "project_id": project_id, "email": email, "group_name": group, "subscribed": False,
            "message_id": message_id, "updated_at": when,
        }
        for email, group, message_id in choices
    }  # fmt: skip
    statement = insert_(Subscription)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["project_id", "email", "group_name"],
            set_={
                "subscribed": statement.excluded.subscribed,
                "message_id": statement.excluded.message_id,
                "updated_at": statement.excluded.updated_at,
            },
        ),
        list(rows.values()),
    )


def erase(
    session: Session,
    project_id: str,
    profile_ids: Collection[str],
    addresses: Iterable[str],
) -> int:
    """Scrub an erased person's feedback: the rows of ``profile_ids`` and those about any of
    ``addresses`` in the project lose the address, the reporter's words and the link (type,
    times and ids stay, for statistics); their per-group choices are deleted. How many
    feedback rows were scrubbed."""
    targets: list[ColumnElement[bool]] = []
    if profile_ids:
        targets.append(MessageEvent.profile_id.in_(list(profile_ids)))
    emails = sorted({a.strip().lower() for a in addresses} | set(addresses))
    if emails:
        targets.append(MessageEvent.email.in_(emails))
    if not targets:
        return 0
    result = session.execute(
        update(MessageEvent)
        .where(
            MessageEvent.project_id == project_id,
            or_(*targets),
            MessageEvent.email != ERASED_ADDRESS,
        )
        .values(email=ERASED_ADDRESS, reason=None, url=None),
        execution_options={"synchronize_session": False},
    )
    if emails:
        session.execute(
            delete(Subscription).where(
                and_(Subscription.project_id == project_id, Subscription.email.in_(emails))
            ),
            execution_options={"synchronize_session": False},
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
