"""The suppression list: search, add an address by hand, take one off
(``domain.suppressions``)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Response

from getfluxly_server.domain import suppressions
from getfluxly_server.web.routing import Ctx, page


@page("/projects/{project_id}/suppressions")
def listing(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    email = ctx.query.get("email", "").strip() or None
    cursor = ctx.query.get("cursor") or None
    with ctx.db.read() as session:
        found = suppressions.page(
            session, ctx.user.principal, project_id, email=email, cursor=cursor
        )
        next_url = None
        if found.next_cursor:
            next_url = "?" + urlencode(
                {**({"email": email} if email else {}), "cursor": found.next_cursor}
            )
        return ctx.render(
            "suppressions.html", rows=found.suppressions, email=email or "", next_url=next_url
        )


@page("/projects/{project_id}/suppressions/add", method="POST", need="edit")
def add(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        done = suppressions.add(session, ctx.user.principal, project_id, ctx.text("email"))
        address = done.entry.email
    return ctx.redirect(f"/projects/{project_id}/suppressions", flash=f"Suppressed {address}")


@page("/projects/{project_id}/suppressions/remove", method="POST", need="edit")
def remove(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    address = ctx.text("email")
    with ctx.db.transaction() as session:
        suppressions.remove(session, ctx.user.principal, project_id, address)
    return ctx.redirect(f"/projects/{project_id}/suppressions", flash=f"Removed {address}")
