"""Email providers (workspace key): verified before they are saved, secrets never shown."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from getfluxly_server.api import views
from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import build_context, database, keyring, settings
from getfluxly_server.crypto import Keyring
from getfluxly_server.delivery.base import BuildContext
from getfluxly_server.domain import providers as domain
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.tenancy import project_of
from getfluxly_server.queue.worker import wait_for
from getfluxly_server.settings import Settings
from getfluxly_server.storage import providers as store
from getfluxly_server.storage.db import Database

router = APIRouter(prefix="/v1", tags=["email providers"])
DB = Annotated[Database, Depends(database)]
Keys = Annotated[Keyring, Depends(keyring)]
Context = Annotated[BuildContext, Depends(build_context)]
JSONBody = Annotated[dict[str, Any], Body()]

EXAMPLE = {
    "provider": "smtp",
    "display_name": "Postmark Production",
    "from_email": "hello@yourdomain.com",
    "from_name": "Acme",
    "reply_to": "support@yourdomain.com",
    "smtp_host": "smtp.postmarkapp.com",
    "smtp_port": 587,
    "smtp_secure": "starttls",
    "username": "TOKEN",
    "password": "TOKEN",
}


@router.post(
    "/projects/{project_id}/email-providers",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
)
def create_provider(
    project_id: str, body: JSONBody, who: WorkspaceKey, db: DB, keys: Keys, context: Context
) -> dict[str, Any]:
    """Connect (EHLO and AUTH over the chosen TLS mode, or the provider's API) before saving;
    the first failure answers with a code that says what happened and what to try."""
    with db.read() as session:
        project_of(session, who, project_id)  # 404 before any network I/O
    draft = domain.parse(body)
    warnings = domain.verify(draft, context)
    with db.transaction() as session:
        row = domain.save_new(session, who, project_id, draft, keys)
        return {"email_provider": views.provider(row, warnings)}


@router.get("/projects/{project_id}/email-providers")
def list_providers(project_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        project_of(session, who, project_id)
        return {
            "email_providers": [
                views.provider(p) for p in store.list_for_project(session, project_id)
            ]
        }


@router.get("/email-providers/{provider_id}")
def get_provider(provider_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.read() as session:
        return {"email_provider": views.provider(domain.find(session, who, provider_id))}


@router.patch("/email-providers/{provider_id}")
def update_provider(
    provider_id: str, body: JSONBody, who: WorkspaceKey, db: DB, keys: Keys, context: Context
) -> dict[str, Any]:
    """Change some fields; a change to the connection or credentials is verified first."""
    with db.read() as session:
        before = domain.draft_of(domain.find(session, who, provider_id), keys)
    after = domain.parse(body, before)
    changed = domain.connection_changed(before, after)
    warnings = domain.verify(after, context) if changed else []
    with db.transaction() as session:
        row = domain.find(session, who, provider_id)
        domain.apply(row, after, keys, verified=changed)
        session.flush()
        return {"email_provider": views.provider(row, warnings)}


@router.delete("/email-providers/{provider_id}")
def delete_provider(provider_id: str, who: WorkspaceKey, db: DB) -> dict[str, Any]:
    with db.transaction() as session:
        store.delete(session, domain.find(session, who, provider_id))
        return {"deleted": True, "id": provider_id}


@router.post("/email-providers/{provider_id}/test")
def test_provider(
    provider_id: str,
    body: JSONBody,
    who: WorkspaceKey,
    db: DB,
    config: Annotated[Settings, Depends(settings)],
) -> dict[str, Any]:
    """Send a real test message through the provider (by a worker) and answer its outcome."""
    to = domain.check_recipient(body)
    with db.transaction() as session:
        domain.find(session, who, provider_id)
        job_id = domain.TEST_SEND.enqueue(session, domain.TestSend(provider_id=provider_id, to=to))
    finished = wait_for(db, job_id, config.test_send_timeout)
    if finished is None:
        raise DomainError(
            "timeout",
            f"No worker finished the test send within {config.test_send_timeout:g} s; is a "
            "worker running (getfluxly serve, or getfluxly worker)?",
            extra={"job_id": job_id},
        )
    outcome: dict[str, Any] = finished.result or {}
    if not outcome.get("accepted"):
        raise DomainError(
            str(outcome.get("error", "send_failed")),
            str(outcome.get("detail", finished.last_error)),
        )
    return {"accepted": True, "to": to, **{k: v for k, v in outcome.items() if k != "accepted"}}
