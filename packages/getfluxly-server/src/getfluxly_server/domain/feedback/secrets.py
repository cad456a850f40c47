"""Per-project webhook secrets (engine spec section 7): what verifies each relay's posts.

``POST /v1/projects/{project_id}/webhook-secrets`` ``{"relay", ...}`` makes the relay's
secret and shows it once; posting again rotates it: the new one verifies at once and the
old one still does for :data:`ROTATION_OVERLAP` (so the relay's dashboard can be updated
without losing a post). What a relay needs depends on who makes the material:

- GetFluxly makes it for ``postmark``, ``smtp2go``, ``brevo`` (HTTP Basic / Bearer
  credentials) and ``smtp`` (a Standard Webhooks ``whsec_`` secret), and for ``mailtrap``
  unless Mailtrap's own signing secret is given as ``secret``;
- the relay makes it for ``sendgrid`` (``public_key``: the Signed Event Webhook's ECDSA
  public key), ``mailgun`` (``secret``: the HTTP webhook signing key), ``resend``
  (``secret``: the endpoint's ``whsec_`` signing secret);
- ``ses`` has no secret: SNS signs with Amazon's key, and ``topic_arn`` (or ``topic_arns``)
  lists the SNS topics whose messages are this project's.

Material is stored AES-GCM encrypted with the server's keyring, bound to its row; it never
leaves in a response except in the answer that made it (and not even then when the relay
made it: the caller has it). An empty or missing secret never verifies; a relay without a
secret refuses every post.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from getfluxly_server.crypto import Keyring, KeyringError
from getfluxly_server.domain.errors import NotFound, ValidationFailed
from getfluxly_server.domain.feedback.relays import NAMES, Material
from getfluxly_server.domain.feedback.signatures import (
    WHSEC,
    load_p256_public_key,
    standard_webhook_key,
)
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.storage import webhooks as store
from getfluxly_server.storage.models import WebhookSecret, new_id, now

#: How long a rotated secret still verifies.
ROTATION_OVERLAP = timedelta(hours=24)
#: Relays whose secret GetFluxly makes (credentials), and the one that takes ``whsec_``.
GENERATED = frozenset({"postmark", "smtp2go", "brevo"})
_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
_SECRET_MAX = 1_000


@dataclass(frozen=True)
class NewSecret:
    """A request for a relay's secret (fields as the API takes them)."""

    relay: str
    secret: str | None = None
    public_key: str | None = None
    topic_arn: str | None = None
    topic_arns: Sequence[str] | None = None


@dataclass(frozen=True)
class IssuedSecret:
    """A secret just made: its row, the secret to show once (None when the relay made it,
    or for ``ses``), and the URL to give the relay."""

    row: WebhookSecret
    secret: str | None
    url: str


def webhook_url(public_url: str, relay: str, project_id: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{relay}/{project_id}"


def relay_of(name: str) -> str:
    if name not in NAMES:
        raise ValidationFailed(f"relay must be one of {', '.join(NAMES)}", field="relay")
    return name


def _refuse_fields(request: NewSecret, allowed: set[str]) -> None:
    given = {
        name
        for name in ("secret", "public_key", "topic_arn", "topic_arns")
        if getattr(request, name) is not None
    }
    extra = sorted(given - allowed)
    if extra:
        takes = ", ".join(sorted(allowed)) if allowed else "nothing but relay"
        raise ValidationFailed(
            f"{request.relay} does not take {extra[0]} (it takes {takes})", field=extra[0]
        )


def _given_secret(request: NewSecret, what: str) -> str:
    value = (request.secret or "").strip()
    if not value or len(value) > _SECRET_MAX or not value.isprintable():
        raise ValidationFailed(
            f"secret is required for {request.relay}: {what} (1-{_SECRET_MAX} printable "
            "characters)",
            field="secret",
        )
    return value


def _material(request: NewSecret) -> tuple[str, dict[str, list[str]], bool]:
    """The secret to store, the config, and whether GetFluxly made the secret (shown once)."""
    relay = request.relay
    if relay in GENERATED:
        _refuse_fields(request, set())
        return f"gfwh_{secrets.token_urlsafe(32)}", {}, True
    if relay == "smtp":
        _refuse_fields(request, set())
        return WHSEC + base64.b64encode(secrets.token_bytes(32)).decode(), {}, True
    if relay == "mailtrap":
        _refuse_fields(request, {"secret"})
        if request.secret is None:
            return f"gfwh_{secrets.token_urlsafe(32)}", {}, True
        return _given_secret(request, "the webhook's signing secret from Mailtrap"), {}, False
    if relay == "mailgun":
        _refuse_fields(request, {"secret"})
        return _given_secret(request, "the HTTP webhook signing key from Mailgun"), {}, False
    if relay == "resend":
        _refuse_fields(request, {"secret"})
        value = _given_secret(request, "the endpoint's signing secret from Resend (whsec_...)")
        if standard_webhook_key(value) is None:
            raise ValidationFailed(
                "secret must be Resend's signing secret: whsec_ followed by base64",
                field="secret",
            )
        return value, {}, False
    if relay == "sendgrid":
        _refuse_fields(request, {"public_key"})
        key = (request.public_key or "").strip()
        try:
            if not key or len(key) > 4_000:
                raise ValueError("is required")
            load_p256_public_key(key)
        except ValueError as exc:
            raise ValidationFailed(
                f"public_key {exc}: copy the verification key SendGrid shows once the Signed "
                "Event Webhook is enabled",
                field="public_key",
            ) from None
        return key, {}, False
    # ses
    _refuse_fields(request, {"topic_arn", "topic_arns"})
    arns = [request.topic_arn] if request.topic_arn is not None else []
    arns += list(request.topic_arns or [])
    field = "topic_arns" if request.topic_arn is None and request.topic_arns else "topic_arn"
    if not arns or not all(isinstance(a, str) and _TOPIC_ARN.fullmatch(a) for a in arns):
        raise ValidationFailed(
            "ses takes topic_arn (or topic_arns): the ARN of each SNS topic SES publishes "
            "this project's feedback to, like arn:aws:sns:us-east-1:123456789012:ses-feedback",
            field=field,
        )
    return "", {"topic_arns": sorted(set(arns))}, False


def create(
    session: Session,
    principal: Principal,
    project_id: str,
    request: NewSecret,
    keyring: Keyring,
    public_url: str,
) -> IssuedSecret:
    """Make the relay's secret (rotating any it had: those verify for 24 hours more)."""
    project_of(session, principal, project_id)
    relay_of(request.relay)
    value, config, shown = _material(request)
    moment = now()
    store.retire(session, project_id, request.relay, moment + ROTATION_OVERLAP)
    row = WebhookSecret(
        id=new_id("whs"), project_id=project_id, relay=request.relay, secret="",
        config=config, created_at=moment, expires_at=None,
    )  # fmt: skip
    row.secret = keyring.encrypt(json.dumps({"secret": value}), context=row.id)
    store.add_secret(session, row)
    return IssuedSecret(
        row, value if shown else None, webhook_url(public_url, request.relay, project_id)
    )


def listed(session: Session, principal: Principal, project_id: str) -> Sequence[WebhookSecret]:
    """The project's secrets still valid (current ones, and rotated ones until they end)."""
    project_of(session, principal, project_id)
    return store.live_secrets(session, project_id, None, now())


def remove(session: Session, principal: Principal, project_id: str, relay: str) -> None:
    """Delete every secret of the relay: its posts are refused from now on."""
    project_of(session, principal, project_id)
    relay_of(relay)
    if not store.remove_secrets(session, project_id, relay):
        raise NotFound("webhook secret for this relay")


def materials(
    session: Session, project_id: str, relay: str, keyring: Keyring, moment: datetime
) -> list[Material] | None:
    """What verifies the relay's posts for the project now (decrypted); None when there is
    no such project. A secret that does not decrypt (a key dropped from the keyring) is
    left out: it verifies nothing."""
    if not store.project_exists(session, project_id):
        return None
    found = []
    for row in store.live_secrets(session, project_id, relay, moment):
        try:
            value = json.loads(keyring.decrypt(row.secret, context=row.id)).get("secret", "")
        except (KeyringError, ValueError, AttributeError):
            continue
        found.append(Material(secret=value if isinstance(value, str) else "", config=row.config))
    return found


def rotate_keys(session: Session, keyring: Keyring) -> int:
    """Re-encrypt every webhook secret not under the keyring's primary key; how many."""
    count = 0
    for row in store.every_secret(session):
        if keyring.needs_rotation(row.secret):
            plain = keyring.decrypt(row.secret, context=row.id)
            row.secret = keyring.encrypt(plain, context=row.id)
            count += 1
    return count
