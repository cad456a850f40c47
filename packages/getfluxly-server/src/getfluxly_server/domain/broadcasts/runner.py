"""The broadcast runner: starts scheduled broadcasts when their ``send_at`` comes, and records
sending broadcasts' messages in the ledger a slice at a time, as their rate allows.

Each pass takes every broadcast that is sending, or scheduled and due by the engine's clock
(so one due while the server was down starts at the first pass after it is back), and for
each, in one transaction holding its row (PostgreSQL ``SKIP LOCKED``: runners of several
worker processes share the broadcasts without waiting for each other):

1. a scheduled one begins (:func:`~.service.begin`: the audience snapshotted);
2. up to ``slice_size`` next members of the audience are recorded with
   :func:`~getfluxly_server.domain.messages.enqueue_many` (origin ``broadcast``, marketing,
   claimed after transactional and automation mail), as many as the rate's bucket pays for
   and as the window allows: no more than ``window`` of the broadcast's messages pending at
   once, so a pause has little to hold and the ledger fills as fast as workers empty it;
3. the audience's cursor (``next_position``) moves past them in the same transaction: a
   crash before the commit records nobody, after it nobody again;
4. a broadcast whose audience is all recorded and has no message pending becomes ``sent``.

A broadcast the runner cannot go on with (its template deleted, its provider gone) is paused
with ``last_error`` saying why; resuming it after the fix goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from getfluxly_server.domain import identity
from getfluxly_server.domain.broadcasts import pace, service
from getfluxly_server.domain.clock import SYSTEM, Clock
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.messages import (
    BulkRecipient,
    Content,
    Source,
    broadcast_key,
    enqueue_many,
)
from getfluxly_server.storage import broadcasts as store
from getfluxly_server.storage import erasures, jobs
from getfluxly_server.storage import profiles as profile_store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import Broadcast, BroadcastStatus

log = logging.getLogger("getfluxly.broadcasts")

#: Most of a broadcast's messages pending at once (see the module docstring).
DEFAULT_WINDOW = 5_000
#: Most members recorded in one transaction.
DEFAULT_SLICE = 2_000


def advance(
    session: Session,
    broadcast_id: str,
    clock: Clock = SYSTEM,
    *,
    window: int = DEFAULT_WINDOW,
    slice_size: int = DEFAULT_SLICE,
) -> int:
    """One step of one broadcast in the caller's transaction (see the module docstring):
    how much it did (members handled, plus one for a change of status); 0 when it had
    nothing to do or another runner holds it."""
    broadcast = store.take(session, broadcast_id)
    if broadcast is None:
        return 0
    moment = clock.now()
    done = 0
    if broadcast.status == BroadcastStatus.SCHEDULED:
        if broadcast.send_at is not None and broadcast.send_at > moment:
            return 0
        try:
            service.begin(session, broadcast, moment)
        except DomainError as exc:
            _give_up(session, broadcast, moment, exc)
            return 1
        done = 1
    if broadcast.status != BroadcastStatus.SENDING:
        return done
    pending = store.pending(session, broadcast.id)
    remaining = broadcast.targeted - broadcast.next_position
    if remaining <= 0:
        if pending == 0:
            broadcast.status = BroadcastStatus.SENT.value
            broadcast.finished_at = broadcast.updated_at = moment
            log.info("broadcast %s sent", broadcast.id)
            return done + 1
        return done
    n = min(remaining, slice_size, window - pending)
    tokens = None
    if broadcast.rate_per_minute is not None:
        tokens = pace.refill(
            broadcast.rate_per_minute, broadcast.rate_tokens, broadcast.rate_at, moment
        )
        n = min(n, pace.allowance(tokens))
    if n <= 0:
        return done
    try:
        recorded = _record(session, broadcast, n)
    except DomainError as exc:
        _give_up(session, broadcast, moment, exc)
        return done + 1
    if tokens is not None:
        broadcast.rate_tokens = tokens - n
        broadcast.rate_at = moment
    broadcast.updated_at = moment
    return done + recorded


def _record(session: Session, broadcast: Broadcast, n: int) -> int:
    """Record the messages of the next ``n`` members and move the cursor past them."""
    start = broadcast.next_position
    members = store.members(session, broadcast.id, start, n)
    erasing = {p for e in erasures.pending(session, broadcast.project_id) for p in e.profile_ids}
    recipients: list[BulkRecipient] = []
    skipped = n - len(members)  # (a profile gone with its row: none today)
    for member in members:
        profile_id, email = member.profile_id, member.email
        if member.merged_into is not None:  # merged since it entered the segment
            profile = profile_store.by_id(session, profile_id)
            survivor = identity.live(session, profile) if profile is not None else None
            if survivor is None or survivor.erased_at is not None:
                skipped += 1
                continue
            profile_id, email = survivor.id, survivor.traits.get("email")
        if member.erased or profile_id in erasing or not isinstance(email, str) or not email:
            skipped += 1
            continue
        recipients.append(
            BulkRecipient(email, broadcast_key(broadcast.id, profile_id), profile_id=profile_id)
        )
    result = enqueue_many(
        session,
        broadcast.project_id,
        recipients,
        Content(template_id=broadcast.template_id),
        Source(
            origin="broadcast",
            broadcast_id=broadcast.id,
            provider_id=broadcast.provider_id,
            transactional=False,
        ),
    )
    # Invalid addresses and a second member that is the same person (a merge) get no message.
    broadcast.skipped += skipped + len(result.invalid) + result.duplicates
    broadcast.next_position = start + n
    return n


def _give_up(session: Session, broadcast: Broadcast, moment: datetime, exc: DomainError) -> None:
    log.warning("broadcast %s paused: %s", broadcast.id, exc.detail)
    service.halt(session, broadcast, moment, reason=exc.detail)


class BroadcastRunner:
    """Runs :func:`advance` over the active broadcasts in a thread, until :meth:`stop`: a
    pass every ``busy_seconds`` while a broadcast is sending, else every ``poll_seconds``
    (or at once when a broadcast is started in this process, on SQLite).

    ``busy_seconds``: a full window holds seconds of sending, so looking twice a second
    keeps it full; each look reads the broadcast and counts its pending messages, which
    at ten a second per worker process cost the broadcast benchmark's workers 4 % of
    their CPU."""

    def __init__(
        self,
        db: Database,
        clock: Clock = SYSTEM,
        *,
        window: int = DEFAULT_WINDOW,
        slice_size: int = DEFAULT_SLICE,
        poll_seconds: float = 0.5,
        busy_seconds: float = 0.5,
    ) -> None:
        self.db = db
        self.clock = clock
        self.window = window
        self.slice_size = slice_size
        self.poll_seconds = poll_seconds
        self.busy_seconds = busy_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._unhook: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._stop.clear()
        self._unhook = jobs.on_local_enqueue(self.db, self._wake.set, [service.WAKE_KIND])
        self._thread = threading.Thread(target=self._loop, name="broadcasts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._unhook()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> int:
        """One pass over the active broadcasts: how much was done (see :func:`advance`)."""
        return self._pass()[0]

    def _pass(self) -> tuple[int, int]:
        """One pass: how much was done, and how many broadcasts were active."""
        moment = self.clock.now()
        with self.db.read() as session:
            ids: Sequence[str] = store.active(session, moment)
            worth = [i for i in ids if self._worth_a_step(session, i, moment)]
        done = 0
        for broadcast_id in worth:
            if self._stop.is_set():
                break
            with self.db.transaction() as session:
                done += advance(
                    session, broadcast_id, self.clock, window=self.window,
                    slice_size=self.slice_size,
                )  # fmt: skip
        return done, len(ids)

    def _worth_a_step(self, session: Session, broadcast_id: str, moment: datetime) -> bool:
        """Whether :func:`advance` would do something, read without the write lock (which
        SQLite's delivery workers need too): a scheduled broadcast (it is due), a rated one
        (its bucket refills), one whose window has room for half a slice or more, or one
        with every member recorded and nothing pending (it is sent)."""
        broadcast = store.get(session, broadcast_id)
        if broadcast is None:
            return False
        if broadcast.status != BroadcastStatus.SENDING or broadcast.rate_per_minute is not None:
            return True
        remaining = broadcast.targeted - broadcast.next_position
        pending = store.pending(session, broadcast_id)
        if remaining <= 0:
            return pending == 0
        return self.window - pending >= min(remaining, max(1, self.slice_size // 2))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                done, active = self._pass()
            except Exception:  # a broken database must not end the thread: log, back off
                log.exception("the broadcast runner could not advance its broadcasts")
                done, active = 0, 0
            if done:
                continue
            # Broadcasts waiting for their rate or window: look again soon.
            self._wake.wait(self.busy_seconds if active else self.poll_seconds)
