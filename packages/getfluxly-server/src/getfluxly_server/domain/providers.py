"""Email providers: validate, verify the connection before saving, store the secret
encrypted, send test messages, and keep each project's default provider.

Verification does network I/O, so it happens between two short transactions (never while a
database lock is held): the API reads what it needs, calls :func:`verify`, then saves.

The default provider (engine spec section 2) is where a project's mail goes unless a call or
step names another: the first provider created in the project becomes it, ``PATCH
/v1/projects/{id}`` changes it (:func:`set_default`: one of the project's own providers,
never null while the project has any), and deleting it hands the role to the oldest
remaining provider (null once none is left). Every change to a project's providers locks
the project's row first, so two of them at once (a create and a delete, two deletes) leave
the default pointing at a provider that exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from getfluxly_server.crypto import Keyring, KeyringError
from getfluxly_server.delivery.base import (
    BuildContext,
    DeliveryError,
    DeliveryResult,
    OutgoingEmail,
    ProviderClient,
    ProviderKind,
)
from getfluxly_server.delivery.registry import PROVIDERS
from getfluxly_server.delivery.sender import sender_mailbox
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed, invalid_input
from getfluxly_server.domain.provider_settings import LIMITS, NewProvider, changes_model
from getfluxly_server.domain.tenancy import Principal, project_of
from getfluxly_server.queue.kinds import JobKind, JobPayload, Queue
from getfluxly_server.queue.retry import RetryPolicy
from getfluxly_server.storage import providers as store
from getfluxly_server.storage.models import EmailProvider, Project, new_id, now

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
    #: Sending limits across every worker process (None: no limit of that kind); changing
    #: them needs no new verification.
    max_connections: int | None = None
    rate_per_second: float | None = None
    rate_per_hour: int | None = None

    def client(self, context: BuildContext) -> ProviderClient:
        return self.kind.build(self.config, self.secrets, context)


_NEW: TypeAdapter[BaseModel] = TypeAdapter(NewProvider)


def parse(body: Mapping[str, Any] | BaseModel, base: Draft | None = None) -> Draft:
    """Check a body (whole for create; only what changes for PATCH, over ``base``) with the
    kind's model (``provider_settings``), then the sender as the send path checks it."""
    if isinstance(body, BaseModel):
        body = body.model_dump(exclude_unset=True)
    if not isinstance(body, Mapping):
        raise ValidationFailed("The body must be a JSON object")
    body = dict(body)
    try:
        if base is None:
            values = _NEW.validate_python(body).model_dump()
            kind = PROVIDERS[values["provider"]]
        else:
            if body.get("provider", base.kind.name) != base.kind.name:
                raise ValidationFailed("provider cannot change; create a new one", field="provider")
            kind = base.kind
            values = changes_model(kind.name).model_validate(body).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise invalid_input(exc.errors(), body) from None
    draft = base or Draft(kind, "", "", None, None)
    changes = {key: values[key] for key in (*COMMON, *LIMITS) if key in values}
    config, secrets = dict(draft.config), dict(draft.secrets)
    for spec in kind.fields:
        if spec.name not in values:
            continue
        value = values[spec.name]
        if value is None:
            (secrets if spec.secret else config).pop(spec.name, None)
        elif spec.secret:
            secrets[spec.name] = value
        else:
            config[spec.name] = value
    parsed = replace(draft, config=config, secrets=secrets, **changes)
    check_sender(parsed)
    return parsed


def check_sender(draft: Draft) -> None:
    """The sender checked by the very function every send builds From: with, so what is
    saved can be sent (a from_name holding an RFC 2047 encoded word is refused here)."""
    try:
        sender_mailbox(draft.from_email, draft.from_name)
    except DeliveryError as exc:
        raise ValidationFailed(exc.detail, field=exc.field) from None


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
        max_connections=draft.max_connections,
        rate_per_second=draft.rate_per_second,
        rate_per_hour=draft.rate_per_hour,
    )
    project = store.lock_project(session, project_id)
    store.add(session, row)
    if project.default_provider_id is None:  # the project's first provider
        project.default_provider_id = provider_id
    return row


def find(
    session: Session, principal: Principal, provider_id: str, *, lock: bool = False
) -> EmailProvider:
    """The provider if the caller may see it: same workspace, and same project for project keys.
    ``lock``: its row locked until the transaction ends (a change or a delete: one racing
    with a delete then finds nothing, rather than failing on a row that went)."""
    row = store.get_in_workspace(session, principal.workspace_id, provider_id, lock=lock)
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
        dict(row.config), secrets, row.max_connections, row.rate_per_second, row.rate_per_hour,
    )  # fmt: skip


def connection_changed(before: Draft, after: Draft) -> bool:
    return before.config != after.config or before.secrets != after.secrets


def apply(row: EmailProvider, draft: Draft, keyring: Keyring, *, verified: bool) -> None:
    row.display_name, row.from_email = draft.display_name, draft.from_email
    row.from_name, row.reply_to = draft.from_name, draft.reply_to
    row.config = draft.config
    row.max_connections, row.rate_per_second = draft.max_connections, draft.rate_per_second
    row.rate_per_hour = draft.rate_per_hour
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


def send_test(draft: Draft, to: str, context: BuildContext) -> DeliveryResult:
    """Send the test message through the provider now (blocking: network I/O) and return the
    provider's answer; a refusal is a DomainError with the provider's code."""
    try:
        return draft.client(context).send(test_email(draft, to))
    except DeliveryError as exc:
        raise DomainError(exc.code, exc.detail) from None


def save_changes(
    session: Session, principal: Principal, provider_id: str, draft: Draft, keyring: Keyring,
    *, verified: bool,
) -> EmailProvider:  # fmt: skip
    """Store ``draft`` over the provider (``verified``: its connection was just checked)."""
    row = find(session, principal, provider_id, lock=True)
    apply(row, draft, keyring, verified=verified)
    session.flush()  # the row as stored, updated_at included
    return row


def providers_of(session: Session, principal: Principal, project_id: str) -> list[EmailProvider]:
    """The project's providers, oldest first (not_found for a project the caller may not see)."""
    project_of(session, principal, project_id)
    return list(store.list_for_project(session, project_id))


def remove(session: Session, principal: Principal, provider_id: str) -> None:
    """Delete the provider; if it was its project's default, the oldest remaining provider
    becomes the default (none left: no default)."""
    row = find(session, principal, provider_id, lock=True)
    project = store.lock_project(session, row.project_id)
    store.delete(session, row)
    session.flush()
    if project.default_provider_id == provider_id:
        successor = store.oldest_in_project(session, row.project_id)
        project.default_provider_id = successor.id if successor is not None else None


def set_default(
    session: Session, principal: Principal, project_id: str, provider_id: str
) -> Project:
    """Make ``provider_id`` the project's default provider. It must be one of the project's
    own: any other id (unknown, deleted, another project's or another tenant's, all answered
    alike) is a validation_error naming ``default_provider_id``."""
    project_of(session, principal, project_id)  # not_found for a project the caller can't see
    project = store.lock_project(session, project_id)
    row = store.get_in_workspace(session, principal.workspace_id, provider_id)
    if row is None or row.project_id != project_id:
        raise ValidationFailed(
            f"default_provider_id: {provider_id!r} is not an email provider of this project; "
            f"list them with GET /v1/projects/{project_id}/email-providers",
            field="default_provider_id",
        )
    project.default_provider_id = row.id
    return project


def default_provider(session: Session, project: Project) -> EmailProvider | None:
    """The provider the project's mail goes through unless a call or step names another
    (None: the project has no provider yet)."""
    if project.default_provider_id is None:
        return None
    row = store.get(session, project.default_provider_id)
    return row if row is not None and row.project_id == project.id else None


def rotate_secrets(session: Session, keyring: Keyring) -> int:
    """Re-encrypt every provider secret not under the keyring's primary key (so old keys can
    be dropped); returns how many."""
    count = 0
    for row in store.every(session):
        if keyring.needs_rotation(row.secret):
            apply(row, draft_of(row, keyring), keyring, verified=False)
            count += 1
    return count


#: Every provider kind, by the name the API uses (for the API's response models).
KINDS = PROVIDERS
#: What the composition root lends providers (timeouts, network policy); the API passes it.
Context = BuildContext
