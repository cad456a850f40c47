"""The message ledger's front in the database: recording messages, reading them, retrying,
and scrubbing an erased person's messages. (Claiming and recording attempts is the delivery
workers' side, ``storage/outbox.py``.)

Messages are inserted set-based: one ``INSERT ... ON CONFLICT (project_id, idempotency_key)
DO NOTHING RETURNING id`` of many rows (per chunk on SQLite), so an origin
that runs twice (an automation step after a crash, a resumed broadcast) records each
message once and learns which rows were new.
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
    Connection,
    and_,
    bindparam,
    case,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from getfluxly_server.storage import outbox
from getfluxly_server.storage.models import (
    Base,
    EmailProvider,
    Message,
    MessageHistory,
    MessageStatus,
    Profile,
    Project,
)
from getfluxly_server.storage.paging import newest_first

#: Statuses a worker may still act on: what an erasure stops.
PENDING = (MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value, MessageStatus.SENDING.value)
#: What a message's recipient reads as once it is erased.
ERASED_ADDRESS = "erased"

#: The columns a recorded message fills, in the order inserted (``domain.messages.enqueue``
#: makes rows with exactly these keys).
COLUMNS = (
    "id", "project_id", "status", "to_email", "profile_id", "provider_id", "template_id",
    "template_version", "transactional", "subject", "html", "text", "data", "tags", "origin",
    "priority", "automation_id", "step_id", "broadcast_id", "idempotency_key", "attempts", "due_at",
    "created_at", "updated_at", "tracking", "subscription_group",
)  # fmt: skip
_JSON = frozenset({"data", "tags"})
_TIMES = frozenset({"due_at", "created_at", "updated_at"})
_HISTORY = ("message_id", "status", "at", "detail")
#: Rows per SQLite statement, within its 32,766 parameters.
SQLITE_ROWS = 32_766 // len(COLUMNS)


def insert_many(
    session: Session, rows: Sequence[dict[str, Any]], history: dict[str, tuple[str, str | None]]
) -> list[str]:
    """Insert ``rows`` (dicts with exactly the keys of :data:`COLUMNS`), skipping any whose
    ``(project_id, idempotency_key)`` is taken; the ids of the rows inserted, in order.

    ``history`` maps a row's id to its first history entry ``(status, detail)``, written for
    the inserted rows only (at the row's ``created_at``).

    Below SQLAlchemy, as ``storage.events.insert_rows`` does for events (binding 23 columns
    of thousands of rows through its type processors costs more than the insert):
    PostgreSQL gets the rows as one JSON parameter unpacked by ``json_to_recordset`` (one
    prepared statement whatever the count), SQLite multi-row ``VALUES`` of up to
    :data:`SQLITE_ROWS` rows.
    """
    if not rows:
        return []
    session.flush()
    connection = session.connection()
    new = _insert(connection, "messages", COLUMNS, rows, "ON CONFLICT (project_id, "
                  "idempotency_key) DO NOTHING RETURNING id")  # fmt: skip
    inserted = [row["id"] for row in rows if row["id"] in new]
    if inserted:
        created = {row["id"]: row["created_at"] for row in rows}
        entries = [
            {
                "message_id": message_id,
                "status": history[message_id][0],
                "at": created[message_id],
                "detail": history[message_id][1],
            }
            for message_id in inserted
        ]
        _insert(connection, "message_history", _HISTORY, entries, "")
        queued = MessageStatus.QUEUED.value
        if any(history[message_id][0] == queued for message_id in inserted):
            outbox.wake(session)  # delivery workers pick them up at commit, not next poll
    return inserted


def _insert(
    connection: Connection,
    table: str,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    tail: str,
) -> set[str]:
    """INSERT ``rows`` into ``table`` followed by ``tail``; the first column of every row
    the statement returns (none without RETURNING)."""
    returned: set[str] = set()
    dialect = connection.dialect
    if dialect.name == "postgresql":
        statement = _statement(dialect, table, columns, 0, tail)
        # orjson writes datetimes as ISO 8601 with their offset, natively.
        result = connection.exec_driver_sql(statement, {"rows": orjson.dumps(rows).decode()})
        return {row[0] for row in result} if tail else returned
    for start in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[start : start + SQLITE_ROWS]
        values = tuple(itertools.chain.from_iterable(_sqlite_values(row, columns) for row in chunk))
        statement = _statement(dialect, table, columns, len(chunk), tail)
        result = connection.exec_driver_sql(statement, values)
        if tail:
            returned |= {row[0] for row in result}
    return returned


def _sqlite_values(row: dict[str, Any], columns: tuple[str, ...]) -> Iterator[Any]:
    """A row as SQLAlchemy binds it on SQLite: JSON as text, times in its own format (so
    these rows read back, sort and compare like rows written through the ORM)."""
    for column in columns:
        value = row[column]
        if column in _JSON:
            yield orjson.dumps(value).decode()
        elif (column in _TIMES or column == "at") and value is not None:
            yield value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        else:
            yield value


@functools.lru_cache(maxsize=64)
def _statement(dialect: Dialect, table: str, columns: tuple[str, ...], rows: int, tail: str) -> str:
    """The INSERT of ``rows`` rows (SQLite) or of a JSON array of any length (PostgreSQL)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if dialect.name == "postgresql":
        types = Base.metadata.tables[table].c
        definitions = ", ".join(
            f"{quote(c)} {types[c].type.compile(dialect=dialect)}" for c in columns
        )
        # WITH ORDINALITY + ORDER BY: rows go in (and history ids are handed out) in order.
        source = (
            f"SELECT {names} FROM ROWS FROM (json_to_recordset(CAST(%(rows)s AS json)) "  # noqa: S608
            f"AS ({definitions})) WITH ORDINALITY AS r({names}, ord) ORDER BY ord"
        )
    else:
        row = f"({', '.join('?' for _ in columns)})"
        source = "VALUES " + ", ".join(row for _ in range(rows))
    # Only identifiers from the tables' own metadata (quoted) go into the text; rows are bound.
    return f"INSERT INTO {quote(table)} ({names}) {source} {tail}".rstrip()


def by_keys(session: Session, project_id: str, keys: Collection[str]) -> Sequence[Message]:
    """The project's messages recorded under any of ``keys`` (idempotency keys)."""
    if not keys:
        return []
    query = select(Message).where(
        Message.project_id == project_id, Message.idempotency_key.in_(list(keys))
    )
    return session.scalars(query).all()


def release_key(session: Session, project_id: str, key: str) -> None:
    """Free an idempotency key whose replay window has passed: the message that had it
    keeps everything else, so the key may record a new message."""
    session.execute(
        update(Message)
        .where(Message.project_id == project_id, Message.idempotency_key == key)
        .values(idempotency_key=None),
        execution_options={"synchronize_session": False},
    )


def as_message(row: dict[str, Any]) -> Message:
    """A row of :data:`COLUMNS` as a (transient) Message object, as the database now holds
    it: columns not in the row are None until a worker fills them."""
    fields = {("text_body" if name == "text" else name): value for name, value in row.items()}
    return Message(**fields)


def get(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


def in_workspace(session: Session, workspace_id: str, message_id: str) -> Message | None:
    """The message if its project belongs to ``workspace_id``."""
    query = (
        select(Message)
        .join(Project, Project.id == Message.project_id)
        .where(Message.id == message_id, Project.workspace_id == workspace_id)
    )
    return session.scalars(query).first()


def history(session: Session, message_id: str) -> Sequence[MessageHistory]:
    """A message's history, oldest first."""
    query = (
        select(MessageHistory)
        .where(MessageHistory.message_id == message_id)
        .order_by(MessageHistory.id)
    )
    return session.scalars(query).all()


@dataclass(frozen=True)
class Filters:
    """What a list is narrowed to (None: any)."""

    status: str | None = None
    to_email: str | None = None
    automation_id: str | None = None
    broadcast_id: str | None = None
    profile_id: str | None = None


def page(
    session: Session,
    project_id: str,
    filters: Filters,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[Message]:
    """Up to ``limit`` of the project's messages, newest first (``created_at``, then ``id``,
    both descending: a total order, so pages never repeat or skip rows that share a
    ``created_at``), starting after the ``(created_at, id)`` of the previous page's last."""
    query = select(Message).where(Message.project_id == project_id)
    for column, value in (
        (Message.status, filters.status),
        (Message.to_email, filters.to_email),
        (Message.automation_id, filters.automation_id),
        (Message.broadcast_id, filters.broadcast_id),
        (Message.profile_id, filters.profile_id),
    ):
        if value is not None:
            query = query.where(column == value)
    query = newest_first(query, Message.created_at, Message.id, limit=limit, before=after)
    return session.scalars(query).all()


def requeue(
    session: Session, message_id: str, statuses: Collection[str], when: datetime, *, detail: str
) -> bool:
    """Put the message back in the queue, due ``when``, if its status is one of
    ``statuses`` and it is not erased (one conditional UPDATE: two concurrent retries
    re-queue it once); adds the history entry (``queued``, ``detail``). True if it was
    re-queued."""
    result = session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.status.in_(list(statuses)),
            Message.erased_at.is_(None),
        )
        .values(
            status=MessageStatus.QUEUED.value,
            due_at=when,
            lease_until=None,
            locked_by=None,
            updated_at=when,
        ),
        execution_options={"synchronize_session": False},
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    outbox.wake(session)
    session.execute(
        insert(MessageHistory).values(
            message_id=message_id,
            status=MessageStatus.QUEUED.value,
            at=when,
            detail=detail,
        )
    )
    session.expire_all()
    return True


def move_to(session: Session, loser_ids: Collection[str], survivor_id: str) -> None:
    """Give the messages of merged profiles to the profile they merged into."""
    session.execute(
        update(Message)
        .where(Message.profile_id.in_(list(loser_ids)))
        .values(profile_id=survivor_id),
        execution_options={"synchronize_session": False},
    )


def lock_profile(session: Session, profile_id: str) -> Profile | None:
    """The profile, read again under a share lock held to the end of the transaction
    (PostgreSQL; SQLite's write lock already serialises writers): an erasure's UPDATE of
    the profile waits for this transaction, whose message its scrub then sees; or this read
    waits for the erasure and sees ``erased_at``."""
    query = (
        select(Profile)
        .where(Profile.id == profile_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def provider_in_project(session: Session, project_id: str, provider_id: str) -> str | None:
    """``provider_id`` if it is one of the project's providers."""
    query = select(EmailProvider.id).where(
        EmailProvider.id == provider_id, EmailProvider.project_id == project_id
    )
    return session.scalars(query).first()


_DEFAULT_PROVIDER = (
    select(EmailProvider.id)
    .where(EmailProvider.project_id == bindparam("project_id"))
    .order_by(
        case(
            (
                EmailProvider.id
                == select(Project.default_provider_id)
                .where(Project.id == bindparam("project_id"))
                .scalar_subquery(),
                0,
            ),
            else_=1,
        ),
        EmailProvider.created_at,
        EmailProvider.id,
    )
    .limit(1)
)


def default_provider(session: Session, project_id: str) -> str | None:
    """The project's default provider if it still has it, else its first (by creation);
    None if it has no provider. One query (built once: it runs on every send)."""
    return session.scalars(_DEFAULT_PROVIDER, {"project_id": project_id}).first()


def erase(
    session: Session,
    project_id: str,
    profile_ids: Collection[str],
    addresses: Iterable[str],
    when: datetime,
    *,
    pending_detail: str,
) -> int:
    """Scrub the messages of an erased person: those of ``profile_ids``, and those sent to
    any of ``addresses`` (as stored) in the project. Set-based, four statements whatever
    the count.

    A message still pending is ``failed`` first (history entry ``pending_detail``), so no
    worker sends it. Then the recipient becomes :data:`ERASED_ADDRESS`; subject, bodies,
    data, tags and the relay's last reply are cleared; history details are cleared (they
    can quote the relay, which names the address); ``erased_at`` is set. Status, counts,
    ids and times stay, for statistics. Returns how many messages were scrubbed.
    """
    session.flush()
    plain = {"synchronize_session": False}
    targets: list[ColumnElement[bool]] = []
    if profile_ids:
        targets.append(Message.profile_id.in_(list(profile_ids)))
    emails = sorted(set(addresses))
    if emails:
        targets.append(and_(Message.project_id == project_id, Message.to_email.in_(emails)))
    if not targets:
        return 0
    mine = and_(Message.project_id == project_id, or_(*targets), Message.erased_at.is_(None))
    ids = select(Message.id).where(mine).scalar_subquery()
    # History first: the statements below change what ``mine`` matches.
    session.execute(
        update(MessageHistory).where(MessageHistory.message_id.in_(ids)).values(detail=None),
        execution_options=plain,
    )
    session.execute(
        insert(MessageHistory).from_select(
            ["message_id", "status", "at", "detail"],
            select(
                Message.id,
                literal(MessageStatus.FAILED.value, MessageHistory.status.type),
                literal(when, MessageHistory.at.type),
                literal(pending_detail, MessageHistory.detail.type),
            ).where(mine, Message.status.in_(PENDING)),
        ),
        execution_options=plain,
    )
    session.execute(
        update(Message)
        .where(mine, Message.status.in_(PENDING))
        .values(status=MessageStatus.FAILED.value, due_at=None, lease_until=None, locked_by=None),
        execution_options=plain,
    )
    result = session.execute(
        update(Message)
        .where(mine)
        .values(
            to_email=ERASED_ADDRESS,
            subject=None,
            html=None,
            text_body=None,
            data={},
            tags={},
            last_reply=None,
            erased_at=when,
            updated_at=when,
        ),
        execution_options=plain,
    )
    session.expire_all()
    return int(result.rowcount)  # type: ignore[attr-defined]
