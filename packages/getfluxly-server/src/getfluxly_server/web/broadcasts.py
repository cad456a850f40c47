"""Broadcasts: the list, the new-broadcast form (a template, a segment, now or at a UTC
time, a rate), the page of one with its progress (``broadcasts.counts``: of the audience,
how many are sent, failed, suppressed, skipped, pending, cancelled) and the actions its
status allows (start, pause, resume, cancel), all through ``domain.broadcasts``."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import Response

from getfluxly_server.domain import broadcasts, template_store
from getfluxly_server.domain.broadcasts.service import MAX_RATE_PER_MINUTE
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.segments import store as segment_store
from getfluxly_server.storage.models import Broadcast, BroadcastStatus
from getfluxly_server.web.routing import Ctx, page

PICK_LIMIT = 200
#: The actions each status shows (the domain refuses the others with invalid_transition).
ACTIONS: dict[str, tuple[str, ...]] = {
    BroadcastStatus.DRAFT: ("start", "cancel"),
    BroadcastStatus.SCHEDULED: ("cancel",),
    BroadcastStatus.SENDING: ("pause", "cancel"),
    BroadcastStatus.PAUSED: ("resume", "cancel"),
}
#: Counts in the order the progress shows them: (name, label).
COUNTS = (
    ("sent", "Sent"), ("pending", "Pending"), ("failed", "Failed"), ("suppressed", "Suppressed"),
    ("skipped", "Skipped"), ("cancelled", "Cancelled"),
)  # fmt: skip


def _find(ctx: Ctx, session: Any, *, lock: bool = False) -> Broadcast:
    row = broadcasts.find(session, ctx.user.principal, ctx.params["broadcast_id"], lock=lock)
    return ctx.in_project(row, "broadcast")


def _send_at(ctx: Ctx) -> datetime | None:
    """``send_at`` from the form: none for "now", else the UTC time given."""
    if ctx.text("when", "now") != "later":
        return None
    raw = ctx.text("send_at")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            "send_at: give a date and time (UTC), e.g. 2026-03-01T09:00", field="send_at"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rate(ctx: Ctx) -> int | None:
    raw = ctx.text("rate_per_minute")
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_RATE_PER_MINUTE:
        raise ValidationFailed(
            f"rate_per_minute: give a whole number from 1 to {MAX_RATE_PER_MINUTE}, or leave "
            "it empty for as fast as the provider allows",
            field="rate_per_minute",
        )
    return int(raw)


def _form(ctx: Ctx, *, error: DomainError | None = None, status: int = 200) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        principal = ctx.user.principal
        found = template_store.page(session, principal, project_id, limit=PICK_LIMIT)
        segments = segment_store.page(session, principal, project_id, limit=PICK_LIMIT)
        return ctx.render(
            "broadcast_new.html",
            http_status=status,
            templates=found.templates,
            segments=segments.segments,
            counts=segments.counts,
            values={k: ctx.form.get(k, "") for k in (
                "name", "template_id", "segment_id", "send_at", "rate_per_minute")}
            | {"when": ctx.form.get("when", "now")},
            error=error.detail if error else "",
            error_field=str(error.extra.get("field", "")) if error else "",
            max_rate=MAX_RATE_PER_MINUTE,
        )  # fmt: skip


@page("/projects/{project_id}/broadcasts")
def listing(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        found = broadcasts.page(
            session, ctx.user.principal, project_id, cursor=ctx.query.get("cursor") or None
        )
        return ctx.render(
            "broadcasts.html",
            broadcasts=found.broadcasts,
            counts=broadcasts.counts(session, found.broadcasts),
            next_cursor=found.next_cursor,
        )


@page("/projects/{project_id}/broadcasts/new")
def new(ctx: Ctx) -> Response:
    ctx.project()
    return _form(ctx)


@page("/projects/{project_id}/broadcasts/new", method="POST", need="edit")
def create(ctx: Ctx) -> Response:
    """Save the broadcast; with ``then=start`` start it at once (``scheduled`` when its
    send_at is in the future), else keep it a draft."""
    project_id = ctx.project()
    try:
        send_at, rate = _send_at(ctx), _rate(ctx)
        with ctx.db.transaction() as session:
            row = broadcasts.create(
                session, ctx.user.principal, project_id, name=ctx.text("name"),
                template_id=ctx.text("template_id"), segment_id=ctx.text("segment_id"),
                send_at=send_at, rate_per_minute=rate,
            )  # fmt: skip
            if ctx.text("then") == "start":
                broadcasts.start(session, ctx.user.principal, row.id)
            broadcast_id, status = row.id, row.status
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _form(ctx, error=exc, status=400)
    return ctx.redirect(
        f"/projects/{project_id}/broadcasts/{broadcast_id}", flash=f"Saved ({status})"
    )


@page("/projects/{project_id}/broadcasts/{broadcast_id}")
def detail(ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        row = _find(ctx, session)
        counts = broadcasts.counts(session, [row])[row.id]
        names = {t.id: t.name for t in template_store.page(
            session, ctx.user.principal, row.project_id, limit=PICK_LIMIT).templates}  # fmt: skip
        segment_name = None
        with suppress(NotFound):  # deleted since: its id is shown
            segment_name = segment_store.find(session, ctx.user.principal, row.segment_id).name
        done = counts.targeted - counts.pending
        return ctx.render(
            "broadcast.html",
            broadcast=row,
            counts=counts,
            rows=[(name, label, getattr(counts, name)) for name, label in COUNTS],
            done=done,
            template_name=names.get(row.template_id, row.template_id),
            segment_name=segment_name or row.segment_id,
            actions=ACTIONS.get(row.status, ()),
        )


def _act(ctx: Ctx, action: str) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _find(ctx, session, lock=True)
        principal = ctx.user.principal
        if action == "start":
            broadcasts.start(session, principal, row.id)
        elif action == "pause":
            broadcasts.pause(session, principal, row.id)
        elif action == "resume":
            broadcasts.resume(session, principal, row.id)
        else:
            broadcasts.cancel(session, principal, row.id, note=f"by {ctx.user.email}")
        status = row.status
    return ctx.redirect(f"/projects/{project_id}/broadcasts/{row.id}", flash=f"Now {status}")


@page("/projects/{project_id}/broadcasts/{broadcast_id}/start", method="POST", need="edit")
def start(ctx: Ctx) -> Response:
    return _act(ctx, "start")


@page("/projects/{project_id}/broadcasts/{broadcast_id}/pause", method="POST", need="edit")
def pause(ctx: Ctx) -> Response:
    return _act(ctx, "pause")


@page("/projects/{project_id}/broadcasts/{broadcast_id}/resume", method="POST", need="edit")
def resume(ctx: Ctx) -> Response:
    return _act(ctx, "resume")


@page("/projects/{project_id}/broadcasts/{broadcast_id}/cancel", method="POST", need="edit")
def cancel(ctx: Ctx) -> Response:
    return _act(ctx, "cancel")
