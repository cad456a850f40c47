"""The webhook inbox: verify at the edge, store the raw post once, answer, process later.

:func:`accept` is the edge (``POST /webhooks/{relay}/{project_id}``): an unknown relay or
project is ``not_found``; a relay with no secret for the project, or a post that does not
verify (signature, credentials, a signed timestamp outside 5 minutes, an SNS topic not
allowed), is ``unauthenticated``; nothing is stored for any of them. A post that verifies
is stored once per ``(project, relay, delivery id)`` (a replay is acknowledged and changes
nothing) and a ``webhooks.process`` job is asked for, in the same transaction.

:func:`process` is that job: it reads the project's stored posts in order, a chunk per
transaction, parses each with its relay's adapter and records their events
(:func:`~getfluxly_server.domain.feedback.record.record`) in the transaction that marks them
processed, so a crash redoes a chunk whole or not at all. A post that cannot be read is
marked with why and never blocks the others. SNS subscriptions are confirmed after the
chunk commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.feedback import secrets
from getfluxly_server.domain.feedback.record import DEFAULT_RULES, FeedbackRules, record
from getfluxly_server.domain.feedback.relays import Parsed, Relay, Unreadable
from getfluxly_server.domain.feedback.signatures import Incoming, Refused
from getfluxly_server.domain.feedback.sns import SnsPolicy
from getfluxly_server.queue.kinds import JobKind, JobPayload
from getfluxly_server.storage import webhooks as store
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import WebhookInbox, now

log = logging.getLogger("getfluxly.webhooks")

PROCESS_JOB = "webhooks.process"
#: Posts parsed and recorded per transaction.
CHUNK = 500
#: Processed posts are deleted this long after they came (their events are recorded; a
#: replay older than this is still recorded once, by its events' ids).
RETENTION = timedelta(days=7)


class ProcessInbox(JobPayload):
    """Parse and record a project's stored webhook posts (all of them: one pass serves
    every post that asked)."""

    project_id: str


PROCESS_INBOX = JobKind(PROCESS_JOB, ProcessInbox)


@dataclass(frozen=True)
class Receipt:
    """What the edge answers: stored now, or a replay of a post stored before."""

    duplicate: bool


def accept(
    db: Database,
    relays: Mapping[str, Relay],
    keyring: Keyring,
    relay_name: str,
    project_id: str,
    incoming: Incoming,
    content_type: str,
) -> Receipt:
    """Verify a post on its raw bytes, then store it once and ask for its processing."""
    relay = relays.get(relay_name)
    if relay is None:
        raise NotFound("webhook relay (use one of " + ", ".join(relays) + ")")
    moment = incoming.received_at
    with db.read() as session:
        found = secrets.materials(session, project_id, relay_name, keyring, moment)
    if found is None:
        raise NotFound("project")
    usable = [m for m in found if m.secret or relay_name == "ses"]
    if not usable:
        raise Refused(
            f"No webhook secret is set up for {relay_name} in this project, so every post is "
            f"refused: create one with POST /v1/projects/{project_id}/webhook-secrets "
            f'{{"relay": "{relay_name}"}}'
        )
    delivery_id = relay.verify(incoming, usable, moment)
    # Verified: only now is the body looked at as text (what the inbox keeps).
    if b"\x00" in incoming.body:
        raise ValidationFailed("The body holds a NUL byte; no relay sends one")
    try:
        payload = incoming.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed("The body is not UTF-8") from None
    with db.transaction() as session:
        new = store.store_post(
            session, project_id, relay_name, delivery_id, content_type[:255], payload, moment
        )
        if new:
            PROCESS_INBOX.enqueue_once(
                session, ProcessInbox(project_id=project_id), f"{PROCESS_JOB}:{project_id}"
            )
    return Receipt(duplicate=not new)


def _parse(relay: Relay | None, row: WebhookInbox) -> Parsed:
    if relay is None:
        return Parsed(note=f"no adapter for relay {row.relay}")
    try:
        return relay.parse(row.payload, row.content_type, row.received_at, row.delivery_id)
    except Unreadable as exc:
        return Parsed(note=str(exc))
    except Exception:  # a payload no parser foresaw: logged (without it), never a blocker
        log.exception("webhook post %s (%s) could not be parsed", row.id, row.relay)
        return Parsed(note="the payload could not be read")


def process(
    db: Database,
    project_id: str,
    relays: Mapping[str, Relay],
    *,
    rules: FeedbackRules = DEFAULT_RULES,
    sns: SnsPolicy | None = None,
) -> dict[str, Any]:
    """Parse and record every stored, unprocessed post of the project (see the module
    docstring); how many posts and events."""
    posts = events = 0
    while True:
        confirmations: list[tuple[int, str]] = []
        with db.transaction() as session:
            rows = store.take_pending(session, project_id, CHUNK)
            found = []
            moment = now()
            for row in rows:
                parsed = _parse(relays.get(row.relay), row)
                found += parsed.events
                row.events, row.processed_at = len(parsed.events), moment
                row.error = parsed.note if not parsed.events else None
                if parsed.subscribe_url:
                    confirmations.append((row.id, parsed.subscribe_url))
            written = record(session, project_id, found, rules=rules)
        posts += len(rows)
        events += len(written)
        for row_id, url in confirmations:
            outcome = sns.confirm(url) if sns is not None else "SNS is not configured"
            log.info("SNS subscription of project %s: %s", project_id, outcome)
            with db.transaction() as session:
                stored = session.get(WebhookInbox, row_id)
                if stored is not None:
                    stored.error = outcome
        if len(rows) < CHUNK:
            break
    with db.transaction() as session:
        store.delete_processed(session, now() - RETENTION)
    return {"posts": posts, "events": events}
