"""Email providers: validate, verify the connection before saving, store the secret
encrypted, and send test messages through the worker.

Verification does network I/O, so it happens between two short transactions (never while a
database lock is held): the API reads what it needs, calls :func:`verify`, then saves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from fluxmail import FluxMailException
from fluxmail.addresses import parse_address
from getfluxly_server.crypto import Keyring, KeyringError
from getfluxly_server.delivery.base import (
    BuildContext,
    DeliveryError,
    OutgoingEmail,
    ProviderClient,
    ProviderKind,
)
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.queue.kinds import JobKind, JobPayload, Queue
from getfluxly_server.queue.retry import RetryPolicy
from getfluxly_server.storage import providers as store
from getfluxly_server.storage.models import EmailProvider, new_id, now

COMMON = ("display_name", "from_email", "from_name", "reply_to")
TEST_SEND_JOB = "provider.test_send"


class TestSend(JobPayload):
    """Send a test message through a provider to ``to`` (an address already checked)."""

    __test__ = False  # not a pytest test class, whatever its name

    provider_id: str
    to: str


#: Someone is waiting for the outcome: transactional, and never retried behind their back
#: (they can press the button again).
TEST_SEND = JobKind(
    TEST_SEND_JOB, TestSend, queue=Queue.TRANSACTIONAL, retry=RetryPolicy(max_attempts=1)
)


@dataclass(frozen=True)
class Draft:
    """A provider's settings, checked but not yet verified or saved."""

    kind: ProviderKind
    display_name: str
    from_email: str
    from_name: str | None
    reply_to: str | None
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def client(self, context: BuildContext) -> ProviderClient:
        return self.kind.build(self.config, self.secrets, context)


def _text(body: Mapping[str, Any], name: str, *, required: bool, limit: int = 320) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ValidationFailed(f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationFailed(f"{name} must be text of at most {limit} characters", field=name)
    if not value.isprintable():
        raise ValidationFailed(f"{name} must be one line, without control characters", field=name)
    return value.strip()


def _address(body: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = _text(body, name, required=required)
    if value is None:
        return None
    try:
        return parse_address(value, role=name).addr_spec
    except FluxMailException as exc:
        raise ValidationFailed(f"{name}: {exc}", field=name) from None


def parse(body: Mapping[str, Any], base: Draft | None = None) -> Draft:
    """Check an API body (whole for create; only what changes for PATCH, over ``base``)."""
    if not isinstance(body, Mapping):
        raise ValidationFailed("The body must be a JSON object")
    name = body.get("provider", base.kind.name if base else "smtp")
    kind = PROVIDERS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValidationFailed(f"provider must be one of {', '.join(PROVIDERS)}", field="provider")
    if base is not None and kind is not base.kind:
        raise ValidationFailed("provider cannot change; create a new one", field="provider")
    known = {*COMMON, "provider", *(f.name for f in kind.fields)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValidationFailed(f"Unknown fields for {kind.name}: {', '.join(unknown)}")
    whole = base is None
    draft = base or Draft(kind, "", "", None, None)
    changes: dict[str, Any] = {}
    for key, required, is_address in (
        ("display_name", True, False), ("from_email", True, True),
        ("from_name", False, False), ("reply_to", False, True),
    ):  # fmt: skip
        if whole or key in body:
            read = _address if is_address else _text
            changes[key] = read(body, key, required=required and (whole or key in body))
    config, secrets = dict(draft.config), dict(draft.secrets)
    for spec in kind.fields:
        if not whole and spec.name not in body:
            continue
        value = _field(body.get(spec.name), spec)
        if value is None:
            if spec.required:
                raise ValidationFailed(f"{spec.name} is required", field=spec.name)
            (secrets if spec.secret else config).pop(spec.name, None)
        elif spec.secret:
            secrets[spec.name] = value
        else:
            config[spec.name] = value
    return replace(draft, config=config, secrets=secrets, **changes)


def _field(value: Any, spec: Any) -> Any:
    if value is None or value == "":
        return None
    if spec.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationFailed(f"{spec.name} must be a whole number", field=spec.name)
        if (spec.low is not None and value < spec.low) or (
            spec.high is not None and value > spec.high
        ):
            raise ValidationFailed(
                f"{spec.name} must be from {spec.low} to {spec.high}", field=spec.name
            )
        return value
    if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\0"):
        raise ValidationFailed(f"{spec.name} must be one line of text", field=spec.name)
    if spec.choices and value not in spec.choices:
        raise ValidationFailed(
            f"{spec.name} must be one of {', '.join(spec.choices)}", field=spec.name
        )
    return value


def verify(draft: Draft, context: BuildContext) -> list[str]:
    """Connect and authenticate as the provider would for a send; returns warnings."""
    try:
        return draft.client(context).verify()
    except DeliveryError as exc:
        raise DomainError(
            exc.code, exc.detail, extra={"field": exc.field} if exc.field else None
        ) from None


def save_new(
    session: Session, principal: Principal, project_id: str, draft: Draft, keyring: Keyring
) -> EmailProvider:
    project_of(session, principal, project_id)
    provider_id = new_id("prv")
    row = EmailProvider(
        id=provider_id,
        project_id=project_id,
        provider=draft.kind.name,
        display_name=draft.display_name,
        from_email=draft.from_email,
        from_name=draft.from_name,
        reply_to=draft.reply_to,
        config=draft.config,
        secret=keyring.encrypt(json.dumps(draft.secrets), context=provider_id),
        verified_at=now(),
    )
    return store.add(session, row)


def find(session: Session, principal: Principal, provider_id: str) -> EmailProvider:
    """The provider if the caller may see it: same workspace, and same project for project keys."""
    row = store.get_in_workspace(session, principal.workspace_id, provider_id)
    if row is None or (principal.project_id is not None and row.project_id != principal.project_id):
        raise NotFound("email provider")
    return row


def draft_of(row: EmailProvider, keyring: Keyring) -> Draft:
    """The stored provider as a Draft (secrets decrypted, for building a client)."""
    try:
        secrets = json.loads(keyring.decrypt(row.secret, context=row.id))
    except KeyringError as exc:
        raise DomainError(
            "secret_unreadable",
            f"This provider's credentials cannot be decrypted: {exc}. Re-enter them with "
            "PATCH, or restore the key to GETFLUXLY_ENCRYPTION_KEYS",
        ) from None
    return Draft(
        PROVIDERS[row.provider], row.display_name, row.from_email, row.from_name, row.reply_to,
        dict(row.config), secrets,
    )  # fmt: skip


def connection_changed(before: Draft, after: Draft) -> bool:
    return before.config != after.config or before.secrets != after.secrets


def apply(row: EmailProvider, draft: Draft, keyring: Keyring, *, verified: bool) -> None:
    row.display_name, row.from_email = draft.display_name, draft.from_email
    row.from_name, row.reply_to = draft.from_name, draft.reply_to
    row.config = draft.config
    row.secret = keyring.encrypt(json.dumps(draft.secrets), context=row.id)
    if verified:
        row.verified_at = now()


def test_email(draft: Draft, to: str) -> OutgoingEmail:
    """The message POST /v1/email-providers/{id}/test sends."""
    return OutgoingEmail(
        from_email=draft.from_email,
        from_name=draft.from_name,
        reply_to=draft.reply_to,
        to=(to,),
        subject=f"GetFluxly test email from {draft.display_name}",
        text=(
            f"This is a test email sent by GetFluxly through the provider "
            f'"{draft.display_name}" ({draft.kind.label}).\n\nIf you can read it, the '
            "provider is connected and can deliver mail.\n"
        ),
    )


def check_recipient(body: Mapping[str, Any]) -> str:
    address = _address(body, "to", required=True)
    assert address is not None
    return address
