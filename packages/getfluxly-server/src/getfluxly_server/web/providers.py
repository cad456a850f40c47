"""Settings → Email providers: the project's providers, Add provider (Custom SMTP field by
field as the contract lists them, and each native connector's own fields, all from the
provider registry), verification before anything is saved with each failure shown beside
the field it concerns, the test send, the default provider, removal.

The same services as ``POST /v1/projects/{id}/email-providers`` (``domain.providers``):
parse, verify (connects; no database lock held meanwhile), save. A secret is never shown
again, and a form sent back after a failure never carries it: it is typed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Response

from getfluxly_server.api.deps import build_context
from getfluxly_server.domain import providers, tenancy
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.messages import canonical_address
from getfluxly_server.web.routing import Ctx, page

#: What each verification failure is about and what to try (the contract's advice), for
#: the field it is shown under. ``None``: the kind's secret field (password, API key).
ADVICE: dict[str, tuple[str | None, str]] = {
    "connection_refused": (
        "smtp_host",
        "Nothing accepted the connection: check the host and port, or an egress firewall "
        "blocks it (many networks block 25 and 587; try 2525).",
    ),
    "auth_failed": (
        None,
        "The relay refused these credentials: check the username and password; many "
        "providers need an app password or an API token here, not your account password.",
    ),
    "starttls_not_advertised": (
        "smtp_secure",
        "The relay does not offer STARTTLS on this port: switch to ssl (usually port 465).",
    ),
    "tls_failed": (
        "smtp_secure",
        "The TLS handshake failed: the port may expect the other mode (starttls on 587, ssl "
        "on 465), or the relay's certificate is not trusted.",
    ),
    "timeout": (
        "smtp_port",
        "No answer in time: check the host and port; an egress firewall may drop the "
        "traffic (try 2525).",
    ),
    "dns_failed": ("smtp_host", "The host name does not resolve: check its spelling."),
}
COMMON_FIELDS = (
    ("display_name", "Display name", True, "How this provider is named in GetFluxly"),
    ("from_email", "From email", True, "The sender address, on a domain the provider sends for"),
    ("from_name", "From name", False, "Shown as the sender's name"),
    ("reply_to", "Reply-To", False, "Where replies go, if not the From address"),
)
LABELS = {
    "smtp_host": "SMTP host", "smtp_port": "SMTP port", "smtp_secure": "Encryption",
    "username": "Username", "password": "Password", "api_key": "API key",
    "server_token": "Server token", "access_key_id": "Access key ID",
    "secret_access_key": "Secret access key", "region": "Region", "domain": "Sending domain",
    "message_stream": "Message stream", "api_url": "API URL",
}  # fmt: skip
HELP = {
    "smtp_port": "587 for STARTTLS, 465 for SSL, 2525 where 25/587 are blocked",
    "smtp_secure": "starttls (port 587), ssl (port 465), or none for a trusted in-house relay",
}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    required: bool
    input: str  # text | email | number | password | select
    choices: tuple[str, ...] = ()
    help: str = ""


def form_fields(kind_name: str) -> list[FormField]:
    """The Add provider form of one kind: the sender's fields, then the kind's own."""
    kind = providers.KINDS[kind_name]
    fields = [
        FormField(
            name,
            label,
            required,
            "email" if "email" in name or name == "reply_to" else "text",
            help=help_,
        )
        for name, label, required, help_ in COMMON_FIELDS
    ]
    for spec in kind.fields:
        shape = "password" if spec.secret else "number" if spec.kind is int else "text"
        if spec.choices:
            shape = "select"
        fields.append(
            FormField(spec.name, LABELS.get(spec.name, spec.name.replace("_", " ").capitalize()),
                      spec.required, shape, tuple(spec.choices), HELP.get(spec.name, ""))
        )  # fmt: skip
    return fields


def _kind(ctx: Ctx) -> str:
    name = (ctx.form.get("provider") or ctx.query.get("kind") or "smtp").strip()
    if name not in providers.KINDS:
        raise ValidationFailed(
            f"provider must be one of {', '.join(providers.KINDS)}", field="provider"
        )
    return name


def _body(kind_name: str, form: dict[str, str]) -> dict[str, Any]:
    """The API body the form stands for: blank optional fields left out, numbers as numbers."""
    body: dict[str, Any] = {"provider": kind_name}
    for field in form_fields(kind_name):
        value = form.get(field.name, "")
        if field.input != "password":
            value = value.strip()
        if not value and not field.required:
            continue
        if field.input == "number" and value.isdigit():
            body[field.name] = int(value)
        else:
            body[field.name] = value
    return body


def _error_field(kind_name: str, exc: DomainError) -> str:
    """The form field a refusal is shown under ('' for the form as a whole)."""
    given = exc.extra.get("field")
    if isinstance(given, str) and given:
        return given
    advice = ADVICE.get(exc.code)
    if advice is None:
        return ""
    field, _ = advice
    if field is None:
        secrets = providers.KINDS[kind_name].secret_fields
        return secrets[0] if secrets else ""
    names = {f.name for f in form_fields(kind_name)}
    return field if field in names else ""


def _list(ctx: Ctx, *, test: dict[str, Any] | None = None, status: int = 200) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        project = tenancy.project_of(session, ctx.user.principal, project_id)
        rows = providers.providers_of(session, ctx.user.principal, project_id)
        return ctx.render(
            "providers.html",
            http_status=status,
            rows=rows,
            default_id=project.default_provider_id,
            kinds=[(k.name, k.label) for k in providers.KINDS.values()],
            test=test,
        )


@page("/projects/{project_id}/settings/providers")
def listing(ctx: Ctx) -> Response:
    return _list(ctx)


def _add_form(
    ctx: Ctx, kind_name: str, *, error: DomainError | None = None, status: int = 200,
    warnings: list[str] | None = None,
) -> Response:  # fmt: skip
    field = _error_field(kind_name, error) if error else ""
    advice = ADVICE.get(error.code, (None, ""))[1] if error else ""
    values = {
        k: v for k, v in ctx.form.items() if k not in providers.KINDS[kind_name].secret_fields
    }
    return ctx.render(
        "provider_new.html",
        http_status=status,
        kind=kind_name,
        kind_label=providers.KINDS[kind_name].label,
        kinds=[(k.name, k.label) for k in providers.KINDS.values()],
        fields=form_fields(kind_name),
        values=values,
        error=error,
        error_field=field,
        advice=advice,
        warnings=warnings or [],
    )


@page("/projects/{project_id}/settings/providers/new")
def add_form(ctx: Ctx) -> Response:
    ctx.project()
    return _add_form(ctx, _kind(ctx))


@page("/projects/{project_id}/settings/providers/new", method="POST", need="admin")
def add(ctx: Ctx) -> Response:
    """Parse, verify (the relay is asked before anything is saved), save."""
    project_id = ctx.params["project_id"]
    kind_name = _kind(ctx)
    with ctx.db.read() as session:
        providers.providers_of(session, ctx.user.principal, project_id)  # 404 before any I/O
    try:
        draft = providers.parse(_body(kind_name, ctx.form))
        warnings = providers.verify(draft, build_context(ctx.request))
    except DomainError as exc:
        return _add_form(ctx, kind_name, error=exc, status=422)
    with ctx.db.transaction() as session:
        row = providers.save_new(
            session, ctx.user.principal, project_id, draft, ctx.settings.keyring
        )
        name = row.display_name
    note = f"Added {name}: verified" + (f" ({'; '.join(warnings)})" if warnings else "")
    return ctx.redirect(f"/projects/{project_id}/settings/providers", flash=note)


def _own(ctx: Ctx, session: Any) -> Any:
    row = providers.find(session, ctx.user.principal, ctx.params["provider_id"])
    if row.project_id != ctx.params["project_id"]:
        raise NotFound("email provider")
    return row


@page("/projects/{project_id}/settings/providers/{provider_id}/test", method="POST", need="edit")
def test_send(ctx: Ctx) -> Response:
    """A real test email through the provider now; the outcome shown on the list."""
    try:
        to = canonical_address(ctx.text("to"), field="to")
    except DomainError as exc:
        return _list(
            ctx,
            test={"ok": False, "detail": exc.detail, "id": ctx.params["provider_id"]},
            status=400,
        )
    with ctx.db.read() as session:
        draft = providers.draft_of(_own(ctx, session), ctx.settings.keyring)
    try:
        result = providers.send_test(draft, to, build_context(ctx.request))
    except DomainError as exc:
        return _list(
            ctx,
            test={
                "ok": False,
                "code": exc.code,
                "detail": exc.detail,
                "id": ctx.params["provider_id"],
            },
            status=422,
        )
    return _list(
        ctx,
        test={
            "ok": True, "id": ctx.params["provider_id"], "to": to, "reply": result.reply,
            "elapsed_ms": result.elapsed_ms,
        },
    )  # fmt: skip


@page(
    "/projects/{project_id}/settings/providers/{provider_id}/default", method="POST", need="admin"
)
def make_default(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _own(ctx, session)
        providers.set_default(session, ctx.user.principal, project_id, row.id)
        name = row.display_name
    return ctx.redirect(
        f"/projects/{project_id}/settings/providers", flash=f"{name} is now the default"
    )


@page("/projects/{project_id}/settings/providers/{provider_id}/delete", method="POST", need="admin")
def delete(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _own(ctx, session)
        name = row.display_name
        providers.remove(session, ctx.user.principal, row.id)
    return ctx.redirect(f"/projects/{project_id}/settings/providers", flash=f"Removed {name}")
