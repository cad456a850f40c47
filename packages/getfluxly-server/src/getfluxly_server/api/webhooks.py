"""Inbound feedback webhooks (engine spec section 7).

- ``POST /webhooks/{relay}/{project_id}`` (no API key: each relay's own signature or
  credentials, checked on the raw body by ``domain/feedback``): 200 ``{"accepted": true,
  "duplicate": false}`` once stored, ``"duplicate": true`` for a replay (nothing changes);
  401 ``unauthenticated`` when it does not verify or the relay has no secret; 404 for an
  unknown relay or project; 400 for a body no relay sends (not UTF-8, a NUL byte, or the
  generic schema broken). The global body cap and strict input checks apply as everywhere.
  Posts that fail (401, 404) are counted per client address and project; past
  ``GETFLUXLY_WEBHOOK_FAILURE_RATE_LIMIT_*`` the address is answered 429 ``rate_limited``
  (``Retry-After``) before anything is verified (api/public_limits.py).
- ``POST /v1/projects/{project_id}/webhook-secrets`` ``{"relay", "secret"?, "public_key"?,
  "topic_arn"?, "topic_arns"?}`` (workspace key) → 201 ``{"webhook_secret": {"relay",
  "secret", "url", ...}}``: the secret shown this once; posting again rotates it (the old one
  verifies for 24 hours more). ``GET`` lists them (never the secrets); ``DELETE
  .../webhook-secrets/{relay}`` removes the relay's secrets (its posts are refused after).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from fastapi import Response as HTTPResponse
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, database, keyring, settings
from getfluxly_server.api.models import Request, Response, Timestamp
from getfluxly_server.api.openapi_docs import ErrorBody
from getfluxly_server.api.public_limits import webhook_failures
from getfluxly_server.domain.feedback import inbox
from getfluxly_server.domain.feedback import secrets as domain
from getfluxly_server.domain.feedback.config import FeedbackConfig, config_of
from getfluxly_server.domain.feedback.relays import NAMES
from getfluxly_server.domain.feedback.signatures import Incoming
from getfluxly_server.storage.models import WebhookSecret, now

router = APIRouter(tags=["webhooks"])


class NewWebhookSecret(Request):
    #: postmark, sendgrid, mailgun, ses, smtp2go, resend, brevo, mailtrap, smtp.
    relay: str = Field(min_length=1, max_length=16, description=", ".join(NAMES))
    secret: str | None = Field(
        default=None,
        max_length=1_000,
        description="mailgun: its HTTP webhook signing key; resend: its whsec_ signing "
        "secret; mailtrap: its signing secret (optional)",
    )
    public_key: str | None = Field(
        default=None,
        max_length=4_000,
        description="sendgrid: the Signed Event Webhook's verification key",
    )
    topic_arn: str | None = Field(
        default=None, max_length=300, description="ses: the SNS topic SES publishes to"
    )
    topic_arns: list[str] | None = Field(
        default=None, max_length=100, description="ses: several SNS topics"
    )


class WebhookSecretView(Response):
    id: str
    relay: str
    #: The URL to give the relay.
    url: str
    created_at: Timestamp
    #: When a rotated secret stops verifying; null for the current one.
    expires_at: Timestamp | None
    #: ses: the SNS topics allowed.
    topic_arns: list[str] | None


class IssuedWebhookSecret(WebhookSecretView):
    #: Shown this once when GetFluxly made it; null when the relay made it (or for ses).
    secret: str | None


class OneWebhookSecret(Response):
    webhook_secret: IssuedWebhookSecret


class WebhookSecretList(Response):
    webhook_secrets: list[WebhookSecretView]


class WebhookReceipt(Response):
    accepted: bool
    #: True when this post was stored before (a replay): nothing changed.
    duplicate: bool


def _view(row: WebhookSecret, public_url: str) -> WebhookSecretView:
    arns = row.config.get("topic_arns") if row.relay == "ses" else None
    return WebhookSecretView(
        id=row.id, relay=row.relay, url=domain.webhook_url(public_url, row.relay, row.project_id),
        created_at=row.created_at, expires_at=row.expires_at,
        topic_arns=list(arns) if isinstance(arns, list) else None,
    )  # fmt: skip


def _config(request: HTTPRequest) -> FeedbackConfig:
    """The feedback settings of this app (built on first use, kept on ``app.state``)."""
    config: FeedbackConfig | None = getattr(request.app.state, "feedback", None)
    if config is None:
        config = config_of(settings(request))
        request.app.state.feedback = config
    return config


@router.post("/v1/projects/{project_id}/webhook-secrets", status_code=201)
def create_webhook_secret(
    project_id: str, body: NewWebhookSecret, who: WorkspaceKey, db: DB, request: HTTPRequest
) -> OneWebhookSecret:
    """Make (or rotate) a relay's webhook secret; shown once."""
    config = settings(request)
    with db.transaction() as session:
        issued = domain.create(
            session, who, project_id,
            domain.NewSecret(relay=body.relay, secret=body.secret, public_key=body.public_key,
                             topic_arn=body.topic_arn, topic_arns=body.topic_arns),
            keyring(request), config.public_url,
        )  # fmt: skip
        view = _view(issued.row, config.public_url)
        return OneWebhookSecret(
            webhook_secret=IssuedWebhookSecret(**view.model_dump(), secret=issued.secret)
        )


@router.get("/v1/projects/{project_id}/webhook-secrets")
def list_webhook_secrets(
    project_id: str, who: WorkspaceKey, db: DB, request: HTTPRequest
) -> WebhookSecretList:
    """The project's webhook secrets still valid, by relay, newest first (no secrets)."""
    public_url = settings(request).public_url
    with db.read() as session:
        rows = domain.listed(session, who, project_id)
        return WebhookSecretList(webhook_secrets=[_view(row, public_url) for row in rows])


@router.delete(
    "/v1/projects/{project_id}/webhook-secrets/{relay}",
    status_code=204,
    response_class=HTTPResponse,
)
def delete_webhook_secrets(project_id: str, relay: str, who: WorkspaceKey, db: DB) -> HTTPResponse:
    """Remove the relay's secrets (current and rotated): its posts are refused from now."""
    with db.transaction() as session:
        domain.remove(session, who, project_id, relay)
    return HTTPResponse(status_code=204)


@router.post(
    "/webhooks/{relay}/{project_id}",
    responses={
        401: {
            "description": "unauthenticated: the post does not verify, or the relay has no "
            "webhook secret in this project"
        },
        429: {
            "description": "rate_limited: too many failed posts from this address "
            "(Retry-After says when to try again)",
            "model": ErrorBody,
        },
    },
)
async def receive_webhook(relay: str, project_id: str, request: HTTPRequest) -> WebhookReceipt:
    """A relay's feedback post, verified on its raw body, stored once, processed later."""
    with webhook_failures(request, project_id):  # 429 before the body is read, if over
        body = await request.body()
        incoming = Incoming(
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            received_at=now(),
        )
        receipt = await run_in_threadpool(
            inbox.accept,
            database(request),
            _config(request).relays,
            keyring(request),
            relay,
            project_id,
            incoming,
            request.headers.get("content-type", ""),
        )
    return WebhookReceipt(accepted=True, duplicate=receipt.duplicate)
