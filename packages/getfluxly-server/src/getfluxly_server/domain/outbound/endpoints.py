"""Customers' webhook endpoints (workspace key): create (the signing secret shown once),
list, get, change, delete, and each endpoint's delivery log.

An endpoint is a URL and the event types it subscribes to (:data:`.events.EVENT_TYPES`).
The URL is ``http`` or ``https`` with a host, without user:password or fragment (a
credential in a URL ends up in logs and in this API's answers; put it in the path or query
if the receiver needs one). Where it may point is decided when each delivery connects, on
the address the name resolves to then (the multi-tenant guard, ``delivery.netguard``), not
here: a name may resolve elsewhere by the time an event is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.orm import Session

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.outbound.events import EVENT_TYPES
from getfluxly_server.domain.outbound.signing import new_secret
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import outbound_webhooks as store
from getfluxly_server.storage.models import (
    OutboundAttempt,
    OutboundDelivery,
    OutboundWebhook,
    new_id,
    now,
)

#: The longest URL accepted (what browsers and proxies reliably carry).
URL_MAX = 2048
#: The statuses a delivery may have (the log's filter).
DELIVERY_STATUSES = (store.PENDING, store.SUCCEEDED, store.FAILED)


@dataclass(frozen=True)
class Created:
    """A new endpoint and its signing secret in plain text (this once)."""

    webhook: OutboundWebhook
    secret: str


@dataclass(frozen=True)
class DeliveryPage:
    """One page of an endpoint's deliveries (newest first), each with its attempts."""

    deliveries: Sequence[tuple[OutboundDelivery, Sequence[OutboundAttempt]]]
    next_cursor: str | None


def check_url(value: Any) -> str:
    """``value`` if it is an endpoint URL this server will post to; ``validation_error``
    (field ``url``) saying what is wrong otherwise."""
    text = value.strip() if isinstance(value, str) else ""
    problem = None
    if not text:
        problem = "url is required: the https:// address of your endpoint"
    elif len(text) > URL_MAX:
        problem = f"url is longer than {URL_MAX} characters"
    elif not text.isascii() or not text.isprintable():
        problem = "url must be printable ASCII (percent-encode anything else)"
    else:
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            problem = "url must be an http:// or https:// URL such as https://example.com/hooks"
        elif url.userinfo:
            problem = "url must not carry user:password (it would be shown in logs and lists)"
        elif url.fragment:
            problem = "url must not have a #fragment (it is never sent to the server)"
    if problem is not None:
        raise ValidationFailed(problem, field="url")
    return text


def check_events(value: Any) -> list[str]:
    """The subscribed types, once each in the order given; ``validation_error`` (field
    ``events``) naming the first that is not one of :data:`EVENT_TYPES`."""
    if not isinstance(value, list) or not value:
        raise ValidationFailed(
            f"events must be a non-empty list of event types: {', '.join(EVENT_TYPES)}",
            field="events",
        )
    for index, item in enumerate(value):
        if item not in EVENT_TYPES:
            shown = repr(item) if isinstance(item, str) and len(item) <= 64 else "that value"
            raise ValidationFailed(
                f"events[{index}]: {shown} is not an event type; use one of "
                f"{', '.join(EVENT_TYPES)}",
                field="events",
            )
    return list(dict.fromkeys(value))


def create(
    session: Session,
    principal: Principal,
    project_id: str,
    url: Any,
    events: Any,
    keyring: Keyring,
) -> Created:
    """``POST /v1/projects/{project_id}/webhooks``: a new endpoint, its secret encrypted at
    rest (bound to the endpoint's id) and returned in plain text once."""
    project_of(session, principal, project_id)
    checked_url, checked_events = check_url(url), check_events(events)
    webhook_id, secret, moment = new_id("wh"), new_secret(), now()
    row = OutboundWebhook(
        id=webhook_id, project_id=project_id, url=checked_url, events=checked_events,
        secret=keyring.encrypt(secret, context=_context(webhook_id)), created_at=moment,
        updated_at=moment,
    )  # fmt: skip
    return Created(store.add(session, row), secret)


def _context(webhook_id: str) -> str:
    """The associated data binding a secret's ciphertext to its endpoint's row."""
    return f"outbound_webhook:{webhook_id}"


def secret_of(row: OutboundWebhook, keyring: Keyring) -> str:
    """The endpoint's secret in plain text (raises ``KeyringError`` when it cannot be read)."""
    return keyring.decrypt(row.secret, context=_context(row.id))


def listed(session: Session, principal: Principal, project_id: str) -> Sequence[OutboundWebhook]:
    """The project's endpoints, oldest first."""
    project_of(session, principal, project_id)
    return store.list_for_project(session, project_id)


def find(
    session: Session, principal: Principal, webhook_id: str, *, lock: bool = False
) -> OutboundWebhook:
    """The endpoint if the caller may see it; ``not_found`` otherwise (also for another
    tenant's: its existence is never confirmed)."""
    row = store.get_in_workspace(session, principal.workspace_id, webhook_id, lock=lock)
    if row is None or (principal.project_id is not None and row.project_id != principal.project_id):
        raise NotFound("webhook")
    return row


def change(
    session: Session,
    principal: Principal,
    webhook_id: str,
    *,
    url: Any = None,
    events: Any = None,
) -> OutboundWebhook:
    """``PATCH /v1/webhooks/{id}``: a new URL and/or event list (what is not given stays).
    Deliveries already queued go to the URL the endpoint has when they are sent."""
    row = find(session, principal, webhook_id, lock=True)
    if url is not None:
        row.url = check_url(url)
    if events is not None:
        row.events = check_events(events)
    row.updated_at = now()
    session.flush()
    return row


def remove(session: Session, principal: Principal, webhook_id: str) -> None:
    """``DELETE /v1/webhooks/{id}``: the endpoint, its queued deliveries and their log go."""
    store.delete(session, find(session, principal, webhook_id, lock=True))


def deliveries(
    session: Session,
    principal: Principal,
    webhook_id: str,
    *,
    limit: int = paging.DEFAULT_LIMIT,
    cursor: str | None = None,
    status: str | None = None,
) -> DeliveryPage:
    """``GET /v1/webhooks/{id}/deliveries``: the delivery log, newest first, ``limit`` at a
    time, optionally of one ``status``."""
    find(session, principal, webhook_id)
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(DELIVERY_STATUSES)}", field="status"
        )
    rows, next_cursor = paging.newest_first(
        lambda before, n: store.deliveries_page(
            session, webhook_id, limit=n, before=before, status=status
        ),
        limit,
        cursor,
    )
    attempts = store.attempts_of(session, [row.id for row in rows])
    return DeliveryPage(
        deliveries=[(row, attempts[row.id]) for row in rows], next_cursor=next_cursor
    )


def rotate_secrets(session: Session, keyring: Keyring) -> int:
    """Re-encrypt every endpoint secret not under the keyring's primary key (``getfluxly
    keys rotate``); how many."""
    count = 0
    for row in store.every(session):
        if keyring.needs_rotation(row.secret):
            row.secret = keyring.encrypt(secret_of(row, keyring), context=_context(row.id))
            count += 1
    return count
