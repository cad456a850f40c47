"""The delivery loop: claim due messages, check, render, send in chunks, record outcomes.

Each of ``threads`` threads runs cycles: claim up to ``batch`` due messages (one
transaction), read what they refer to and render them (no write lock held), then per
provider, chunk after chunk of at most ``chunk`` messages: ask the send gate for the chunk,
then hand it to the provider's kept client (``deliver_many``: SMTP pipelines it down
FluxMail's warm pool) ``window`` messages at a time, each window marked ``sending`` in a
committed transaction just before it goes out (the transaction that also records the
outcomes of the window before it); the outcomes of a cycle's last window are recorded by
the transaction of the next claim (kept up to ``LINGER_SECONDS`` when nothing is due, so a
message arriving meanwhile shares it). A loop thread keeps one connection for its
transactions. A thread that
claimed nothing sleeps until woken (PostgreSQL ``LISTEN``, any process; SQLite, commits in
this process) or until ``poll_seconds`` pass. A renewer thread keeps the leases of held
messages alive while a slow relay answers.

Why windows: a worker killed mid-send leaves what it marked ``sending`` ``unknown`` (never
resent automatically: the relay may have it). Marking a whole chunk before its first byte
left up to threads x chunk messages ``unknown``, most of them never handed over. Now only
the window on the wire is ``sending`` at any moment, per thread: what is ``unknown`` after a
kill was handed to the relay (each of it went out, or was about to, down a pipelined
connection). Marking the next window while one is on the wire would hide the commit but
double what a kill leaves ``unknown``, half of it never sent (measured with the restart
test); the cost of the commit per window is measured by ``bench/deliver_messages.py``.

Locks: on PostgreSQL every transaction of a worker that writes messages it holds locks
their rows in id order first (``outbox.lock``), as a broadcast's pause or cancel does; two
orders deadlocked, and the worker's transaction, rolled back, lost the outcomes of the
window before (they lapsed to ``unknown``).

Stopping: no new chunk starts; messages claimed but not attempted are handed back at once
(due now), so another worker takes them without waiting for the lease.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import (
    BuildContext,
    DeliveryError,
    DeliveryResult,
    Outcome,
    OutgoingEmail,
    ProviderClient,
)
from getfluxly_server.delivery.clients import ClientCache
from getfluxly_server.domain.delivery import classify
from getfluxly_server.domain.delivery.compose import Composer, load
from getfluxly_server.domain.delivery.gate import LocalSendGate, ProviderLimits, SendGate
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.providers import draft_of
from getfluxly_server.domain.segments import sent as segment_sent
from getfluxly_server.domain.tracking import Links
from getfluxly_server.storage import jobs, outbox
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import EmailProvider, MessageStatus, now
from getfluxly_server.storage.outbox import ClaimedMessage, Verdict

log = logging.getLogger("getfluxly.delivery")

#: A rate limit asking to wait longer than this hands the messages back (due then) instead
#: of holding them and a thread.
MAX_GATE_SLEEP = 2.0
#: How long a loop thread keeps the outcomes of its last window when nothing is due, for the
#: claim of a message that comes meanwhile to record them (one write transaction instead of
#: two); after that they are recorded alone. They are the relay's answers already: a crash
#: meanwhile leaves those messages ``unknown`` (never resent), as one during the send does.
LINGER_SECONDS = 0.05

Items = list[tuple[ClaimedMessage, OutgoingEmail]]
SENT = MessageStatus.SENT.value


class Dispatcher:
    """Delivers due messages in ``threads`` threads until :meth:`stop` (see the module
    docstring). ``gate``: the providers' limits (default: this process's own,
    :class:`LocalSendGate`). ``clients``: the process's kept provider clients."""

    def __init__(
        self,
        db: Database,
        *,
        keyring: Keyring,
        build_context: BuildContext,
        clients: ClientCache | None = None,
        gate: SendGate | None = None,
        rules: classify.RetryRules | None = None,
        threads: int = 2,
        batch: int = 500,
        chunk: int = 50,
        window: int = 10,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        name: str | None = None,
        listen: bool = True,
        rng: random.Random | None = None,
        links: Links | None = None,
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.context = replace(build_context, keep_connections=True)
        self._own_clients = clients is None
        self.clients = clients if clients is not None else ClientCache()
        self.gate: SendGate = gate if gate is not None else LocalSendGate()
        self.rules = rules or classify.RetryRules()
        self.threads = threads
        self.batch = batch
        self.chunk = chunk
        #: Messages marked ``sending`` together, just before they go out (module docstring).
        self.window = max(1, min(window, chunk))
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.listen = listen and not db.is_sqlite
        base = name or f"{socket.gethostname()}:{os.getpid()}"
        #: What this dispatcher writes in ``locked_by`` (its own token: two dispatchers of one
        #: process never record each other's messages).
        self.id = f"{base}/d{secrets.token_hex(3)}"[:64]
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        # ``links``: the server's tracking and unsubscribe links (domain/tracking), put in
        # what is composed; None sends mail without them.
        self.composer = Composer(db, links=links)
        self._lock = threading.Lock()
        #: Per thread: whether it keeps a connection (``keep``), and the one it keeps.
        self._local = threading.local()
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unhook: Callable[[], None] = lambda: None

    # Life cycle.

    def start(self) -> None:
        if self.threads < 1:
            return
        self._stop.clear()
        # (SQLite only) Woken for due messages only: a wake-up for another loop's work would
        # only queue one more transaction for the write lock.
        self._unhook = jobs.on_local_enqueue(self.db, self._wake.set, [outbox.WAKE_KIND])
        if self.listen:
            self._spawn(self._listen, "delivery-listen")
        self._spawn(self._renew, "delivery-leases")
        for index in range(self.threads):
            self._spawn(self._loop, f"delivery-{index}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; chunks in flight finish and are recorded, the rest handed back."""
        self._stop.set()
        self._unhook()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        try:
            self.gate.close()
        except Exception:  # its slots come back when their leases lapse; stop goes on
            log.exception("could not give back the connection slots of %s", self.id)
        if self._own_clients:
            self.clients.close()

    def run_once(self) -> int:
        """One cycle in this thread (tests, tools): how many messages it claimed or found
        lapsed."""
        return self._cycle()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self) -> None:
        self._local.keep = True
        self._local.carried = []
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    claimed = self._cycle()
                except Exception:  # a broken database must not end the thread: log, back off
                    log.exception("delivery worker %s could not claim or record messages", self.id)
                    claimed = 0
                if claimed >= self.batch:
                    continue  # a full batch: more is likely due
                if self._local.carried:
                    # Outcomes to record: by the next claim, at once if something is due,
                    # else when a message comes within LINGER_SECONDS (it rides along).
                    if not self._due():
                        self._wake.wait(LINGER_SECONDS)
                    continue
                self._wake.wait(self.poll_seconds)
        finally:
            self._record_carried()
            connection: Connection | None = getattr(self._local, "connection", None)
            if connection is not None:
                self._local.connection = None
                connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A transaction of this delivery thread: on a connection the thread keeps (a loop
        thread), not one checked out of the pool each time, for the pool pings each
        connection it hands out (on PostgreSQL a round trip more per window); a connection
        the database dropped is replaced at the next transaction. Other callers
        (``run_once``) use the pool."""
        if not getattr(self._local, "keep", False):
            with self.db.transaction() as session:
                yield session
            return
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._local.connection = self.db.engine.connect()
        with self.db.transaction(connection) as session:
            yield session

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with jobs.listening(self.db) as notified:
                    self._wake.set()
                    while not self._stop.is_set():
                        if notified(timeout=1.0):
                            self._wake.set()
            except Exception:
                log.warning("delivery wake-ups lost; polling until they are back", exc_info=True)
                self._stop.wait(5.0)

    def _renew(self) -> None:
        interval = self.lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.gate.renew()
            except Exception:
                log.exception("could not renew the connection slots of %s", self.id)
            with self._lock:
                held = list(self._held)
            if held:
                try:
                    with self.db.transaction() as session:
                        outbox.extend(session, self.id, held, self.lease)
                except Exception:
                    log.exception("could not renew the leases of %s", self.id)

    # One cycle.

    def _due(self) -> bool:
        """SQLite: whether any message is due, read without the write lock (a claim that
        finds nothing still waits for it, behind event ingest); PostgreSQL: True (an empty
        claim costs no more than the look)."""
        if not self.db.is_sqlite:
            return True
        with self.db.read() as session:
            return outbox.any_due(session)

    def _record_carried(self) -> None:
        """Record the outcomes this thread carries (it stops), in a transaction of their own."""
        carried: list[Verdict] = getattr(self._local, "carried", [])
        if carried:
            self._local.carried = []
            try:
                with self._transaction() as session:
                    outbox.record_and_start(session, self.id, [], carried, [], self.lease)
            except Exception:  # they lapse to unknown, as when any recording fails
                log.exception("delivery worker %s could not record outcomes", self.id)

    def _cycle(self) -> int:
        # The outcomes of the previous cycle's last window are recorded in the transaction
        # that claims the next batch (one write transaction less per cycle: on SQLite every
        # one waits for the single write lock, behind event ingest's).
        carried: list[Verdict] = getattr(self._local, "carried", [])
        if not carried and not self._due():
            return 0  # (no write transaction for a wake-up another thread took)
        self._local.carried = []
        with self._transaction() as session:
            outbox.record_and_start(session, self.id, [], carried, [], self.lease)
            claim = outbox.claim(session, self.id, self.lease, self.batch)
        if claim.lapsed:
            log.warning(
                "%d messages were left sending by a worker that stopped; recorded unknown "
                "(not resent): %s", len(claim.lapsed), ", ".join(claim.lapsed[:10]),
            )  # fmt: skip
        if not claim.messages:
            return len(claim.lapsed)
        pending = {m.id for m in claim.messages}  # held, not attempted, not recorded
        with self._lock:
            self._held |= pending
        try:
            self._deliver(claim.messages, pending)
        finally:
            with self._lock:
                self._held -= {m.id for m in claim.messages}
            if pending:  # stopping, or something failed before they were attempted
                with self._transaction() as session:
                    outbox.release(session, self.id, pending, now())
        return len(claim.messages) + len(claim.lapsed)

    def _deliver(self, messages: Sequence[ClaimedMessage], pending: set[str]) -> None:
        with self.db.read() as session:
            context = load(session, messages)
        composed = self.composer.compose(messages, context)
        book = _Unrecorded(self.id, pending, composed.decided)
        for provider_id, items in composed.ready.items():
            if self._stop.is_set():
                break
            row = context.providers[provider_id]
            try:
                client = self._client(row)
            except DeliveryError as exc:
                moment = now()
                result = exc.result()
                book.unattempted += [self._verdict(m, result, moment) for m, _ in items]
                continue
            limits = ProviderLimits(
                row.id, row.max_connections, row.rate_per_second, row.rate_per_hour
            )
            self._send_all(client, limits, items, book)
        if book.unattempted or (book.attempted and not getattr(self._local, "keep", False)):
            with self._transaction() as session:
                book.flush(session)
        elif book.attempted:  # a loop thread's next claim records them (see _cycle)
            self._local.carried, book.attempted = book.attempted, []

    def _send_all(
        self, client: ProviderClient, limits: ProviderLimits, items: Items, book: _Unrecorded
    ) -> None:
        """Send ``items`` chunk by chunk within the provider's limits."""
        start = 0
        while start < len(items) and not self._stop.is_set():
            granted, wait = self.gate.take(limits, min(self.chunk, len(items) - start))
            if granted == 0:
                if book:  # outcomes are not kept unrecorded while waiting
                    with self._transaction() as session:
                        book.flush(session)
                if wait <= MAX_GATE_SLEEP:
                    self._stop.wait(wait)
                    continue
                back = [m.id for m, _ in items[start:]]
                with self._transaction() as session:
                    outbox.release(session, self.id, back, now() + timedelta(seconds=wait))
                book.pending.difference_update(back)
                break
            if not self.gate.acquire(limits, self.lease.total_seconds() / 3):
                continue  # every connection slot stayed busy: ask again
            try:
                chunk = items[start : start + granted]
                start += granted
                self._send_chunk(client, chunk, book)
            finally:
                self.gate.release(limits)

    def _send_chunk(self, client: ProviderClient, chunk: Items, book: _Unrecorded) -> None:
        """Hand ``chunk`` to the provider ``window`` messages at a time, each window marked
        ``sending`` (in the transaction that records the outcomes before it) just before it
        goes out; keep the outcomes for the next transaction. Stopping between windows
        leaves the rest pending (handed back by the cycle)."""
        for start in range(0, len(chunk), self.window):
            if start and self._stop.is_set():
                return
            window = self._mark(chunk[start : start + self.window], book)
            if not window:
                continue
            results = self._hand_over(client, window)
            moment = now()
            book.attempted += [
                # A template message's ledger row shows the subject as rendered for this
                # attempt (inline content keeps its Liquid source: a retry renders it again).
                replace(self._verdict(m, r, moment), subject=e.subject if m.template_id else None)
                for (m, e), r in zip(window, results, strict=True)
            ]

    def _mark(self, window: Items, book: _Unrecorded) -> Items:
        """Record what came before and mark ``window`` ``sending`` in one committed
        transaction; the part of it this worker still holds."""
        ids = [m.id for m, _ in window]
        with self._transaction() as session:
            sending = book.flush(session, ids, self.lease)
        book.pending.difference_update(ids)
        # From here on, a crash leaves these ``sending``: unknown once the lease lapses.
        return [(m, e) for m, e in window if m.id in sending]

    @staticmethod
    def _hand_over(client: ProviderClient, window: Items) -> list[DeliveryResult]:
        try:
            return client.deliver_many([email for _, email in window])
        except Exception as exc:  # the client's bug: the relay may have had some of them
            log.exception("provider client failed while sending %d messages", len(window))
            lost = DeliveryError("delivery_unknown", f"the send failed: {exc!r}",
                                 outcome=Outcome.UNKNOWN).result()  # fmt: skip
            return [lost] * len(window)

    def _verdict(self, message: ClaimedMessage, result: DeliveryResult, moment: Any) -> Verdict:
        return classify.verdict(message, result, moment, self.rules, self.rng)

    def _client(self, row: EmailProvider) -> ProviderClient:
        """The kept client of this version of the provider (built on first use)."""

        def build() -> ProviderClient:
            try:
                draft = draft_of(row, self.keyring)
            except DomainError as exc:  # an operator can mend it (restore the key): retry
                raise DeliveryError(exc.code, exc.detail, transient=True) from None
            return draft.client(self.context)

        return self.clients.get(row.id, row.updated_at.isoformat(), build)


class _Unrecorded:
    """Verdicts of one cycle not yet written, flushed in the next transaction the cycle opens
    (the one that marks the next chunk ``sending``, or its last): one commit per chunk
    instead of two. ``pending``: ids claimed and neither attempted nor recorded."""

    def __init__(self, worker: str, pending: set[str], unattempted: list[Verdict]) -> None:
        self.worker = worker
        self.pending = pending
        self.unattempted = list(unattempted)
        self.attempted: list[Verdict] = []

    def __bool__(self) -> bool:
        return bool(self.unattempted or self.attempted)

    def flush(
        self, session: Session, start: Sequence[str] = (), lease: timedelta = timedelta(0)
    ) -> set[str]:
        """Write the verdicts and mark ``start`` ``sending`` (leased for ``lease``), the
        rows locked in id order first (``outbox.record_and_start``); the ids of ``start``
        this worker still held."""
        sending = outbox.record_and_start(
            session, self.worker, self.unattempted, self.attempted, start, lease
        )
        # Segments reading {"email": "sent"} hear of these (domain/segments/sent.py).
        segment_sent.messages_sent(session, [v.id for v in self.attempted if v.status == SENT])
        # (Taken as recorded once the transaction commits; if it fails, the cycle ends and
        # the ids still pending are handed back, the attempted ones lapse to unknown.)
        self.pending.difference_update(v.id for v in self.unattempted)
        self.unattempted, self.attempted = [], []
        return sending
