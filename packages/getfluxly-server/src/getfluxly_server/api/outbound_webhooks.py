"""Outbound webhooks (workspace key): a project's endpoints, and each one's delivery log.

``POST /v1/projects/{project_id}/webhooks`` ``{"url", "events": ["message.bounced", ...]}``
answers 201 with the endpoint and its signing secret (``whsec_...``), shown this once;
``GET`` lists them (never a secret). ``GET|PATCH|DELETE /v1/webhooks/{webhook_id}``;
``GET /v1/webhooks/{webhook_id}/deliveries`` is the log: each delivery (its ``webhook-id``,
event type, status) with its attempts (status code, error, a short excerpt of the answer,
time), newest first. Unknown event types, bad URLs: 400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Response as HTTPResponse
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, keyring
from getfluxly_server.api.models import PageCursor, PageLimit, Request, Response, Timestamp
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import paging
from getfluxly_server.domain.outbound import endpoints as domain
from getfluxly_server.domain.outbound.events import EVENT_TYPES
from getfluxly_server.storage.models import OutboundAttempt, OutboundDelivery, OutboundWebhook

router = APIRouter(prefix="/v1", tags=["outbound webhooks"])
Keys = Annotated[Keyring, Depends(keyring)]

_EVENTS_DOC = "Event types to receive: " + ", ".join(EVENT_TYPES)


class NewWebhook(Request):
    url: str = Field(description="The http(s) URL deliveries are POSTed to")
    events: list[str] = Field(description=_EVENTS_DOC, examples=[["message.bounced"]])


class WebhookChanges(Request):
    url: str | None = Field(default=None, description="A new URL")
    events: list[str] | None = Field(default=None, description=_EVENTS_DOC)


class WebhookView(Response):
    id: str
    project_id: str
    url: str
    events: list[str]
    created_at: Timestamp
    updated_at: Timestamp


class CreatedWebhookView(WebhookView):
    #: The Standard Webhooks signing secret: shown in this answer only.
    secret: str


class OneWebhook(Response):
    webhook: WebhookView


class OneCreatedWebhook(Response):
    webhook: CreatedWebhookView


class WebhookList(Response):
    webhooks: list[WebhookView]


class AttemptView(Response):
    attempt: int
    #: None when no answer came (the error says why).
    status_code: int | None
    error: str | None
    #: The start of the answer's body, one printable line.
    response_excerpt: str | None
    duration_ms: int
    at: Timestamp


class DeliveryView(Response):
    #: The ``webhook-id`` header of every attempt of this delivery.
    id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    created_at: Timestamp
    updated_at: Timestamp
    attempts: list[AttemptView]


class DeliveryList(Response):
    deliveries: list[DeliveryView]
    next_cursor: str | None


def _view(row: OutboundWebhook) -> WebhookView:
    return WebhookView(
        id=row.id, project_id=row.project_id, url=row.url, events=list(row.events),
        created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


def _attempt(row: OutboundAttempt) -> AttemptView:
    return AttemptView(
        attempt=row.attempt, status_code=row.status_code, error=row.error,
        response_excerpt=row.response_excerpt, duration_ms=row.duration_ms, at=row.at,
    )  # fmt: skip


def _delivery(row: OutboundDelivery, attempts: list[AttemptView]) -> DeliveryView:
    return DeliveryView(
        id=row.id, event_type=row.event_type, status=row.status,  # type: ignore[arg-type]
        created_at=row.created_at, updated_at=row.updated_at, attempts=attempts,
    )  # fmt: skip


@router.post("/projects/{project_id}/webhooks", status_code=201)
def create_webhook(
    project_id: str, body: NewWebhook, who: WorkspaceKey, db: DB, keys: Keys
) -> OneCreatedWebhook:
    """Register an endpoint; the answer holds its signing secret, this once."""
    with db.transaction() as session:
        made = domain.create(session, who, project_id, body.url, body.events, keys)
        view = _view(made.webhook)
        return OneCreatedWebhook(
            webhook=CreatedWebhookView(**view.model_dump(), secret=made.secret)
        )


@router.get("/projects/{project_id}/webhooks")
def list_webhooks(project_id: str, who: WorkspaceKey, db: DB) -> WebhookList:
    """The project's endpoints, oldest first (never their secrets)."""
    with db.read() as session:
        return WebhookList(webhooks=[_view(w) for w in domain.listed(session, who, project_id)])


@router.get("/webhooks/{webhook_id}")
def get_webhook(webhook_id: str, who: WorkspaceKey, db: DB) -> OneWebhook:
    with db.read() as session:
        return OneWebhook(webhook=_view(domain.find(session, who, webhook_id)))


@router.patch("/webhooks/{webhook_id}")
def change_webhook(webhook_id: str, body: WebhookChanges, who: WorkspaceKey, db: DB) -> OneWebhook:
    """A new URL and/or event list; what is left out stays."""
    with db.transaction() as session:
        row = domain.change(session, who, webhook_id, url=body.url, events=body.events)
        return OneWebhook(webhook=_view(row))


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=HTTPResponse)
def delete_webhook(webhook_id: str, who: WorkspaceKey, db: DB) -> HTTPResponse:
    """The endpoint goes, with its queued deliveries and their log."""
    with db.transaction() as session:
        domain.remove(session, who, webhook_id)
    return HTTPResponse(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str,
    who: WorkspaceKey,
    db: DB,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
    limit: PageLimit = paging.DEFAULT_LIMIT,
    cursor: PageCursor = None,
) -> DeliveryList:
    """The delivery log, newest first: each delivery with every attempt."""
    with db.read() as session:
        found = domain.deliveries(
            session, who, webhook_id, limit=limit, cursor=cursor, status=status
        )
        return DeliveryList(
            deliveries=[
                _delivery(row, [_attempt(a) for a in attempts])
                for row, attempts in found.deliveries
            ],
            next_cursor=found.next_cursor,
        )
