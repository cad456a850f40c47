"""Events, profiles, identities and idempotent responses in the database."""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    String,
    Table,
    case,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from getfluxly_server.storage.barriers import Barrier
from getfluxly_server.storage.models import (
    Event,
    IdempotentResponse,
    Identity,
    Profile,
    new_id,
    now,
)


def insert_events(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert events (rows as ``domain.ingest.validate`` makes them), skipping any whose
    (project, message_id) is already stored; returns how many were new.

    On PostgreSQL the transaction first takes the inserts' shared lock (held until it ends),
    which :func:`settle_inserts` waits for."""
    if not rows:
        return 0
    connection = session.connection()
    INSERTS.passes(connection)
    return insert_rows(connection, Event.__table__, rows)  # type: ignore[arg-type]


#: The barrier event inserts pass and event processing settles (storage/barriers.py).
INSERTS = Barrier.named(b"events")


def settle_inserts(session: Session) -> None:
    """Wait until every event insert under way on PostgreSQL has committed or rolled back
    (nothing on SQLite: a writer there holds the only write lock), so that the caller's
    next statement sees them all.

    Event processing (``domain.identity``) calls it after taking the project's lock and
    before reading the unprocessed events. Without it, an insert whose transaction asked
    for processing while a processing job was still queued (``enqueue_once``: one job
    serves every request) could commit just after that job read the events, and wait for
    the next event to be processed; and events inserted by transactions still open could
    be processed after later ones. Inserts that start meanwhile wait a moment (behind this
    lock) and no longer: their own processing job is queued when they commit, as the job
    running now is no longer waiting."""
    INSERTS.settle(session)


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """:func:`insert_events` on any table shaped like ``events`` (the benchmark's storage
    limit runs this very code on a copy).

    No per-row, per-column work in SQLAlchemy (binding 12 columns of 1,000 rows through its
    type processors costs several times the insert itself). PostgreSQL: the rows travel as
    one JSON parameter unpacked by ``json_to_recordset``, so the statement is the same for
    every batch (prepared once) and the database parses the rows in C. SQLite: multi-row
    ``INSERT ... VALUES`` of up to SQLITE_ROWS rows, values made here in one pass; one
    statement step per chunk rather than per row also means one release of the GIL per
    chunk, where a per-row ``executemany`` hands the GIL to the event loop and back for
    every row.
    """
    if not rows:
        return 0
    if connection.dialect.name == "postgresql":
        statement = _insert_statement(table, connection.dialect, 0)
        # orjson writes datetimes as ISO 8601 with their offset, natively.
        result = connection.exec_driver_sql(statement, {"rows": orjson.dumps(rows).decode()})
        return int(result.rowcount)
    new = 0
    for start in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[start : start + SQLITE_ROWS]
        values = tuple(itertools.chain.from_iterable(_sqlite_values(row) for row in chunk))
        statement = _insert_statement(table, connection.dialect, len(chunk))
        new += int(connection.exec_driver_sql(statement, values).rowcount)
    return new


#: The columns a validated event fills (``domain.ingest.validate``), in the order inserted.
ROW_COLUMNS = (
    "project_id", "message_id", "type", "name", "anonymous_id", "external_id", "user_id",
    "properties", "traits", "context", "timestamp", "received_at",
)  # fmt: skip


def _sqlite_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row as SQLAlchemy would bind it on SQLite, in ROW_COLUMNS order: JSON columns as
    JSON text, times as :func:`_sqlite_time` writes them."""
    dumps = orjson.dumps
    return (
        row["project_id"], row["message_id"], row["type"], row["name"], row["anonymous_id"],
        row["external_id"], row["user_id"], dumps(row["properties"]).decode(),
        dumps(row["traits"]).decode(), dumps(row["context"]).decode(),
        _sqlite_time(row["timestamp"]), _sqlite_time(row["received_at"]),
    )  # fmt: skip


def _sqlite_time(moment: datetime) -> str:
    """UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``, SQLAlchemy's SQLite format, so these rows read
    back, sort and compare exactly like rows written through the ORM."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


#: Rows per SQLite statement: 12 parameters each, within SQLite's 32,766 (999 before 3.32).
SQLITE_ROWS = 1_000 if sqlite3.sqlite_version_info >= (3, 32) else 999 // len(ROW_COLUMNS)


@functools.lru_cache(maxsize=128)  # a statement per row count: bounded (up to 30 KB each)
def _insert_statement(table: Table, dialect: Dialect, rows: int) -> str:
    """The INSERT for ``rows`` rows (SQLite) or any number of them (PostgreSQL: 0)."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in ROW_COLUMNS)
    if dialect.name == "postgresql":
        definitions = ", ".join(
            f"{quote(c)} {table.c[c].type.compile(dialect=dialect)}" for c in ROW_COLUMNS
        )
        # WITH ORDINALITY + ORDER BY: ids are handed out in the order the events came.
        source = (
            f"SELECT {names} FROM ROWS FROM (json_to_recordset(CAST(%(rows)s AS json)) "  # noqa: S608
            f"AS ({definitions})) WITH ORDINALITY AS r({names}, ord) ORDER BY ord"
        )
    else:
        row = f"({', '.join('?' for _ in ROW_COLUMNS)})"
        source = "VALUES " + ", ".join(row for _ in range(rows))
    # Only identifiers from the table's own metadata (quoted) go into the text; rows are bound.
    return (
        f"INSERT INTO {quote(table.name)} ({names}) {source} "
        "ON CONFLICT (project_id, message_id) DO NOTHING"
    )


def record_response(
    session: Session,
    project_id: str,
    key_kind: str,
    key: str,
    body_hash: str,
    since: datetime,
    status: int,
    body: dict[str, Any],
) -> IdempotentResponse | None:
    """Record ``(status, body)`` as the answer to an idempotency key (of a kind of API key,
    for a request body whose SHA-256 is ``body_hash``), unless an answer recorded at or
    after ``since`` exists: then that one is returned, for the caller to replay (or to
    refuse, when its ``body_hash`` differs).

    The record is an INSERT in the caller's transaction: a concurrent request with the same
    key waits on it (PostgreSQL's unique index; SQLite's write lock) until this transaction
    commits, then finds this answer instead of doing the work a second time. An answer older
    than ``since`` has expired and is replaced.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {
        "project_id": project_id, "key_kind": key_kind, "key": key, "body_hash": body_hash,
        "status": status, "body": body, "created_at": now(),
    }  # fmt: skip
    recorded = (
        session.connection()
        .execute(
            insert(IdempotentResponse)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["project_id", "key_kind", "key"])
            .returning(IdempotentResponse.key)
        )
        .first()
    )
    if recorded is not None:
        return None
    row = session.get(IdempotentResponse, (project_id, key_kind, key), with_for_update=True)
    assert row is not None, "a conflicting idempotency row cannot vanish under FOR UPDATE"
    if row.created_at >= since:
        return row
    # Expired: taken over.
    row.body_hash, row.status, row.body, row.created_at = body_hash, status, body, now()
    return None


def unprocessed(session: Session, project_id: str, limit: int) -> Sequence[Event]:
    query = (
        select(Event)
        .where(Event.project_id == project_id, Event.processed_at.is_(None))
        .order_by(Event.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def identities_for(
    session: Session, project_id: str, pairs: list[tuple[str, str]]
) -> Sequence[Identity]:
    if not pairs:
        return []
    conditions = [(Identity.kind == kind) & (Identity.value == value) for kind, value in pairs]
    return session.scalars(
        select(Identity).where(Identity.project_id == project_id, or_(*conditions))
    ).all()


def owners(
    session: Session, project_id: str, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], Profile]:
    """The profile each (kind, value) identity of ``pairs`` belongs to, for those stored: one
    query per kind, the profiles loaded with them (into the session, so later lookups by id
    cost no query)."""
    values: dict[str, set[str]] = {}
    for kind, value in pairs:
        values.setdefault(kind, set()).add(value)
    found: dict[tuple[str, str], Profile] = {}
    for kind, wanted in values.items():
        query = (
            select(Identity.value, Profile)
            .join(Profile, Profile.id == Identity.profile_id)
            .where(
                Identity.project_id == project_id,
                Identity.kind == kind,
                Identity.value.in_(sorted(wanted)),
            )
        )
        for value, profile in session.execute(query):
            found[kind, value] = profile
    return found


def new_profile(session: Session, project_id: str, created_at: datetime) -> Profile:
    profile = Profile(
        id=new_id("prf"),
        project_id=project_id,
        traits={},
        created_at=created_at,
        updated_at=created_at,
    )
    session.add(profile)
    session.flush()
    return profile


def add_identity(session: Session, project_id: str, kind: str, value: str, profile_id: str) -> None:
    session.add(
        Identity(
            project_id=project_id, kind=kind, value=value, profile_id=profile_id, created_at=now()
        )
    )
    session.flush()


def move_to(session: Session, loser_ids: list[str], survivor_id: str) -> None:
    """Point the losers' identities and events at the survivor."""
    session.execute(
        update(Identity).where(Identity.profile_id.in_(loser_ids)).values(profile_id=survivor_id)
    )
    session.execute(
        update(Event).where(Event.profile_id.in_(loser_ids)).values(profile_id=survivor_id)
    )


def profile(session: Session, project_id: str, profile_id: str) -> Profile | None:
    row = session.get(Profile, profile_id)
    return row if row is not None and row.project_id == project_id else None


def profile_identities(session: Session, profile_id: str) -> Sequence[Identity]:
    return session.scalars(
        select(Identity).where(Identity.profile_id == profile_id).order_by(Identity.id)
    ).all()


def recent_events(session: Session, profile_id: str, limit: int) -> Sequence[Event]:
    query = (
        select(Event)
        .where(Event.profile_id == profile_id)
        .order_by(Event.timestamp.desc(), Event.id.desc())
    )
    return session.scalars(query.limit(limit)).all()


def count_events(session: Session, profile_ids: list[str]) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Event).where(Event.profile_id.in_(profile_ids))
        )
        or 0
    )


def search_profiles(
    session: Session,
    project_id: str,
    *,
    identity: str | None,
    trait: tuple[str, str] | None,
    limit: int,
) -> Sequence[Profile]:
    """Live profiles, newest first, by any of their ids and/or a trait's value (as text)."""
    query = select(Profile).where(Profile.project_id == project_id, Profile.merged_into.is_(None))
    if trait is not None:
        query = query.where(_trait_text(session, *trait[:1]) == trait[1])
    if identity is not None:
        ids = select(Identity.profile_id).where(
            Identity.project_id == project_id, Identity.value == identity
        )
        query = query.where((Profile.id == identity) | Profile.id.in_(ids))
    return session.scalars(query.order_by(Profile.created_at.desc()).limit(limit)).all()


def _trait_text(session: Session, key: str) -> Any:
    """A trait's value as PostgreSQL's ``->>`` gives it: text, ``42``, ``true``, ``false``.

    SQLite's json_extract yields numbers and 1/0 for booleans, so spell those out the same
    way there; trait search then means the same on both databases.
    """
    if session.get_bind().dialect.name == "postgresql":
        return Profile.traits[key].as_string()
    path = '$."' + key.replace('"', "") + '"'
    kind = func.json_type(Profile.traits, path)
    return case(
        (kind == "true", "true"),
        (kind == "false", "false"),
        else_=cast(func.json_extract(Profile.traits, path), String),
    )
