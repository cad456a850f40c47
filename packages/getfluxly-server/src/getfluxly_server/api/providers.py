"""Email providers (workspace key): verified before they are saved, secrets never shown.

A test send (``POST /v1/email-providers/{id}/test``) goes out from the request itself: the
message is handed to the provider in a worker thread, and the answer waits for the
provider's reply for at most ``GETFLUXLY_TEST_SEND_TIMEOUT`` seconds (then ``timeout``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast

import anyio
import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, create_model

from getfluxly_server.api.auth import WorkspaceKey
from getfluxly_server.api.deps import DB, build_context, keyring, settings
from getfluxly_server.api.models import Response, Timestamp
from getfluxly_server.crypto import Keyring
from getfluxly_server.domain import providers as domain
from getfluxly_server.domain.errors import DomainError
from getfluxly_server.domain.provider_settings import NewProvider, ProviderChanges, TestSend
from getfluxly_server.settings import Settings
from getfluxly_server.storage.models import EmailProvider

router = APIRouter(prefix="/v1", tags=["email providers"])
Keys = Annotated[Keyring, Depends(keyring)]
Context = Annotated[domain.Context, Depends(build_context)]
Config = Annotated[Settings, Depends(settings)]

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


def _view_model(name: str) -> type[Response]:
    """How a provider of kind ``name`` looks in answers: its settings but never a secret
    (``secret_set`` says one is stored); a setting not stored is left out."""
    kind = domain.KINDS[name]
    settings_ = {
        spec.name: ((int if spec.kind is int else str) | None, None)
        for spec in kind.fields
        if not spec.secret
    }
    fields: dict[str, Any] = {
        "id": (str, ...), "project_id": (str, ...), "provider": (cast(Any, Literal)[name], ...),
        "display_name": (str, ...), "from_email": (str, ...), "from_name": (str | None, ...),
        "reply_to": (str | None, ...), **settings_,
        # The sending limits across every worker process (null: no limit of that kind).
        "max_connections": (int | None, ...), "rate_per_second": (float | None, ...),
        "rate_per_hour": (int | None, ...), "secret_set": (bool, ...),
        "verified_at": (Timestamp | None, ...), "created_at": (Timestamp, ...),
        "updated_at": (Timestamp, ...),
        # On create and update only: what the caller should know (e.g. plaintext to a
        # public host).
        "warnings": (list[str] | None, None),
    }  # fmt: skip
    class_name = "".join(part.capitalize() for part in name.split("_")) + "ProviderView"
    return create_model(class_name, __base__=Response, **fields)


_VIEWS = {name: _view_model(name) for name in domain.KINDS}

if TYPE_CHECKING:  # built at run time from the provider kinds; mypy sees their base
    ProviderView = Response
    NewProviderBody = BaseModel
    ProviderChangesBody = BaseModel
else:
    #: A provider in an answer: the view of its kind.
    ProviderView = Annotated[
        Union[tuple(_VIEWS.values())],  # noqa: UP007 - a union built from a list
        Field(discriminator="provider"),
    ]
    NewProviderBody = NewProvider
    ProviderChangesBody = ProviderChanges


class OneProvider(Response):
    email_provider: ProviderView


class ProviderList(Response):
    email_providers: list[ProviderView]


class Deleted(Response):
    deleted: bool
    id: str


class TestSendOutcome(Response):
    """The provider accepted the test message: its reply and how long it took."""

    __test__ = False  # not a pytest class, whatever its name

    accepted: bool
    to: str
    #: The relay's or API's answer (``250 2.0.0 Ok: queued as ...``).
    reply: str
    provider_message_id: str | None
    elapsed_ms: int


def _view(row: EmailProvider, warnings: list[str] | None = None) -> Any:
    """The row as its kind's view; only what is stored (and ``warnings`` if given) is set."""
    fields: dict[str, Any] = {
        "id": row.id, "project_id": row.project_id, "provider": row.provider,
        "display_name": row.display_name, "from_email": row.from_email,
        "from_name": row.from_name, "reply_to": row.reply_to, **row.config,
        "max_connections": row.max_connections, "rate_per_second": row.rate_per_second,
        "rate_per_hour": row.rate_per_hour, "secret_set": True,
        "verified_at": row.verified_at, "created_at": row.created_at, "updated_at": row.updated_at,
    }  # fmt: skip
    if warnings is not None:
        fields["warnings"] = warnings
    return _VIEWS[row.provider](**fields)


#: Test sends in flight at once per API process. Each holds a thread until the provider
#: answers (or GETFLUXLY_SMTP_TIMEOUT), so they get threads of their own rather than the pool
#: every other endpoint runs in; more wait for a turn, within their own time limit.
TEST_SEND_THREADS = 8


def _test_send_threads(request: Request) -> anyio.CapacityLimiter:
    """This app's limiter (made on first use, inside the app's event loop)."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "test_send_threads", None)
    if limiter is None:
        limiter = state.test_send_threads = anyio.CapacityLimiter(TEST_SEND_THREADS)
    return limiter


#: Answers leave out what was never set (a kind's optional settings, and warnings on reads).
SPARSE: dict[str, Any] = {"response_model_exclude_unset": True}


@router.post(
    "/projects/{project_id}/email-providers",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
    **SPARSE,
)
def create_provider(
    project_id: str,
    body: Annotated[NewProviderBody, Body()],
    who: WorkspaceKey,
    db: DB,
    keys: Keys,
    context: Context,
) -> OneProvider:
    """Connect (EHLO and AUTH over the chosen TLS mode, or the provider's API) before saving;
    the first failure answers with a code that says what happened and what to try."""
    with db.read() as session:
        domain.providers_of(session, who, project_id)  # 404 before any network I/O
    draft = domain.parse(body)
    warnings = domain.verify(draft, context)
    with db.transaction() as session:
        row = domain.save_new(session, who, project_id, draft, keys)
        return OneProvider(email_provider=_view(row, warnings))


@router.get("/projects/{project_id}/email-providers", **SPARSE)
def list_providers(project_id: str, who: WorkspaceKey, db: DB) -> ProviderList:
    with db.read() as session:
        rows = domain.providers_of(session, who, project_id)
        return ProviderList(email_providers=[_view(p) for p in rows])


@router.get("/email-providers/{provider_id}", **SPARSE)
def get_provider(provider_id: str, who: WorkspaceKey, db: DB) -> OneProvider:
    with db.read() as session:
        return OneProvider(email_provider=_view(domain.find(session, who, provider_id)))


@router.patch("/email-providers/{provider_id}", **SPARSE)
def update_provider(
    provider_id: str, body: ProviderChangesBody, who: WorkspaceKey, db: DB, keys: Keys,
    context: Context,
) -> OneProvider:  # fmt: skip
    """Change some fields; a change to the connection or credentials is verified first."""
    with db.read() as session:
        before = domain.draft_of(domain.find(session, who, provider_id), keys)
    after = domain.parse(body, before)
    changed = domain.connection_changed(before, after)
    warnings = domain.verify(after, context) if changed else []
    with db.transaction() as session:
        row = domain.save_changes(session, who, provider_id, after, keys, verified=changed)
        return OneProvider(email_provider=_view(row, warnings))


@router.delete("/email-providers/{provider_id}")
def delete_provider(provider_id: str, who: WorkspaceKey, db: DB) -> Deleted:
    with db.transaction() as session:
        domain.remove(session, who, provider_id)
        return Deleted(deleted=True, id=provider_id)


@router.post("/email-providers/{provider_id}/test")
async def test_provider(
    provider_id: str, body: TestSend, who: WorkspaceKey, db: DB, keys: Keys, context: Context,
    config: Config, threads: Annotated[anyio.CapacityLimiter, Depends(_test_send_threads)],
) -> TestSendOutcome:  # fmt: skip
    """Send a real test message through the provider now and answer its outcome (accepted,
    the relay's reply, timing); ``timeout`` when the provider has not answered within
    GETFLUXLY_TEST_SEND_TIMEOUT seconds."""

    def load() -> domain.Draft:
        with db.read() as session:
            return domain.draft_of(domain.find(session, who, provider_id), keys)

    draft = await run_in_threadpool(load)
    limit = config.test_send_timeout
    # The send blocks on the network: a worker thread does it. On timeout the request stops
    # waiting; the thread ends at the provider's own timeout (GETFLUXLY_SMTP_TIMEOUT).
    with anyio.move_on_after(limit):
        result = await anyio.to_thread.run_sync(
            domain.send_test, draft, body.to, context, abandon_on_cancel=True, limiter=threads
        )
        return TestSendOutcome(
            accepted=True, to=body.to, reply=result.reply,
            provider_message_id=result.provider_message_id, elapsed_ms=result.elapsed_ms,
        )  # fmt: skip
    raise DomainError("timeout", f"The provider did not answer within {limit:g} s; try again")
