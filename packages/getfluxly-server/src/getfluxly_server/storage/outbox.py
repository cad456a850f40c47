"""The outbox: the message rows themselves are the delivery queue (no job per message).

A delivery worker claims a batch of due messages in one short transaction, marks each chunk
``sending`` in a committed transaction just before its bytes go out, and records the chunk's
outcomes in one transaction right after (set-based: ``executemany``). The state machine these
functions keep is described in :mod:`getfluxly_server.domain.delivery`.

``due_at`` is the column the claim filters on, through the partial index ``ix_messages_due``
(pending statuses only, ordered by ``priority`` first, so transactional mail is claimed before
an earlier broadcast's): it is when a queued or deferred message may next be attempted, and
while a worker holds a message it is the end of that worker's lease. So one index walk finds
both the messages that are due and those whose worker's lease ran out, and a held message is
invisible to other claimers until then.

PostgreSQL locks the chosen rows with ``FOR UPDATE SKIP LOCKED`` (claimers on any number of
machines take different rows without waiting for each other); SQLite's single writer, taken at
BEGIN (see db.py), serialises claims just as safely.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, Table, any_, bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from getfluxly_server.storage import jobs
from getfluxly_server.storage.models import (
    PENDING_SQL,
    EmailProvider,
    Message,
    MessageHistory,
    MessageStatus,
    Profile,
    Project,
    Template,
    now,
)

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_HISTORY: Table = MessageHistory.__table__  # type: ignore[assignment]

#: The wake-up kind of due messages, on the job queue's notification channel.
WAKE_KIND = "messages"
#: Statuses a claimed message may be in before its attempt (the worker holds it).
WAITING = (MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value)
#: What a lapsed ``sending`` lease leaves (the relay may have the message).
LAPSED_DETAIL = (
    "the worker sending this message stopped before the relay's answer was recorded; the "
    "relay may have accepted it, so it is not resent automatically (retry it by hand)"
)


@dataclass(frozen=True)
class ClaimedMessage:
    """A message a worker holds: what it needs to render and send it."""

    id: str
    project_id: str
    status: str
    to_email: str
    profile_id: str | None
    provider_id: str | None
    template_id: str | None
    template_version: int | None
    transactional: bool
    subject: str | None
    html: str | None
    text: str | None
    data: dict[str, Any]
    tags: dict[str, Any]
    idempotency_key: str | None
    attempts: int
    created_at: datetime
    erased_at: datetime | None
    #: Opens and clicks tracked (``domain/tracking``), and the subscription group, if any.
    tracking: bool = True
    subscription_group: str | None = None


@dataclass(frozen=True)
class Claim:
    """What one claim took: messages to attempt, and ids of messages whose ``sending`` lease
    ran out (recorded ``unknown`` in the same transaction)."""

    messages: list[ClaimedMessage]
    lapsed: list[str]


@dataclass(frozen=True)
class Verdict:
    """The recorded end of one attempt (or of a message never attempted).

    ``status``: sent, deferred, failed, suppressed or unknown. ``due_at``: when a deferred
    message may be attempted again (None otherwise). ``detail`` goes to the history row.
    """

    id: str
    status: str
    detail: str | None = None
    last_reply: str | None = None
    provider_message_id: str | None = None
    smtp_message_id: str | None = None
    due_at: datetime | None = None
    sent_at: datetime | None = None
    #: The subject as rendered, to replace the stored one (None keeps it).
    subject: str | None = None


_DUE = (
    select(Message.id, Message.status)
    .where(PENDING_SQL, Message.due_at <= bindparam("moment"))
    .order_by(Message.priority, Message.due_at)
    .limit(bindparam("n"))
    .with_for_update(skip_locked=True)
)

_COLUMNS = (
    Message.id, Message.project_id, Message.status, Message.to_email, Message.profile_id,
    Message.provider_id, Message.template_id, Message.template_version, Message.transactional,
    Message.subject, Message.html, Message.text_body, Message.data, Message.tags,
    Message.idempotency_key, Message.attempts, Message.created_at, Message.erased_at,
    Message.tracking, Message.subscription_group,
)  # fmt: skip

_TAKE_BASE = (
    update(Message)
    .values(
        locked_by=bindparam("worker"),
        lease_until=bindparam("until"),
        due_at=bindparam("until"),
        updated_at=bindparam("moment"),
    )
    .returning(*_COLUMNS)
)
_TAKE = _TAKE_BASE.where(Message.id.in_(bindparam("ids", expanding=True)))
#: PostgreSQL: the ids as one array parameter, so the statement's text is the same for any
#: number of them (an expanded IN list of up to 500 parameters is compiled by SQLAlchemy
#: and parsed by psycopg afresh for every count, and never prepared).
_TAKE_POSTGRES = _TAKE_BASE.where(Message.id == any_(bindparam("ids", type_=ARRAY(String))))

_LAPSE = (
    update(Message)
    .where(Message.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.UNKNOWN.value,
        due_at=None,
        lease_until=None,
        last_reply=LAPSED_DETAIL,
        updated_at=bindparam("moment"),
    )
)
# (locked_by stays: the worker that held it may still be alive, only slow, and its real
# outcome, when it comes, replaces ``unknown``; see record_outcomes.)


def wake(session: Session) -> None:
    """Wake idle delivery workers once this transaction commits (every process on
    PostgreSQL, this process on SQLite): whoever queues a message due now calls it, so it is
    picked up at once rather than at the next poll."""
    jobs.wake_workers(session, WAKE_KIND)


_ANY_DUE = select(Message.id).where(PENDING_SQL, Message.due_at <= bindparam("moment")).limit(1)


def any_due(session: Session) -> bool:
    """Whether :func:`claim` would find something now (a due message, or a lapsed lease)."""
    return session.execute(_ANY_DUE, {"moment": now()}).first() is not None


def claim(session: Session, worker: str, lease: timedelta, n: int) -> Claim:
    """Take up to ``n`` due messages for ``worker`` (oldest due first), leased until now +
    ``lease``; messages found ``sending`` with a lapsed lease become ``unknown`` (each with
    a history row) and are returned in ``lapsed``, not attempted."""
    moment = now()
    connection = session.connection()
    rows = connection.execute(_DUE, {"moment": moment, "n": n}).all()
    lapsed = [row.id for row in rows if row.status == MessageStatus.SENDING.value]
    waiting = [row.id for row in rows if row.status != MessageStatus.SENDING.value]
    if lapsed:
        connection.execute(_LAPSE, {"ids": lapsed, "moment": moment})
        _history(session, [(i, MessageStatus.UNKNOWN.value, LAPSED_DETAIL) for i in lapsed])
    messages: list[ClaimedMessage] = []
    if waiting:
        params = {"ids": waiting, "worker": worker, "until": moment + lease, "moment": moment}
        order = {message_id: index for index, message_id in enumerate(waiting)}
        take = _TAKE_POSTGRES if connection.dialect.name == "postgresql" else _TAKE
        messages = [ClaimedMessage(*row) for row in connection.execute(take, params)]
        messages.sort(key=lambda m: order[m.id])  # RETURNING has no order of its own
    return Claim(messages, lapsed)


_SENDING = (
    update(Message)
    .where(
        Message.id.in_(bindparam("ids", expanding=True)),
        Message.locked_by == bindparam("worker"),
        Message.status.in_(WAITING),
    )
    .values(
        status=MessageStatus.SENDING.value,
        attempts=Message.attempts + 1,
        lease_until=bindparam("until"),
        due_at=bindparam("until"),
        updated_at=bindparam("moment"),
    )
    .returning(Message.id)
)


def lock(session: Session, ids: Collection[str]) -> None:
    """Lock the messages' rows in id order (PostgreSQL; SQLite has one writer at a time):
    a worker does so before it records outcomes and marks a window ``sending``, as a pause
    or a cancel of a broadcast locks the rows it changes, so the two never deadlock."""
    if ids and session.get_bind().dialect.name == "postgresql":
        query = select(Message.id).where(Message.id.in_(sorted(ids)))
        session.execute(query.order_by(Message.id).with_for_update())


def start_sending(
    session: Session, worker: str, ids: Collection[str], lease: timedelta
) -> set[str]:
    """Mark the messages ``sending`` (one attempt more each) if ``worker`` still holds them;
    the ids it does hold. Commit before handing them to the relay: from then on a crash
    leaves them ``unknown``, never queued again behind the ledger's back."""
    if not ids:
        return set()
    moment = now()
    connection = session.connection()
    if connection.dialect.name == "sqlite":  # (every window of ten: below SQLAlchemy)
        until = _sqlite_time(moment + lease)
        sending = MessageStatus.SENDING.value
        values = (sending, until, until, _sqlite_time(moment), *ids, worker, *WAITING)
        statement = _sending_sqlite_statement(len(ids))
        return {row[0] for row in connection.exec_driver_sql(statement, values)}
    params = {"ids": list(ids), "worker": worker, "until": moment + lease, "moment": moment}
    return set(connection.execute(_SENDING, params).scalars())


@functools.lru_cache(maxsize=32)
def _sending_sqlite_statement(rows: int) -> str:
    """:data:`_SENDING` on SQLite (``?`` bound in order: ``sending``, the lease's end twice,
    the moment, the ids, the worker, the waiting statuses)."""
    # Only placeholders are joined into the text; every value is bound.
    ids = ", ".join(["?"] * rows)
    waiting = ", ".join(["?"] * len(WAITING))
    return (
        "UPDATE messages SET status = ?, attempts = attempts + 1, "  # noqa: S608
        f"lease_until = ?, due_at = ?, updated_at = ? WHERE id IN ({ids}) "
        f"AND locked_by = ? AND status IN ({waiting}) RETURNING id"
    )


def record_outcomes(
    session: Session,
    worker: str,
    verdicts: Sequence[Verdict],
    *,
    attempted: bool,
) -> list[str]:
    """Record ``verdicts`` for the messages ``worker`` still holds, each with a history row;
    the ids recorded. ``attempted``: the messages were marked ``sending`` (their outcome may
    also replace an ``unknown`` another worker recorded when this one's lease lapsed: this
    worker knows better); otherwise they are still queued or deferred (never attempted).

    Set-based: on PostgreSQL one UPDATE for the batch (rows as arrays) and one INSERT of
    the history rows; on SQLite one UPDATE of ``VALUES`` rows and one INSERT.
    """
    if not verdicts:
        return []
    states = (MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value) if attempted else WAITING
    moment = now()
    if session.get_bind().dialect.name == "postgresql":
        recorded = _finish_postgres(session, worker, verdicts, states, moment)
    else:
        recorded = _finish_sqlite(session, worker, verdicts, states, moment)
    mine = [v for v in verdicts if v.id in recorded]
    _history(session, [(v.id, v.status, v.detail) for v in mine], moment)
    return [v.id for v in mine]


#: PostgreSQL: the whole batch in one statement, its rows as arrays (one round trip; an
#: UPDATE executed once per row costs a round trip and a plan execution each).
_FINISH_POSTGRES = text(
    """
    UPDATE messages AS m
       SET status = v.status, last_reply = v.reply, provider_message_id = v.pmid,
           smtp_message_id = v.smid, due_at = v.due_at, sent_at = v.sent_at,
           subject = COALESCE(v.subject, m.subject),
           lease_until = NULL, locked_by = NULL, updated_at = :moment
      FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:replies AS text[]),
                  CAST(:pmids AS text[]), CAST(:smids AS text[]),
                  CAST(:dues AS timestamptz[]), CAST(:sents AS timestamptz[]),
                  CAST(:subjects AS text[]))
           AS v(id, status, reply, pmid, smid, due_at, sent_at, subject)
     WHERE m.id = v.id AND m.locked_by = :worker AND m.status = ANY(CAST(:states AS text[]))
    RETURNING m.id
    """
)


def _finish_postgres(
    session: Session,
    worker: str,
    verdicts: Sequence[Verdict],
    states: Sequence[str],
    moment: datetime,
) -> set[str]:
    params = {
        "ids": [v.id for v in verdicts], "statuses": [v.status for v in verdicts],
        "replies": [v.last_reply for v in verdicts],
        "pmids": [v.provider_message_id for v in verdicts],
        "smids": [v.smtp_message_id for v in verdicts], "dues": [v.due_at for v in verdicts],
        "sents": [v.sent_at for v in verdicts], "subjects": [v.subject for v in verdicts],
        "worker": worker, "states": list(states),
        "moment": moment,
    }  # fmt: skip
    return set(session.connection().execute(_FINISH_POSTGRES, params).scalars())


def _finish_sqlite(
    session: Session,
    worker: str,
    verdicts: Sequence[Verdict],
    states: Sequence[str],
    moment: datetime,
) -> set[str]:
    # As on PostgreSQL, one statement (UPDATE ... FROM VALUES ... RETURNING), written below
    # SQLAlchemy: a check and an UPDATE executed per row cost more than the writes (the
    # worker records every window of ten this way).
    values: list[Any] = [_sqlite_time(moment)]
    for v in verdicts:
        values += (
            v.id, v.status, v.last_reply, v.provider_message_id, v.smtp_message_id,
            _sqlite_time(v.due_at), _sqlite_time(v.sent_at), v.subject,
        )  # fmt: skip
    values += (worker, *states)
    statement = _finish_sqlite_statement(len(verdicts), len(states))
    return {row[0] for row in session.connection().exec_driver_sql(statement, tuple(values))}


@functools.lru_cache(maxsize=32)
def _finish_sqlite_statement(rows: int, states: int) -> str:
    """SQLite's :data:`_FINISH_POSTGRES`: the verdicts as ``VALUES`` rows (``?`` bound in
    order: the moment, the rows' eight fields each, the worker, the states)."""
    # Only placeholders are joined into the text; every value is bound.
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    allowed = ", ".join(["?"] * states)
    return (
        "UPDATE messages SET status = v.column2, last_reply = v.column3, "  # noqa: S608
        "provider_message_id = v.column4, smtp_message_id = v.column5, due_at = v.column6, "
        "sent_at = v.column7, subject = COALESCE(v.column8, messages.subject), "
        "lease_until = NULL, locked_by = NULL, updated_at = ? "
        f"FROM (VALUES {values}) AS v WHERE messages.id = v.column1 "
        f"AND messages.locked_by = ? AND messages.status IN ({allowed}) RETURNING messages.id"
    )


def _sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLAlchemy stores it on SQLite (UTC, no offset), so rows written below it
    read back, sort and compare like rows written through it."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_RELEASE = (
    update(Message)
    .where(
        Message.id.in_(bindparam("ids", expanding=True)),
        Message.locked_by == bindparam("worker"),
        Message.status.in_(WAITING),
    )
    .values(
        locked_by=None, lease_until=None, due_at=bindparam("due"), updated_at=bindparam("moment")
    )
)


def release(session: Session, worker: str, ids: Collection[str], due_at: datetime) -> None:
    """Hand held, unattempted messages back to the queue, due at ``due_at`` (a provider's
    rate limit said wait; the worker is stopping). No attempt is counted."""
    if ids:
        session.connection().execute(
            _RELEASE, {"ids": list(ids), "worker": worker, "due": due_at, "moment": now()}
        )


def extend(session: Session, worker: str, ids: Collection[str], lease: timedelta) -> None:
    """Renew the leases of the messages ``worker`` holds among ``ids`` (a slow relay).

    The rows are locked in id order and rows locked right now are skipped: the worker's own
    delivery threads lock their chunks meanwhile (marking them ``sending``, recording their
    outcomes), and an UPDATE over every held id, locking in no fixed order, deadlocked with
    them on PostgreSQL (seen by the broadcast benchmark). A skipped row is in a transaction
    that moves it on anyway; if not, the next renewal (well within the lease) reaches it."""
    if not ids:
        return
    until = now() + lease
    held = (
        select(Message.id)
        .where(
            Message.id.in_(sorted(ids)),
            Message.locked_by == worker,
            Message.status.in_((*WAITING, MessageStatus.SENDING.value)),
        )
        .order_by(Message.id)
        .with_for_update(skip_locked=True)
    )
    taken = list(session.scalars(held))
    if taken:
        session.execute(
            update(Message).where(Message.id.in_(taken)).values(lease_until=until, due_at=until)
        )


def record_and_start(
    session: Session,
    worker: str,
    unattempted: Sequence[Verdict],
    attempted: Sequence[Verdict],
    start: Collection[str],
    lease: timedelta,
) -> set[str]:
    """One delivery transaction's writes (the delivery loop's, once per window): lock every
    message named in id order (:func:`lock`), record the verdicts (:func:`record_outcomes`,
    never-attempted ones and attempted ones), then mark ``start`` ``sending``
    (:func:`start_sending`); the ids of ``start`` now ``sending``.

    On PostgreSQL the statements go down in one pipeline (psycopg's pipeline mode: one
    round trip for all of them, where each cost one), with constant texts and arrays for
    the ids, so psycopg prepares them once per connection and the server plans them once.
    """
    if not (unattempted or attempted or start):
        return set()
    if session.get_bind().dialect.name != "postgresql":
        lock(session, [*(v.id for v in (*unattempted, *attempted)), *start])
        if unattempted:
            record_outcomes(session, worker, unattempted, attempted=False)
        if attempted:
            record_outcomes(session, worker, attempted, attempted=True)
        return start_sending(session, worker, start, lease)
    moment = now()
    ids = sorted({*(v.id for v in (*unattempted, *attempted)), *start})
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.pipeline():
        raw.execute(_LOCK_PIPELINED, (ids,))
        for verdicts, states in ((unattempted, WAITING), (attempted, _ATTEMPTED)):
            if verdicts:
                raw.execute(_FINISH_PIPELINED, _finish_params(worker, verdicts, states, moment))
        marked = None
        if start:
            params = {"ids": list(start), "worker": worker, "until": moment + lease,
                      "moment": moment, "sending": MessageStatus.SENDING.value,
                      "waiting": list(WAITING)}  # fmt: skip
            marked = raw.execute(_SENDING_PIPELINED, params)
    return set() if marked is None else {row[0] for row in marked.fetchall()}


#: Statuses an attempted message may be recorded over (see :func:`record_outcomes`).
_ATTEMPTED = (MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value)

# The statements of record_and_start on PostgreSQL, for psycopg directly (``%(name)s``).
_LOCK_PIPELINED = "SELECT id FROM messages WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE"
_FINISH_PIPELINED = """
    WITH v AS (
        SELECT * FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(replies)s::text[],
                             %(pmids)s::text[], %(smids)s::text[], %(dues)s::timestamptz[],
                             %(sents)s::timestamptz[], %(subjects)s::text[],
                             %(details)s::text[])
             AS v(id, status, reply, pmid, smid, due_at, sent_at, subject, detail)
    ), done AS (
        UPDATE messages AS m
           SET status = v.status, last_reply = v.reply, provider_message_id = v.pmid,
               smtp_message_id = v.smid, due_at = v.due_at, sent_at = v.sent_at,
               subject = COALESCE(v.subject, m.subject),
               lease_until = NULL, locked_by = NULL, updated_at = %(moment)s
          FROM v
         WHERE m.id = v.id AND m.locked_by = %(worker)s AND m.status = ANY(%(states)s::text[])
        RETURNING m.id, v.status, v.detail
    )
    INSERT INTO message_history (message_id, status, at, detail)
    SELECT id, status, %(moment)s, detail FROM done
"""
_SENDING_PIPELINED = """
    UPDATE messages
       SET status = %(sending)s, attempts = attempts + 1, lease_until = %(until)s,
           due_at = %(until)s, updated_at = %(moment)s
     WHERE id = ANY(%(ids)s::text[]) AND locked_by = %(worker)s
       AND status = ANY(%(waiting)s::text[])
    RETURNING id
"""


def _finish_params(
    worker: str, verdicts: Sequence[Verdict], states: Sequence[str], moment: datetime
) -> dict[str, Any]:
    return {
        "ids": [v.id for v in verdicts], "statuses": [v.status for v in verdicts],
        "replies": [v.last_reply for v in verdicts],
        "pmids": [v.provider_message_id for v in verdicts],
        "smids": [v.smtp_message_id for v in verdicts], "dues": [v.due_at for v in verdicts],
        "sents": [v.sent_at for v in verdicts], "subjects": [v.subject for v in verdicts],
        "details": [v.detail for v in verdicts],
        "worker": worker, "states": list(states), "moment": moment,
    }  # fmt: skip


def _history(
    session: Session,
    entries: Iterable[tuple[str, str, str | None]],
    moment: datetime | None = None,
) -> None:
    at = moment or now()
    rows = list(entries)
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # one statement, as _FINISH_POSTGRES
        ids, statuses, details = (list(column) for column in zip(*rows, strict=True))
        params = {"ids": ids, "statuses": statuses, "details": details, "at": at}
        connection.execute(_HISTORY_POSTGRES, params)
    else:
        connection.execute(
            insert(_HISTORY),
            [{"message_id": i, "status": s, "at": at, "detail": d} for i, s, d in rows],
        )


_HISTORY_POSTGRES = text(
    """
    INSERT INTO message_history (message_id, status, at, detail)
    SELECT v.id, v.status, :at, v.detail
      FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:details AS text[]))
           AS v(id, status, detail)
    """
)


# What rendering needs, read in one query per kind for a whole batch.


def templates(session: Session, ids: Collection[str]) -> dict[str, Template]:
    if not ids:
        return {}
    return {t.id: t for t in session.scalars(select(Template).where(Template.id.in_(ids)))}


@dataclass(frozen=True)
class Recipient:
    """What rendering reads of a message's profile."""

    id: str
    traits: dict[str, Any]
    erased_at: datetime | None


def profiles(session: Session, ids: Collection[str]) -> dict[str, Recipient]:
    """The profiles' columns rendering reads (as rows: a batch of 500 loaded as ORM objects
    cost the worker more than the query)."""
    if not ids:
        return {}
    query = select(Profile.id, Profile.traits, Profile.erased_at)
    if session.get_bind().dialect.name == "postgresql":  # (one text for any count: _TAKE)
        query = query.where(Profile.id == any_(literal_array(ids)))
    else:
        query = query.where(Profile.id.in_(ids))
    return {row[0]: Recipient(row[0], row[1], row[2]) for row in session.execute(query)}


def literal_array(ids: Collection[str]) -> Any:
    """``ids`` as one PostgreSQL ``text[]`` parameter."""
    return bindparam(None, list(ids), type_=ARRAY(String))


def projects(session: Session, ids: Collection[str]) -> dict[str, Project]:
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Project).where(Project.id.in_(ids)))}


def providers(session: Session, ids: Collection[str]) -> dict[str, EmailProvider]:
    if not ids:
        return {}
    query = select(EmailProvider).where(EmailProvider.id.in_(ids))
    return {p.id: p for p in session.scalars(query)}
