"""The message ledger's set-up for delivery tests and benchmarks.

:func:`queue_messages` records messages through the ledger's own set-based enqueue (what a
broadcast uses; ``POST /v1/messages`` records one at a time through the same code).
:func:`add_provider` stores a provider as the API does (settings checked
by the provider's own model, the secret encrypted with the server's keyring) without the
connection check, so a test can point it at a relay that is scripted to fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import providers, tenancy
from getfluxly_server.domain.messages import enqueue_many
from getfluxly_server.domain.messages.enqueue import BulkRecipient, Content, Source
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    EmailProvider,
    Profile,
    Template,
    new_id,
)

__all__ = ["add_profile", "add_provider", "add_template", "make_project", "queue_messages"]


def make_project(db: Database, workspace_id: str, name: str = "Delivery tests") -> str:
    with db.transaction() as session:
        return tenancy.create_project(session, workspace_id, name).project.id


def add_provider(
    db: Database,
    keyring: Keyring,
    project_id: str,
    body: Mapping[str, Any],
    *,
    max_connections: int | None = None,
    rate_per_second: float | None = None,
    rate_per_hour: int | None = None,
) -> str:
    """A provider from an API body (``{"provider": "smtp", "smtp_host": ...}``); its id."""
    draft = providers.parse({"display_name": "Test relay", **body})
    with db.transaction() as session:
        row = EmailProvider(
            id=new_id("prv"), project_id=project_id, provider=draft.kind.name,
            display_name=draft.display_name, from_email=draft.from_email,
            from_name=draft.from_name, reply_to=draft.reply_to, config=draft.config,
            secret="", max_connections=max_connections, rate_per_second=rate_per_second,
            rate_per_hour=rate_per_hour,
        )  # fmt: skip
        row.secret = keyring.encrypt(json.dumps(draft.secrets), context=row.id)
        session.add(row)
        return row.id


def smtp_body(host: str, port: int, **extra: Any) -> dict[str, Any]:
    """The API body of a plaintext SMTP relay (the testkit server's default login)."""
    return {
        "provider": "smtp", "from_email": "hello@example.com", "from_name": "Tests",
        "smtp_host": host, "smtp_port": port, "smtp_secure": "none",
        "username": "user@example.com", "password": "s3cret-pass", **extra,
    }  # fmt: skip


def add_template(
    db: Database, project_id: str, subject: str, html: str | None = None, text: str | None = None
) -> str:
    with db.transaction() as session:
        row = Template(
            id=new_id("tpl"), project_id=project_id, name=new_id("name"), subject=subject,
            html=html, text=text,
        )  # fmt: skip
        session.add(row)
        return row.id


def add_profile(db: Database, project_id: str, traits: Mapping[str, Any]) -> str:
    with db.transaction() as session:
        row = Profile(id=new_id("prf"), project_id=project_id, traits=dict(traits))
        session.add(row)
        return row.id


def queue_messages(
    db: Database,
    project_id: str,
    provider_id: str | None,
    recipients: Iterable[str],
    *,
    subject: str | None = "Hello {{ profile.email }}",
    html: str | None = None,
    text: str | None = "Hi {{ profile.email }}, this is message {{ data.n }}.",
    template_id: str | None = None,
    profile_id: str | None = None,
    data: Mapping[str, Any] | None = None,
    data_for: Callable[[int], Mapping[str, Any]] | None = None,
) -> list[str]:
    """One transactional message per recipient, due now, recorded by the ledger's own
    ``enqueue_many`` (which wakes the delivery workers at commit); their ids, in order.
    Each message's ``data`` is ``data_for(n)`` for the n-th recipient if given, else
    ``{"n": n, **data}``. ``provider_id`` None: the project's default provider."""
    tag = new_id("test")
    bulk = [
        BulkRecipient(
            email=address,
            idempotency_key=f"{tag}-{n}",
            profile_id=profile_id,
            data=dict(data_for(n)) if data_for else {"n": n, **(data or {})},
        )
        for n, address in enumerate(recipients)
    ]
    content = (
        Content(template_id=template_id)
        if template_id
        else Content(subject=subject, html=html, text=text)
    )
    with db.transaction() as session:
        result = enqueue_many(session, project_id, bulk, content, Source(provider_id=provider_id))
    if result.invalid or len(result.created) != len(bulk):
        raise ValueError(f"not every message was queued: {result}")
    return list(result.created)
