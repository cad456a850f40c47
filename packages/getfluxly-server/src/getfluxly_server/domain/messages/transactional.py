"""``POST /v1/messages``: a transactional send, with the caller's ``Idempotency-Key``.

The same key within 24 hours answers the message first recorded for it and records nothing
more; the same key with a different request is ``idempotency_key_reused``. The first answer
is kept with ingest's idempotent responses (``storage.events.record_response``, its own
kind ``message``): a concurrent request with the same key waits for the first one's
transaction and then finds its message. After 24 hours the key is free again (the message
that had it keeps everything else).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.messages.enqueue import (
    DERIVED_PREFIXES,
    Enqueued,
    NewMessage,
    PreparedCache,
    enqueue,
)
from getfluxly_server.storage import events as responses
from getfluxly_server.storage import messages as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.group_commit import GroupCommit, writer_threads
from getfluxly_server.storage.models import Message, MessageHistory, new_id, now

REPLAY_WINDOW = timedelta(hours=24)
#: The kind under which message keys are kept among idempotent responses.
KEY_KIND = "message"
MAX_KEY = 255
#: Sends recorded per transaction by the API's writer (:func:`writer`) at most.
MAX_PER_COMMIT = 200


def check_key(key: str) -> str:
    """An ``Idempotency-Key`` as the API accepts it: 1-255 printable characters, not
    beginning with a derived key's prefix."""
    if not 0 < len(key) <= MAX_KEY or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1-{MAX_KEY} printable characters", field="Idempotency-Key"
        )
    if key.startswith(DERIVED_PREFIXES):
        raise ValidationFailed(
            f"Idempotency-Key may not begin with {' or '.join(DERIVED_PREFIXES)} "
            "(GetFluxly's own keys for automations and broadcasts)",
            field="Idempotency-Key",
        )
    return key


def send(
    session: Session,
    project_id: str,
    new: NewMessage,
    *,
    idempotency_key: str | None = None,
    request_hash: str = "",
    cache: PreparedCache | None = None,
) -> Enqueued:
    """Record a transactional message (``new.idempotency_key`` is ignored: the caller's key
    is ``idempotency_key``, its request's fingerprint ``request_hash``; ``cache`` as for
    ``enqueue``)."""
    if idempotency_key is None:
        return enqueue(session, project_id, _with_key(new, None), cache=cache)
    key = check_key(idempotency_key)
    message_id = new_id("msg")
    earlier = responses.record_response(
        session, project_id, KEY_KIND, key, request_hash, now() - REPLAY_WINDOW, 202,
        {"message_id": message_id},
    )  # fmt: skip
    if earlier is not None:
        if earlier.body_hash != request_hash:
            raise DomainError(
                "idempotency_key_reused",
                "This Idempotency-Key was used in the last 24 hours for a different request; "
                "send a new key for a new message (a retry must resend the same request)",
            )
        replayed = store.get(session, str(earlier.body.get("message_id")))
        if replayed is None or replayed.project_id != project_id:
            raise NotFound("message")
        return Enqueued(replayed, created=False)
    store.release_key(session, project_id, key)  # its last use, if any, is over 24 hours old
    return enqueue(session, project_id, _with_key(new, key), message_id=message_id, cache=cache)


def _with_key(new: NewMessage, key: str | None) -> NewMessage:
    return NewMessage(new.recipient, new.content, new.source, new.data, key)


@dataclass(frozen=True)
class SendRequest:
    """One ``POST /v1/messages``, validated, for :func:`writer`."""

    project_id: str
    new: NewMessage
    idempotency_key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True)
class Recorded:
    """What a send recorded (or found under its key): the message and its history."""

    message: Message
    history: Sequence[MessageHistory]


def send_all(session: Session, requests: Sequence[SendRequest]) -> list[Recorded | Exception]:
    """Record a group of sends in the caller's transaction, each in a savepoint of its own:
    a refused send (a :class:`DomainError`) undoes only its own writes (say, the idempotency
    key it had claimed) and is answered in its place."""
    answers: list[Recorded | Exception] = []
    # Concurrent sends mostly share a template and a provider: checked once per group. (A
    # refused send's savepoint may roll back after a check it added: checks only read.)
    cache: PreparedCache = {}
    for request in requests:
        savepoint = session.begin_nested()
        try:
            done = send(
                session, request.project_id, request.new,
                idempotency_key=request.idempotency_key, request_hash=request.request_hash,
                cache=cache,
            )  # fmt: skip
            history = done.history
            if history is None:
                history = store.history(session, done.message.id)
        except DomainError as refused:
            savepoint.rollback()
            answers.append(refused)
            continue
        savepoint.commit()
        answers.append(Recorded(done.message, list(history)))
    return answers


def writer(db: Database) -> GroupCommit[SendRequest, Recorded]:
    """The API's group commit for transactional sends (``storage.group_commit``): the sends
    of concurrent requests share a transaction (up to :data:`MAX_PER_COMMIT`), so the
    transaction's cost and, on SQLite, the wait for its single writer are paid once per
    group; each request is answered once its group has committed
    (``group_commit.writer_threads`` threads, as for ingest)."""
    return GroupCommit(
        db,
        send_all,
        name="message-writer",
        threads=writer_threads(db),
        max_weight=MAX_PER_COMMIT,
    )
