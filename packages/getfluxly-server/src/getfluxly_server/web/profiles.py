"""Profiles: search by id or trait; one profile with its traits, identities, latest events
and the messages sent to it (``domain.profiles``, ``domain.messages``)."""

from __future__ import annotations

import json

from fastapi import Response

from getfluxly_server.domain import messages, profiles
from getfluxly_server.web.routing import Ctx, page


@page("/projects/{project_id}/profiles")
def search(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    identity = ctx.query.get("identity", "").strip() or None
    trait = ctx.query.get("trait", "").strip() or None
    with ctx.db.read() as session:
        rows = profiles.search(
            session, ctx.user.principal, project_id, identity=identity, trait=trait, limit=100
        )
        found = [(p.id, p.traits, p.updated_at) for p in rows]
    return ctx.render("profiles.html", found=found, identity=identity or "", trait=trait or "")


@page("/projects/{project_id}/profiles/{profile_id}")
def profile(ctx: Ctx) -> Response:
    project_id, profile_id = ctx.params["project_id"], ctx.params["profile_id"]
    with ctx.db.read() as session:
        found = profiles.detail(session, ctx.user.principal, project_id, profile_id)
        sent = messages.page(
            session, ctx.user.principal, project_id,
            messages.Filters(profile_id=found.profile.id), limit=50,
        )  # fmt: skip
        return ctx.render(
            "profile.html",
            profile=found.profile,
            traits=json.dumps(found.profile.traits, indent=2, sort_keys=True, default=str),
            identities=found.identities,
            events=[
                (e, json.dumps(e.properties, sort_keys=True, default=str))
                for e in found.recent_events
            ],
            messages=sent.messages,
        )
