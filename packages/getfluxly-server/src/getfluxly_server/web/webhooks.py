"""Settings → Webhooks (inbound) and Settings → Outbound webhooks.

Inbound (``domain.feedback.secrets``, as ``/v1/projects/{id}/webhook-secrets``): per relay
the URL to paste into the relay's dashboard (``/webhooks/{relay}/{project_id}`` on the
server's public URL), whether it has a secret (and a rotated one still verifying until
when), and a form to make or rotate it: a secret GetFluxly makes is shown on the answer
page this once; one the relay makes (Mailgun's signing key, Resend's ``whsec_``,
SendGrid's public key, SES's topic ARN) is typed in, and never shown back.

Outbound (``domain.outbound.endpoints``, as ``/v1/projects/{id}/webhooks``): the project's
endpoints, a new one (its signing secret shown this once), removal, and each endpoint's
delivery log (status, attempts with their answer).

Secrets and endpoints are settings: changing them needs admin, as email providers do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fastapi import Response
from sqlalchemy.orm import Session

from getfluxly_server.domain import paging
from getfluxly_server.domain.errors import DomainError, NotFound
from getfluxly_server.domain.feedback import secrets
from getfluxly_server.domain.feedback.config import config_of
from getfluxly_server.domain.feedback.relays import NAMES
from getfluxly_server.domain.outbound import endpoints
from getfluxly_server.domain.outbound.events import EVENT_TYPES
from getfluxly_server.domain.tenancy import project_of
from getfluxly_server.storage.models import OutboundWebhook
from getfluxly_server.web.routing import Ctx, page

#: The relays' names as their dashboards spell them.
RELAY_LABELS = {
    "postmark": "Postmark", "sendgrid": "SendGrid", "mailgun": "Mailgun", "ses": "Amazon SES",
    "smtp2go": "SMTP2GO", "resend": "Resend", "brevo": "Brevo", "mailtrap": "Mailtrap",
    "smtp": "Any relay (GetFluxly's generic schema)",
}  # fmt: skip
#: What the form asks for, by the relay's kind of material (``Relay.material``): the field,
#: its label and where the relay shows it. ``generated`` and ``standard``: nothing to type.
MATERIAL_FIELDS = {
    "secret": ("secret", "Signing secret"),
    "public_key": ("public_key", "Verification key"),
    "topic_arn": ("topic_arn", "SNS topic ARN"),
}
WHERE = {
    "mailgun": "Mailgun → Sending → Webhooks: the HTTP webhook signing key",
    "resend": "Resend → Webhooks → your endpoint: the signing secret (whsec_...)",
    "sendgrid": "SendGrid → Mail Settings → Event Webhook, Signed: the verification key",
    "ses": "The SNS topic SES publishes this project's feedback to "
    "(arn:aws:sns:region:account:topic)",
    "mailtrap": "Optional: Mailtrap's signing secret; leave empty and GetFluxly makes one",
}


@dataclass(frozen=True)
class RelayRow:
    """One relay on the inbound page."""

    name: str
    label: str
    url: str
    #: The form field its material comes in ("" when GetFluxly makes it), its label, help.
    field: str
    field_label: str
    where: str
    optional: bool
    #: The live secrets: (created_at, expires_at or None for the current one).
    secrets: list[tuple[datetime, datetime | None]]


def _relay_rows(ctx: Ctx, project_id: str) -> list[RelayRow]:
    relays = config_of(ctx.settings).relays
    with ctx.db.read() as session:
        live = secrets.listed(session, ctx.user.principal, project_id)
        by_relay: dict[str, list[tuple[datetime, datetime | None]]] = {}
        for row in live:
            by_relay.setdefault(row.relay, []).append((row.created_at, row.expires_at))
    rows = []
    for name in NAMES:
        relay = relays[name]
        field, label = MATERIAL_FIELDS.get(relay.material, ("", ""))
        rows.append(
            RelayRow(
                name, RELAY_LABELS.get(name, name),
                secrets.webhook_url(ctx.settings.public_url, name, project_id), field, label,
                WHERE.get(name, ""), relay.optional, by_relay.get(name, []),
            )
        )  # fmt: skip
    return rows


def _inbound(
    ctx: Ctx,
    *,
    issued: dict[str, str] | None = None,
    error: DomainError | None = None,
    status: int = 200,
) -> Response:
    project_id = ctx.params["project_id"]
    rows = _relay_rows(ctx, project_id)
    return ctx.render(
        "webhooks.html", http_status=status, relays=rows, issued=issued, error=error,
        error_relay=ctx.text("relay") if error else "",
    )  # fmt: skip


@page("/projects/{project_id}/settings/webhooks")
def inbound(ctx: Ctx) -> Response:
    return _inbound(ctx)


@page("/projects/{project_id}/settings/webhooks", method="POST", need="admin")
def make_secret(ctx: Ctx) -> Response:
    """Make or rotate a relay's secret (the old one verifies for 24 hours more)."""
    project_id = ctx.params["project_id"]
    relay = ctx.text("relay")
    fields = {name: ctx.text(name) or None for name in ("secret", "public_key", "topic_arn")}
    request = secrets.NewSecret(relay=relay, **fields)
    with ctx.db.read() as session:
        project_of(session, ctx.user.principal, project_id)  # 404 before any refusal
    try:
        secrets.relay_of(relay)
        with ctx.db.transaction() as session:
            made = secrets.create(
                session, ctx.user.principal, project_id, request, ctx.settings.keyring,
                ctx.settings.public_url,
            )  # fmt: skip
            issued = {"relay": relay, "label": RELAY_LABELS[relay], "url": made.url,
                      "secret": made.secret or ""}  # fmt: skip
    except DomainError as exc:
        if exc.code != "validation_error":
            raise
        return _inbound(ctx, error=exc, status=400)
    return _inbound(ctx, issued=issued, status=201)


@page("/projects/{project_id}/settings/webhooks/remove", method="POST", need="admin")
def remove_secret(ctx: Ctx) -> Response:
    """Remove the relay's secrets: its posts are refused from now on."""
    project_id = ctx.params["project_id"]
    relay = ctx.text("relay")
    with ctx.db.transaction() as session:
        secrets.remove(session, ctx.user.principal, project_id, relay)
    return ctx.redirect(
        f"/projects/{project_id}/settings/webhooks",
        flash=f"Removed the {RELAY_LABELS.get(relay, relay)} secret: its posts are refused now",
    )


# Outbound.


def _outbound(
    ctx: Ctx,
    *,
    created: tuple[str, str, str] | None = None,
    error: DomainError | None = None,
    status: int = 200,
) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        rows = endpoints.listed(session, ctx.user.principal, project_id)
        return ctx.render(
            "outbound_webhooks.html", http_status=status, endpoints=rows, event_types=EVENT_TYPES,
            created=created, error=error, chosen=_chosen_events(ctx) if error else [],
            url_value=ctx.text("url") if error else "",
        )  # fmt: skip


def _chosen_events(ctx: Ctx) -> list[str]:
    """The event boxes ticked (each is its own field ``event.<type>``: a form's fields are
    read one value per name)."""
    return [kind for kind in EVENT_TYPES if ctx.form.get(f"event.{kind}")]


@page("/projects/{project_id}/settings/outbound-webhooks")
def outbound(ctx: Ctx) -> Response:
    return _outbound(ctx)


@page("/projects/{project_id}/settings/outbound-webhooks", method="POST", need="admin")
def create_endpoint(ctx: Ctx) -> Response:
    """A new endpoint; its signing secret is shown on the answer page only."""
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        project_of(session, ctx.user.principal, project_id)
    try:
        with ctx.db.transaction() as session:
            made = endpoints.create(
                session, ctx.user.principal, project_id, ctx.text("url"), _chosen_events(ctx),
                ctx.settings.keyring,
            )  # fmt: skip
            created = (made.webhook.id, made.webhook.url, made.secret)
    except DomainError as exc:
        if exc.code != "validation_error":
            raise
        return _outbound(ctx, error=exc, status=400)
    return _outbound(ctx, created=created, status=201)


def _own(ctx: Ctx, session: Session) -> OutboundWebhook:
    """The endpoint of this page's project (another project's, or workspace's: not found)."""
    row = endpoints.find(session, ctx.user.principal, ctx.params["webhook_id"])
    if row.project_id != ctx.params["project_id"]:
        raise NotFound("webhook")
    return row


@page("/projects/{project_id}/settings/outbound-webhooks/{webhook_id}")
def deliveries(ctx: Ctx) -> Response:
    """The endpoint's delivery log, newest first (``?status=``, ``?cursor=``)."""
    status = ctx.query.get("status") or None
    cursor = ctx.query.get("cursor") or None
    with ctx.db.read() as session:
        row = _own(ctx, session)
        found = endpoints.deliveries(
            session, ctx.user.principal, row.id, limit=paging.DEFAULT_LIMIT, cursor=cursor,
            status=status,
        )  # fmt: skip
        next_url = None
        if found.next_cursor:
            next_url = "?" + urlencode(
                {**({"status": status} if status else {}), "cursor": found.next_cursor}
            )
        return ctx.render(
            "outbound_webhook.html", endpoint=row, deliveries=found.deliveries,
            status=status or "", statuses=endpoints.DELIVERY_STATUSES, next_url=next_url,
        )  # fmt: skip


@page(
    "/projects/{project_id}/settings/outbound-webhooks/{webhook_id}/delete",
    method="POST",
    need="admin",
)
def delete_endpoint(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _own(ctx, session)
        url = row.url
        endpoints.remove(session, ctx.user.principal, row.id)
    return ctx.redirect(
        f"/projects/{project_id}/settings/outbound-webhooks", flash=f"Removed the endpoint {url}"
    )
