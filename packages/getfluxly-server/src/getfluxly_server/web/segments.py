"""Segments: the list with live member counts, the editor (the rule builder of
:mod:`.segment_rules`, or the rule as JSON), a live count of the unsaved rule
(``segment_store.preview``), a segment's members a page at a time and its recent entries and
exits (``domain.segments.history``), and deleting.

A rule's fault is shown by its JSON path, beside the builder row it concerns when the rule
came from the builder, and the draft is kept.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi import Response
from fastapi.responses import JSONResponse

from getfluxly_server.domain.clock import SYSTEM
from getfluxly_server.domain.errors import DomainError, NotFound, ValidationFailed
from getfluxly_server.domain.segments import history
from getfluxly_server.domain.segments import store as segment_store
from getfluxly_server.storage.models import Segment
from getfluxly_server.web import segment_rules
from getfluxly_server.web.routing import Ctx, page

MEMBERS_PER_PAGE = 50
MAX_MEMBERS_PER_PAGE = 500
RECENT_TRANSITIONS = 20
EXAMPLE_RULE = {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}


def _find(ctx: Ctx, session: Any, *, lock: bool = False) -> Segment:
    row = segment_store.find(session, ctx.user.principal, ctx.params["segment_id"], lock=lock)
    return ctx.in_project(row, "segment")


def _pretty(rule: Any) -> str:
    return json.dumps(rule, indent=2, ensure_ascii=False)


def _from_form(ctx: Ctx) -> tuple[Any, segment_rules.Builder]:
    """The rule the form describes (builder or JSON, as the form says) and the builder's
    rows with their JSON paths."""
    builder = segment_rules.from_form(ctx.form)
    if ctx.form.get("source") == "json":
        try:
            return json.loads(ctx.form.get("rule_json", "")), builder
        except ValueError as exc:
            raise ValidationFailed(f"rule: not valid JSON ({exc})", field="rule") from None
    return segment_rules.to_rule(builder), builder


def _editor(
    ctx: Ctx, row: Segment | None, *, error: DomainError | None = None, status: int = 200,
    count: int | None = None,
) -> Response:  # fmt: skip
    """The editor: for a saved segment, or as the form was posted (``ctx.form``)."""
    posted = bool(ctx.form)
    builder = segment_rules.from_form(ctx.form) if posted else None
    rule_json = ctx.form.get("rule_json", "") if posted else ""
    source = ctx.form.get("source", "builder") if posted else "builder"
    error_row = None
    if posted and builder is not None:
        try:
            built = segment_rules.to_rule(builder)  # sets each row's path
            if source == "builder":
                rule_json = _pretty(built)
        except ValidationFailed:
            pass
        if error is not None and source == "builder":
            error_row = segment_rules.row_for(builder, str(error.extra.get("field", "")))
    elif row is not None:
        builder = segment_rules.from_rule(row.rule)
        rule_json = _pretty(row.rule)
        source = "builder" if builder.fits else "json"
    else:
        builder = segment_rules.Builder()
        rule_json = _pretty(EXAMPLE_RULE)
    shown = builder.with_blanks()  # the same rows, numbered as the form shows them
    error_key = next(
        (f"g{gi}c{ci}" for gi, group in enumerate(shown.groups)
         for ci, r in enumerate(group.rows) if r is error_row),
        "",
    )  # fmt: skip
    return ctx.render(
        "segment_edit.html",
        http_status=status,
        segment=row,
        name=ctx.form.get("name", "") if posted else (row.name if row else ""),
        builder=shown,
        source=source,
        rule_json=rule_json,
        kinds=segment_rules.KINDS,
        trait_ops=segment_rules.TRAIT_OPS,
        count_ops=segment_rules.COUNT_OPS,
        activities=segment_rules.ACTIVITIES,
        error=error.detail if error else "",
        error_field=str(error.extra.get("field", "")) if error else "",
        error_key=error_key,
        count=count,
    )


@page("/projects/{project_id}/segments")
def listing(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        found = segment_store.page(
            session, ctx.user.principal, project_id, cursor=ctx.query.get("cursor") or None
        )
        return ctx.render(
            "segments.html",
            segments=found.segments,
            counts=found.counts,
            next_cursor=found.next_cursor,
        )


@page("/projects/{project_id}/segments/new")
def new(ctx: Ctx) -> Response:
    ctx.project()
    return _editor(ctx, None)


@page("/projects/{project_id}/segments/new", method="POST", need="edit")
def create(ctx: Ctx) -> Response:
    project_id = ctx.project()
    try:
        rule, _ = _from_form(ctx)
        with ctx.db.transaction() as session:
            row = segment_store.create(
                session, ctx.user.principal, project_id, name=ctx.text("name"), rule=rule
            )
            segment_id = row.id
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _editor(ctx, None, error=exc, status=400)
    return ctx.redirect(
        f"/projects/{project_id}/segments/{segment_id}",
        flash="Saved: its members are being counted",
    )


@page("/projects/{project_id}/segments/preview", method="POST")
def preview(ctx: Ctx) -> Response:
    """How many profiles the unsaved rule matches now. For the page's script (``Accept:
    application/json``): ``{"count", "rule"}`` or ``{"error", "field"}``; for a plain form
    post: the editor again, with the count (or the fault) shown."""
    project_id = ctx.project()
    wants_json = "application/json" in ctx.request.headers.get("accept", "")
    segment_row: Segment | None = None
    try:
        rule, _ = _from_form(ctx)
        with ctx.db.read() as session:
            if ctx.form.get("segment_id"):
                segment_row = segment_store.find(
                    session, ctx.user.principal, ctx.form["segment_id"]
                )
                if segment_row.project_id != project_id:
                    raise NotFound("segment")
            count = segment_store.preview(
                session, ctx.user.principal, project_id, rule, SYSTEM.now()
            )
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        if wants_json:
            return JSONResponse({"error": exc.detail, "field": exc.extra.get("field")})
        return _editor(ctx, segment_row, error=exc, status=400)
    if wants_json:
        return JSONResponse({"count": count, "rule": rule})
    return _editor(ctx, segment_row, count=count)


@page("/projects/{project_id}/segments/{segment_id}")
def detail(ctx: Ctx) -> Response:
    """The segment's editor, its members (a page at a time) and its recent movement."""
    cursor = ctx.query.get("cursor") or None
    raw = ctx.query.get("limit", str(MEMBERS_PER_PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_MEMBERS_PER_PAGE:
        raise ValidationFailed(f"limit must be a whole number from 1 to {MAX_MEMBERS_PER_PAGE}")
    limit = int(raw)
    with ctx.db.read() as session:
        row = _find(ctx, session)
        members = segment_store.members(
            session, ctx.user.principal, row.id, limit=limit, cursor=cursor
        )
        moved = history.recent(session, ctx.user.principal, row.id, RECENT_TRANSITIONS)
        ids = {m.profile_id for m in members.members} | {t.profile_id for t in moved}
        emails = history.emails(session, ctx.user.principal, row.id, ids)
        count = segment_store.count(session, row)
        return ctx.render(
            "segment.html",
            segment=row,
            count=count,
            members=members.members,
            next_url=(
                f"?{urlencode({'limit': limit, 'cursor': members.next_cursor})}"
                if members.next_cursor
                else None
            ),
            transitions=moved,
            emails=emails,
        )


@page("/projects/{project_id}/segments/{segment_id}/edit")
def edit(ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        return _editor(ctx, _find(ctx, session))


@page("/projects/{project_id}/segments/{segment_id}", method="POST", need="edit")
def save(ctx: Ctx) -> Response:
    project_id = ctx.project()
    with ctx.db.read() as session:
        segment_id = _find(ctx, session).id
    try:
        rule, _ = _from_form(ctx)
        with ctx.db.transaction() as session:
            segment_store.update(
                session, ctx.user.principal, segment_id, {"name": ctx.text("name"), "rule": rule}
            )
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        with ctx.db.read() as session:
            return _editor(ctx, _find(ctx, session), error=exc, status=400)
    return ctx.redirect(f"/projects/{project_id}/segments/{segment_id}", flash="Saved")


@page("/projects/{project_id}/segments/{segment_id}/delete", method="POST", need="edit")
def delete(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _find(ctx, session, lock=True)
        segment_store.delete(session, ctx.user.principal, row.id)
    return ctx.redirect(f"/projects/{project_id}/segments", flash="Deleted")
