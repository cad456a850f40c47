"""Segments told of messages ``sent``: the hook the delivery workers call in the transaction
that records a chunk's outcomes, and the job that brings those segments up to date.

A message's status is not an event, so ``{"email": "sent"}`` rules cannot hear of it the
way other mail activity does (a profile event per feedback report). Instead, for each sent
message with a profile, of a project with a live segment reading ``sent``,
:func:`messages_sent` writes a ``segment_pending`` row due at once, and one due when the
message leaves each ``within`` window such a segment has, and asks for the project's
``segments.sent`` job once (``enqueue_once``: one job waiting per project, whatever the
number of chunks recorded meanwhile), due :data:`GATHER` later so that it finds many. The
job (``membership.drain_sent``) evaluates the profiles due, a chunk at a time under the
project's lock; the periodic pass drains the rows whose window ended. A project with no
``sent`` segment costs two reads per chunk (its messages by id, its segments) and writes
nothing.

A ``sent`` segment created while its first messages are being recorded: its full
computation (the ``segments.compute`` job) runs after it commits. A transaction recording
sent mail passes the barrier ``segment_pending.SENT`` before it looks for the project's
segments, and the computation settles it first: every transaction that looked before the
segment was saved (and so wrote no row for it) has committed when the computation reads
the messages, and every one that looks later sees the segment. (SQLite's single writer
needs no barrier.)
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from getfluxly_server.domain.segments import rules
from getfluxly_server.domain.segments.model import (
    All,
    AnyOf,
    Email,
    EmailActivity,
    Not,
    Rule,
)
from getfluxly_server.queue.kinds import JobKind, JobPayload
from getfluxly_server.storage import segment_pending as store
from getfluxly_server.storage import segments as segment_store
from getfluxly_server.storage.models import now

SENT_JOB = "segments.sent"
#: How long a project's ``segments.sent`` job waits before it runs, gathering the chunks
#: recorded meanwhile: due at once, a broadcast to 2,000 profiles made 168 jobs (about one
#: per window of 10 messages the workers record); waiting a second, about one per second.
GATHER = timedelta(seconds=1)


class SentPending(JobPayload):
    """Evaluate the project's profiles with sent mail due (``segment_pending``)."""

    project_id: str


SENT = JobKind(SENT_JOB, SentPending)


def sent_windows(rule: Rule) -> frozenset[timedelta] | None:
    """The ``within`` windows of the rule's ``sent`` conditions (empty: ``sent`` with none);
    None when the rule does not read ``sent``."""
    found: list[timedelta | None] = []

    def walk(node: Rule) -> None:
        match node:
            case All(children) | AnyOf(children):
                for child in children:
                    walk(child)
            case Not(inner):
                walk(inner)
            case Email(activity=EmailActivity.SENT, within=within):
                found.append(within)

    walk(rule)
    if not found:
        return None
    return frozenset(w for w in found if w is not None)


class _Windows:
    """``sent`` windows by (segment id, version): a stored rule is parsed once."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], frozenset[timedelta] | None] = {}
        self._lock = threading.Lock()

    def of(self, segment_id: str, version: int, rule: object) -> frozenset[timedelta] | None:
        key = (segment_id, version)
        with self._lock:
            if key in self._known:
                return self._known[key]
        found = sent_windows(rules.parse(rule))
        with self._lock:
            if len(self._known) >= self.LIMIT:
                self._known.clear()
            self._known[key] = found
        return found


_WINDOWS = _Windows()


def messages_sent(session: Session, message_ids: Collection[str]) -> None:
    """The hook: ``message_ids`` were just recorded ``sent`` in this transaction (a chunk
    of a delivery worker's outcomes). See the module docstring."""
    mail = store.sent_mail(session, message_ids)
    projects = sorted({m.project_id for m in mail})
    rows: list[tuple[str, str, datetime | None]] = []
    for project_id in projects:
        windows: set[timedelta] = set()
        reads = False
        for segment in segment_store.live(session, project_id):
            found = _WINDOWS.of(segment.id, segment.version, segment.rule)
            if found is not None:
                reads = True
                windows |= found
        if not reads:
            continue
        for m in (m for m in mail if m.project_id == project_id):
            rows.append((project_id, m.profile_id, None))
            if m.sent_at is not None:
                rows += [(project_id, m.profile_id, m.sent_at + w) for w in sorted(windows)]
        key = f"{SENT_JOB}:{project_id}"
        SENT.enqueue_once(session, SentPending(project_id=project_id), key, run_at=now() + GATHER)
    store.add(session, rows)
