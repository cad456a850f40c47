"""Rows of the message ledger for delivery tests, written the way the ledger writes them.

Until messages can be created through ``POST /v1/messages`` everywhere a delivery test needs
them, :func:`queue_messages` inserts what the ledger's enqueue records: a ``queued`` message
due now, its provider resolved, and a ``queued`` history row, then wakes the delivery workers
as an enqueue does. :func:`add_provider` stores a provider as the API does (settings checked
by the provider's own model, the secret encrypted with the server's keyring) without the
connection check, so a test can point it at a relay that is scripted to fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import providers, tenancy
from getfluxly_server.storage import outbox
from getfluxly_server.storage.db import Database
from getfluxly_server.storage.models import (
    EmailProvider,
    Message,
    MessageHistory,
    Profile,
    Template,
    new_id,
    now,
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
    """One queued message per recipient, due now; their ids. Each message's ``data`` is
    ``data_for(n)`` for the n-th recipient if given, else ``{"n": n, **data}``."""
    moment = now()
    ids: list[str] = []
    with db.transaction() as session:
        messages, history = [], []
        for n, address in enumerate(recipients):
            message_id = new_id("msg")
            ids.append(message_id)
            messages.append(
                {
                    "id": message_id, "project_id": project_id, "status": "queued",
                    "to_email": address, "profile_id": profile_id, "provider_id": provider_id,
                    "template_id": template_id, "transactional": True,
                    "subject": None if template_id else subject,
                    "html": None if template_id else html,
                    "text_body": None if template_id else text,
                    "data": dict(data_for(n)) if data_for else {"n": n, **(data or {})},
                    "tags": {}, "origin": "api",
                    "idempotency_key": message_id, "attempts": 0, "due_at": moment,
                    "created_at": moment, "updated_at": moment,
                }
            )  # fmt: skip
            history.append({"message_id": message_id, "status": "queued", "at": moment})
        session.bulk_insert_mappings(Message, messages)
        session.bulk_insert_mappings(MessageHistory, history)
        outbox.wake(session)
    return ids
