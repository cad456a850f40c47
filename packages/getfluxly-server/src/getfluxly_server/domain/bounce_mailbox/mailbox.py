"""From a received report to recorded feedback: join each finding to its ledger message and
record it through ``domain.feedback.record`` (source ``bounce_mailbox``), in one transaction.

The join, first that works: the VERP id of the address the report was delivered to
(``RCPT TO:<bounces+msg_...@domain>``, at ``GETFLUXLY_BOUNCE_DOMAIN`` when set), else the
quoted original's ``X-GetFluxly-Message-Id``, else a VERP id in the original's
``Return-Path`` or in the report's sender fields (``X-Postfix-Sender``,
``Original-Mail-From``), else the original's ``Message-ID`` (when exactly one message has
it). A finding that joins nothing is ignored (logged): the mailbox never guesses a project.

The event is always about the message's own recipient (never an address the report names:
a forged report could otherwise suppress anyone); where a report lists several recipients
of one message (an alias expanded), the one that is the message's recipient is taken, else
the first. Each report is recorded once: its event id is a digest of its Message-ID (or of
its bytes) and the message's id, so an MTA delivering it twice changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from getfluxly_server.domain.bounce_mailbox import reports, verp
from getfluxly_server.domain.bounce_mailbox.reports import Finding
from getfluxly_server.domain.feedback.record import FeedbackEvent, record
from getfluxly_server.storage import bounce_mailbox as store
from getfluxly_server.storage.models import MessageEventType, now

log = logging.getLogger("getfluxly.bounces")

SOURCE = "bounce_mailbox"


@dataclass(frozen=True)
class Received:
    """What one received message came to: findings read, events recorded, findings that
    matched no message."""

    findings: int
    recorded: int
    unmatched: int


def receive(
    session: Session,
    raw: bytes,
    recipients: Sequence[str],
    *,
    domain: str | None = None,
    clock: Callable[[], datetime] = now,
) -> Received:
    """Parse ``raw`` (delivered to ``recipients``, the envelope's RCPT TO addresses) and
    record what it reports, in the caller's transaction."""
    findings = reports.parse(raw)
    if not findings:
        return Received(0, 0, 0)
    envelope_id = next(
        (found for r in recipients if (found := verp.message_id_of(r, domain)) is not None),
        None,
    )
    keys = [_ledger_key(finding, envelope_id) for finding in findings]
    by_id = store.by_ids(session, {key for key in keys if key})
    smtp_ids = {f.original.message_id for f, key in zip(findings, keys, strict=True)
                if key not in by_id and f.original.message_id}  # fmt: skip
    by_smtp = store.by_smtp_ids(session, smtp_ids)

    chosen: dict[str, tuple[store.Sent, Finding]] = {}
    unmatched = 0
    for finding, key in zip(findings, keys, strict=True):
        sent = by_id.get(key or "")
        if sent is None and finding.original.message_id:
            candidates = by_smtp.get(finding.original.message_id, [])
            sent = candidates[0] if len(candidates) == 1 else None
        if sent is None:
            unmatched += 1
            continue
        kept = chosen.get(sent.id)
        if kept is None or (
            kept[1].recipient != sent.to_email.lower()
            and finding.recipient == sent.to_email.lower()
        ):
            chosen[sent.id] = (sent, finding)

    digest = hashlib.sha256((findings[0].report_id or "").encode() or raw).hexdigest()[:40]
    moment = clock()
    by_project: dict[str, list[FeedbackEvent]] = defaultdict(list)
    for sent, finding in chosen.values():
        by_project[sent.project_id].append(
            FeedbackEvent(
                type=MessageEventType(finding.kind), email=sent.to_email, source=SOURCE,
                occurred_at=moment, message_id=sent.id, smtp_message_id=sent.smtp_message_id,
                provider_event_id=f"{digest}:{sent.id}", bounce_type=finding.bounce_type,
                reason=finding.reason,
            )
        )  # fmt: skip
    recorded = 0
    for project_id, events in by_project.items():
        recorded += len(record(session, project_id, events))
    if unmatched:
        log.info("bounce mailbox: %d finding(s) matched no message and were ignored", unmatched)
    return Received(len(findings), recorded, unmatched)


def _ledger_key(finding: Finding, envelope_id: str | None) -> str | None:
    """The ledger id a finding names, by the first of the join's rules that gives one."""
    return (
        envelope_id
        or finding.original.getfluxly_id
        or verp.message_id_of(finding.original.return_path)
        or verp.message_id_of(finding.sender)
    )
