"""Automations: the list with statuses; the page of one (its steps drawn as a flow with
per-step counts, its runs, a chart of its mail over time, its kept versions, activate /
pause / delete); the definition editor (``domain.automations.manage``).

The editor holds the definition's fields as JSON, one box each (``trigger``, ``steps``,
``reentry``, ``exit_on``, ``quiet_hours``, ``frequency_cap``; an empty optional box leaves
the field out). A refusal names its JSON path (``steps[1].on_event[0].duration``) and is
shown beside the box it concerns, with the draft kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Response

from getfluxly_server.domain import message_stats, template_store
from getfluxly_server.domain.automations import history, manage
from getfluxly_server.domain.clock import SYSTEM
from getfluxly_server.domain.errors import DomainError, ValidationFailed
from getfluxly_server.domain.segments import store as segment_store
from getfluxly_server.storage.models import Automation
from getfluxly_server.web import automation_flow, charts
from getfluxly_server.web.overview import PERIODS
from getfluxly_server.web.routing import Ctx, page

#: The definition's boxes in the editor: (field, label, required).
BOXES = (
    ("trigger", "Trigger", True),
    ("steps", "Steps", True),
    ("reentry", "Re-entry (optional)", False),
    ("exit_on", "Exit on (optional)", False),
    ("quiet_hours", "Quiet hours (optional)", False),
    ("frequency_cap", "Frequency cap (optional)", False),
)
OPTIONAL = tuple(name for name, _, required in BOXES if not required)
PICK_LIMIT = 100
_TOP = re.compile(r"[a-z_]+")


def _find(ctx: Ctx, session: Any, *, lock: bool = False) -> Automation:
    row = manage.find(session, ctx.user.principal, ctx.params["automation_id"], lock=lock)
    return ctx.in_project(row, "automation")


def _names(ctx: Ctx, session: Any, project_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """The project's templates and segments by id (for pickers and the flow's words)."""
    principal = ctx.user.principal
    found = template_store.page(session, principal, project_id, limit=PICK_LIMIT)
    segments = segment_store.page(session, principal, project_id, limit=PICK_LIMIT)
    return (
        {t.id: t.name for t in found.templates},
        {s.id: s.name for s in segments.segments},
    )


def _pretty(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def _boxes(row: Automation | None, example: dict[str, Any]) -> dict[str, str]:
    source = row.definition if row is not None else example
    return {name: _pretty(source.get(name)) for name, _, _ in BOXES}


def _body(ctx: Ctx) -> dict[str, Any]:
    """The definition's fields from the form's boxes (an empty optional box: ``None``)."""
    body: dict[str, Any] = {}
    for name, _, required in BOXES:
        raw = ctx.form.get(name, "").strip()
        if not raw:
            if required:
                raise ValidationFailed(f"{name}: is required", field=name)
            body[name] = None
            continue
        try:
            body[name] = json.loads(raw)
        except ValueError as exc:
            raise ValidationFailed(f"{name}: not valid JSON ({exc})", field=name) from None
    return body


def _editor(
    ctx: Ctx, row: Automation | None, *, error: DomainError | None = None, status: int = 200
) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        templates, segments = _names(ctx, session, project_id)
    first = next(iter(templates), "tpl_...")
    example = {
        "trigger": {"event": "signed_up"},
        "steps": [
            {"id": "welcome", "type": "send_email", "template_id": first},
            {"id": "wait", "type": "delay", "duration": "P2D"},
        ],
    }
    if ctx.form:
        values = {name: ctx.form.get(name, "") for name, _, _ in BOXES}
        name = ctx.form.get("name", "")
    else:
        values = _boxes(row, example)
        name = row.name if row else ""
    field = str(error.extra.get("field", "")) if error else ""
    found = _TOP.match(field)
    return ctx.render(
        "automation_edit.html",
        http_status=status,
        automation=row,
        name=name,
        boxes=BOXES,
        values=values,
        templates=templates,
        segments=segments,
        error=error.detail if error else "",
        error_field=field,
        error_box=found[0] if found else "",
    )


@page("/projects/{project_id}/automations")
def listing(ctx: Ctx) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        found = manage.page(
            session, ctx.user.principal, project_id, cursor=ctx.query.get("cursor") or None
        )
        return ctx.render(
            "automations.html", automations=found.automations, next_cursor=found.next_cursor
        )


@page("/projects/{project_id}/automations/new")
def new(ctx: Ctx) -> Response:
    ctx.project()
    return _editor(ctx, None)


@page("/projects/{project_id}/automations/new", method="POST", need="edit")
def create(ctx: Ctx) -> Response:
    project_id = ctx.project()
    try:
        body = _body(ctx)
        with ctx.db.transaction() as session:
            row = manage.create(
                session, ctx.user.principal, project_id, {"name": ctx.text("name"), **body}
            )
            automation_id = row.id
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        return _editor(ctx, None, error=exc, status=400)
    return ctx.redirect(
        f"/projects/{project_id}/automations/{automation_id}", flash="Saved as a draft"
    )


@page("/projects/{project_id}/automations/{automation_id}")
def detail(ctx: Ctx) -> Response:
    raw = ctx.query.get("days", "30")
    if not raw.isdigit() or int(raw) not in PERIODS:
        raise ValidationFailed(f"days must be one of {', '.join(map(str, PERIODS))}")
    days = int(raw)
    project_id = ctx.params["project_id"]
    with ctx.db.read() as session:
        row = _find(ctx, session)
        stats = manage.stats(session, row)
        runs = manage.run_counts(session, row)
        versions = history.versions(session, ctx.user.principal, row.id)
        templates, segments = _names(ctx, session, project_id)
        activity = message_stats.daily(
            session, ctx.user.principal, project_id, days, automation_id=row.id
        )
        definition = row.definition
        flow = automation_flow.boxes(definition.get("steps"), stats, templates)
        return ctx.render(
            "automation.html",
            automation=row,
            trigger=automation_flow.trigger_text(definition.get("trigger", {}), segments),
            flow=flow,
            earlier=automation_flow.earlier_steps(flow, stats),
            settings=automation_flow.settings_text(definition),
            runs=runs,
            versions=[(v.version, v.created_at, _pretty(v.definition)) for v in versions],
            days=days,
            periods=PERIODS,
            activity=activity,
            series=message_stats.SERIES,
            legend=charts.legend(activity),
            chart=charts.svg(activity, f"{row.name}: mail per day, last {days} days"),
        )


@page("/projects/{project_id}/automations/{automation_id}/edit")
def edit(ctx: Ctx) -> Response:
    with ctx.db.read() as session:
        row = _find(ctx, session)
    return _editor(ctx, row)


@page("/projects/{project_id}/automations/{automation_id}", method="POST", need="edit")
def save(ctx: Ctx) -> Response:
    project_id = ctx.project()
    with ctx.db.read() as session:
        automation_id = _find(ctx, session).id
    try:
        body = _body(ctx)
        with ctx.db.transaction() as session:
            row = manage.update(
                session, ctx.user.principal, automation_id, {"name": ctx.text("name"), **body}
            )
            version = row.version
    except DomainError as exc:
        if exc.code == "not_found":
            raise
        with ctx.db.read() as session:
            row = _find(ctx, session)
        return _editor(ctx, row, error=exc, status=400)
    return ctx.redirect(
        f"/projects/{project_id}/automations/{automation_id}", flash=f"Saved (version {version})"
    )


def _action(ctx: Ctx, act: str) -> Response:
    project_id = ctx.params["project_id"]
    with ctx.db.transaction() as session:
        row = _find(ctx, session, lock=True)
        if act == "activate":
            manage.activate(session, ctx.user.principal, row.id, SYSTEM.now())
            done = "Active: its trigger starts runs"
        elif act == "pause":
            manage.pause(session, ctx.user.principal, row.id)
            done = "Paused: runs under way wait where they are"
        else:
            manage.delete(session, ctx.user.principal, row.id, SYSTEM.now())
            return ctx.redirect(f"/projects/{project_id}/automations", flash="Deleted")
    return ctx.redirect(f"/projects/{project_id}/automations/{row.id}", flash=done)


@page("/projects/{project_id}/automations/{automation_id}/activate", method="POST", need="edit")
def activate(ctx: Ctx) -> Response:
    return _action(ctx, "activate")


@page("/projects/{project_id}/automations/{automation_id}/pause", method="POST", need="edit")
def pause(ctx: Ctx) -> Response:
    return _action(ctx, "pause")


@page("/projects/{project_id}/automations/{automation_id}/delete", method="POST", need="edit")
def delete(ctx: Ctx) -> Response:
    return _action(ctx, "delete")
