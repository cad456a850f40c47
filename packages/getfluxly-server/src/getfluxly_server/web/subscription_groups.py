"""Settings → Subscription groups: the groups the preference page lists and a marketing
message names as its ``subscription_group`` (``domain.tracking.preferences``, as
``/v1/projects/{id}/subscription-groups``). Adding appends a group to the page's list;
removing takes one off it (recipients' choices for it are kept, should it come back).

Tracking itself has no per-project settings (opens, clicks and the one-click unsubscribe
links live on the server's public URL, ``GETFLUXLY_PUBLIC_URL``): the page says where they
go. Editors manage groups, as they manage the marketing mail that names them.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Response

from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.tracking import preferences
from getfluxly_server.storage.models import NAME_MAX, SubscriptionGroup
from getfluxly_server.web.routing import Ctx, page

#: The longest description (as the API's body takes it).
DESCRIPTION_MAX = 1000


def _page(ctx: Ctx, *, error: DomainError | None = None, status: int = 200) -> Response:
    with ctx.db.read() as session:
        rows = preferences.groups(session, ctx.user.principal, ctx.params["project_id"])
        return ctx.render(
            "subscription_groups.html", http_status=status, groups=rows, error=error,
            values=ctx.form if error else {}, max_groups=preferences.MAX_GROUPS,
            public_url=ctx.settings.public_url.rstrip("/"),
        )  # fmt: skip


@page("/projects/{project_id}/settings/subscription-groups")
def listing(ctx: Ctx) -> Response:
    return _page(ctx)


def _definitions(rows: Sequence[SubscriptionGroup]) -> list[preferences.GroupDefinition]:
    return [preferences.GroupDefinition(g.name, g.label, g.description) for g in rows]


def _new_group(ctx: Ctx) -> preferences.GroupDefinition:
    """The form's group, its lengths checked as the API's body is (the name's shape and a
    blank label are the domain's to refuse)."""
    label, description = ctx.text("label"), ctx.text("description") or None
    if len(label) > NAME_MAX:
        raise ValidationFailed(f"label is longer than {NAME_MAX} characters", field="label")
    if description is not None and len(description) > DESCRIPTION_MAX:
        raise ValidationFailed(
            f"description is longer than {DESCRIPTION_MAX} characters", field="description"
        )
    return preferences.GroupDefinition(ctx.text("name"), label, description)


@page("/projects/{project_id}/settings/subscription-groups", method="POST", need="edit")
def add(ctx: Ctx) -> Response:
    """Append a group to the list (its name must be new)."""
    project_id = ctx.params["project_id"]
    name = ctx.text("name")
    try:
        wanted = _new_group(ctx)
        with ctx.db.transaction() as session:
            rows = _definitions(preferences.groups(session, ctx.user.principal, project_id))
            preferences.set_groups(session, ctx.user.principal, project_id, [*rows, wanted])
    except DomainError as exc:
        if exc.code != "validation_error":
            raise
        return _page(ctx, error=exc, status=400)
    return ctx.redirect(
        f"/projects/{project_id}/settings/subscription-groups", flash=f"Added the group {name}"
    )


@page("/projects/{project_id}/settings/subscription-groups/remove", method="POST", need="edit")
def remove(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    name = ctx.text("name")
    with ctx.db.transaction() as session:
        rows = _definitions(preferences.groups(session, ctx.user.principal, project_id))
        kept = [g for g in rows if g.name != name]
        if len(kept) == len(rows):
            raise NotFound("subscription group")
        preferences.set_groups(session, ctx.user.principal, project_id, kept)
    return ctx.redirect(
        f"/projects/{project_id}/settings/subscription-groups", flash=f"Removed the group {name}"
    )
