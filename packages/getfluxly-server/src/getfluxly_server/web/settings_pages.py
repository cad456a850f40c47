"""Settings → API keys (create: the key is shown this once; revoke), projects (create: the
project's first keys are shown this once) (``domain.tenancy``) and users (the workspace's,
with their roles; ``domain.users``). Admins change keys and projects; every role sees the
lists (never a key's value: only its visible start)."""

from __future__ import annotations

from fastapi import Response

from getfluxly_server.domain import tenancy, users
from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.web.routing import Ctx, page

KINDS: tuple[tenancy.KeyKind, ...] = ("secret", "publishable", "workspace")


def _keys_page(
    ctx: Ctx, *, issued: list[tuple[str, str]] | None = None, status: int = 200
) -> Response:
    with ctx.db.read() as session:
        who = ctx.user.principal
        keys = tenancy.keys(session, who.workspace_id)
        names = {p.id: p.name for p in tenancy.projects(session, who)}
        return ctx.render(
            "keys.html", http_status=status, keys=keys, project_names=names, kinds=KINDS,
            issued=issued or [],
        )  # fmt: skip


@page("/settings/keys")
def keys(ctx: Ctx) -> Response:
    return _keys_page(ctx)


@page("/settings/keys", method="POST", need="admin")
def create_key(ctx: Ctx) -> Response:
    """A new key, shown on the answer page only (it is stored as a hash)."""
    kind = next((k for k in KINDS if k == ctx.text("kind")), None)
    if kind is None:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", field="kind")
    project_id = ctx.text("project_id") or None
    if kind == "workspace":
        project_id = None
    elif project_id is None:
        raise ValidationFailed("Choose the project a secret or publishable key is for")
    with ctx.db.transaction() as session:
        if project_id is not None:
            tenancy.project_of(session, ctx.user.principal, project_id)
        issued = tenancy.issue_key_in(
            session,
            ctx.user.workspace_id,
            project_id,
            kind,
            ctx.text("name"),
        )
        plaintext = issued.plaintext
    return _keys_page(ctx, issued=[(kind, plaintext)], status=201)


@page("/settings/keys/{key_id}/revoke", method="POST", need="admin")
def revoke_key(ctx: Ctx) -> Response:
    with ctx.db.transaction() as session:
        key = tenancy.revoke_key(session, ctx.user.principal, ctx.params["key_id"])
        hint = key.hint
    return ctx.redirect("/settings/keys", flash=f"Revoked {hint}…")


@page("/settings/projects")
def projects(ctx: Ctx) -> Response:
    return ctx.render("projects.html", issued=[], created=None)


@page("/settings/projects", method="POST", need="admin")
def create_project(ctx: Ctx) -> Response:
    with ctx.db.transaction() as session:
        made = tenancy.create_project(session, ctx.user.workspace_id, ctx.text("name"))
        created = (made.project.id, made.project.name)
        issued = [
            ("secret", made.secret_key.plaintext),
            ("publishable", made.publishable_key.plaintext),
        ]
    return ctx.render("projects.html", http_status=201, issued=issued, created=created)


@page("/settings/users")
def people(ctx: Ctx) -> Response:
    """Who can sign in to this workspace, with their roles (made with ``getfluxly users
    create``)."""
    with ctx.db.read() as session:
        rows = [
            (u.email, u.role, u.created_at, u.last_sign_in_at)
            for u in users.users_of(session, ctx.user.workspace_id)
        ]
    return ctx.render("users.html", rows=rows)
